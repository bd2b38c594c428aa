"""Accuracy and robustness measurements: per attack, union of attacks by cascade, per class x
attack, accuracy vs eps and vs steps, rho_adv and transfer matrices.

Robust accuracy follows DESIGN.md: a sample is robust if it is classified correctly and no attack
of the set breaks it within eps (+1e-4); misclassified clean samples count as broken.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .attacks import AttackResult, attack_info, create_attack, predict
from .attacks.base import seeded
from .attacks.pgd import PGD
from .attacks.registry import _spec_dict
from .attacks.spec import labelled_specs, spec_label
from .cache import Artifact, Cache, cached_frames, derive_key
from .inference import accuracy

TOLERANCE = 1e-4


def tensor_digest(*tensors: Tensor) -> str:
    """sha256 of tensor contents: identifies the exact samples an adversarial set was built on."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def attack(
    spec: Any,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    model_key: str | None = None,
    cache: Cache | None = None,
    target: Tensor | None = None,
    keys: Tensor | None = None,
) -> AttackResult:
    """Run one attack; with `model_key` the adversarial set is cached under (model, spec, samples, keys).
    `keys` give each sample its own random stream (see `Attack.__call__`)."""
    adversary = create_attack(spec)
    if model_key is None:
        return adversary(model, x, y, target, keys=keys)
    key = derive_key(
        "adversarial",
        model=model_key,
        spec=_spec_dict(spec),
        samples=tensor_digest(x, y),
        target=tensor_digest(target) if target is not None else None,
        keys=tensor_digest(keys) if keys is not None else None,
    )

    def build() -> Artifact:
        result = adversary(model, x, y, target, keys=keys)
        return Artifact({"x_adv": result.x_adv, "success": result.success, "norms": result.norms, "l2": result.l2}, {})

    artifact = (cache or Cache()).get_or_build(key, build, label=f"adversarials {spec_label(spec)}")
    t = artifact.tensors
    return AttackResult(
        x_adv=t["x_adv"].to(x.device),
        success=t["success"].to(x.device),
        norms=t["norms"].to(x.device),
        l2=t["l2"].to(x.device),
        norm=adversary.norm,
        eps=adversary.eps,
    )


@dataclass
class UnionResult:
    """Which samples each attack broke (False where a cascade did not need to run it) and the union."""

    clean_correct: Tensor
    broken: dict[str, Tensor] = field(default_factory=dict)

    @property
    def robust(self) -> Tensor:
        robust = self.clean_correct.clone()
        for mask in self.broken.values():
            robust &= ~mask
        return robust

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.float().mean())


def union_robustness(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    specs: Mapping[str, Any] | Sequence[Any],
    *,
    cascade: bool = True,
    batch_attacks_on_survivors: bool = False,
    model_key: str | None = None,
    cache: Cache | None = None,
) -> UnionResult:
    """Union of attacks. cascade=True runs each attack only on the survivors of the earlier ones, at a fraction of
    the cost; cascade=False runs every attack on every sample. Both give the same union: every sample draws its
    randomness from a stream keyed by its position in x, and attacks whose draws serve a whole batch (noise,
    decision-based; `Attack.per_sample` false) run on every sample in both modes.

    batch_attacks_on_survivors=True (with cascade) runs those too on the survivors only, which is what makes a
    union of decision-based attacks affordable: the union stays a sound one (every broken sample has a verified
    adversarial within eps), but their draws, and so the union, then depend on which samples survive."""
    labelled = labelled_specs(specs)
    model.eval()
    result = UnionResult(clean_correct=predict(model, x) == y)
    alive = result.clean_correct.clone()
    for label, spec in tqdm(labelled.items(), desc="attacks", leave=False):
        broken = torch.zeros_like(alive)
        survivors_only = cascade and (batch_attacks_on_survivors or create_attack(spec).per_sample)
        index = alive.nonzero().squeeze(1) if survivors_only else torch.arange(len(x), device=x.device)
        if len(index):
            outcome = attack(spec, model, x[index], y[index], model_key=model_key, cache=cache, keys=index)
            broken[index] = outcome.broken(tol=TOLERANCE)
        result.broken[label] = broken & result.clean_correct
        alive &= ~broken
    return result


@dataclass
class SuiteResult:
    """Every attack of a suite run on every sample: clean correctness and each attack's result."""

    y: Tensor
    clean: Tensor
    results: dict[str, AttackResult]

    def robust(self) -> dict[str, Tensor]:
        """Per attack, the samples that are correct and not broken within eps (+1e-4)."""
        return {label: self.clean & ~r.broken(tol=TOLERANCE) for label, r in self.results.items()}

    def table(self) -> pd.DataFrame:
        """Clean and per-attack robust accuracy (percent) with the median L2 of the adversarials that broke a
        correctly classified sample (already misclassified inputs need no perturbation and are left out)."""
        rows = [
            {
                "attack": "clean",
                "norm": "",
                "eps": np.nan,
                "accuracy": 100 * float(self.clean.float().mean()),
                "median_l2": np.nan,
            }
        ]
        for label, robust in self.robust().items():
            r = self.results[label]
            rows.append(
                {
                    "attack": label,
                    "norm": r.norm,
                    "eps": r.eps if r.eps is not None else np.nan,
                    "accuracy": 100 * float(robust.float().mean()),
                    "median_l2": float(r.l2[broken].median()) if (broken := self.clean & r.success).any() else np.nan,
                }
            )
        return pd.DataFrame(rows)


def attack_suite(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    specs: Mapping[str, Any] | Sequence[Any],
    *,
    model_key: str | None = None,
    cache: Cache | None = None,
) -> SuiteResult:
    """Run each attack on every sample (cached per attack when `model_key` is given); results are keyed by the
    mapping's keys, or by name@eps for a sequence (see `labelled_specs`). Each sample draws from the stream keyed by
    its position, as in `union_robustness`, so that a union is never above one of its own attacks."""
    labelled = labelled_specs(specs)
    model.eval()
    keys = torch.arange(len(x), device=x.device)
    results = {
        label: attack(spec, model, x, y, model_key=model_key, cache=cache, keys=keys)
        for label, spec in tqdm(labelled.items(), desc="attacks", leave=False)
    }
    return SuiteResult(y=y, clean=predict(model, x) == y, results=results)


def per_class_attack_table(y: Tensor, robust_by_attack: Mapping[str, Tensor], num_classes: int) -> pd.DataFrame:
    """Accuracy (percent) per true class (rows) x attack (columns) from per-sample robust masks
    (e.g. `SuiteResult.robust()`, or {'clean': clean_mask, **robust})."""
    table = {}
    for label, robust in robust_by_attack.items():
        table[label] = [
            100 * float(robust[y == c].float().mean()) if (y == c).any() else np.nan for c in range(num_classes)
        ]
    return pd.DataFrame(table, index=pd.Index(range(num_classes), name="class"))


def accuracy_vs_eps(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: Any,
    eps_values: Sequence[float],
    *,
    model_key: str | None = None,
    cache: Cache | None = None,
) -> pd.DataFrame:
    """Robust accuracy (percent) of one attack at each eps."""
    raw = _spec_dict(spec)
    clean = predict(model.eval(), x) == y
    rows = []
    for eps in tqdm(eps_values, desc=f"{raw['name']} vs eps", leave=False):
        outcome = attack({**raw, "eps": float(eps)}, model, x, y, model_key=model_key, cache=cache)
        rows.append(
            {
                "attack": raw["name"],
                "eps": float(eps),
                "accuracy": 100 * float((clean & ~outcome.broken(tol=TOLERANCE)).float().mean()),
            }
        )
    return pd.DataFrame(rows)


def accuracy_vs_steps(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: Any,
    steps: int,
    *,
    model_key: str | None = None,
    cache: Cache | None = None,
) -> pd.DataFrame:
    """Accuracy (percent) after 0..steps PGD iterations, from ONE run that records every iterate; with `model_key`
    the curve is cached under (model, spec, samples).

    Equal to separate runs of 1..steps iterations from the same random start because the
    step size is absolute; see `pgd`.
    """
    raw = {**_spec_dict(spec), "steps": steps}
    # only native PGD records every iterate (`run(..., record=True)`); other native attacks exist (confidence_l2)
    adversary = create_attack(raw) if attack_info(raw["name"]).backend == "native" else None
    if not isinstance(adversary, PGD):
        raise ValueError(f"accuracy_vs_steps needs a native PGD attack (pgd_linf, pgd_l2, pgd_l1), got {raw['name']!r}")

    def build() -> tuple[pd.DataFrame]:
        model.eval()
        with seeded(adversary.seed, x.device):
            correct = torch.cat(
                [
                    # record=True: `correct` holds every iterate's correctness
                    cast(Tensor, adversary.run(model, x[i : i + 256], y[i : i + 256], record=True).correct)
                    for i in range(0, len(x), 256)
                ],
                dim=1,
            )
        return (
            pd.DataFrame(
                {
                    "attack": raw["name"],
                    "steps": np.arange(steps + 1),
                    "accuracy": 100 * correct.double().mean(dim=1).cpu().numpy(),
                }
            ),
        )

    if model_key is None:
        return build()[0]
    key = derive_key("steps_curve", model=model_key, spec=raw, samples=tensor_digest(x, y))
    return cached_frames(key, build, cache=cache, label=f"accuracy vs steps {spec_label(raw)}")[0]


def rho_adv(x: Tensor, x_adv: Tensor, mask: Tensor | None = None) -> float:
    """rho_adv = mean over samples of ||x_adv - x||_2 / ||x||_2 (Adversary Critic, eq. 11), optionally over `mask`."""
    ratio = (x_adv - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-12)
    if mask is not None:
        ratio = ratio[mask]
    return float(ratio.mean()) if len(ratio) else float("nan")


def transfer_matrix(models: Mapping[str, nn.Module], x: Tensor, y: Tensor, spec: Any) -> pd.DataFrame:
    """Accuracy (percent) of each target model (columns) on adversarials crafted on each source (rows)."""
    rows = {}
    for source_name, source in tqdm(models.items(), desc="transfer", leave=False):
        x_adv = create_attack(spec)(source, x, y).x_adv
        rows[source_name] = {name: 100 * accuracy(target, x_adv, y) for name, target in models.items()}
    return pd.DataFrame(rows).T.rename_axis("source")
