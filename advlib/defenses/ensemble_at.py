"""Strength in Numbers (Grefenstette et al. 2018): ensembles adversarially trained as one model.

Algorithm 1: at every step, IFGSM-N attacks the whole ensemble (the mean of its members' softmax) from a
Gaussian-noise start, and every member is updated on CE(clean) + rho * CE(adversarial) of that mean. The
ensemble is `advlib.models.Ensemble` (probability averaging; "remove softmax" = logit averaging); training is
`advlib.train.fit` with the ensemble as the model, so this module only names the systems and the evaluation.
Native code: no library trains ensembles adversarially as a single model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..attacks import create_attack
from ..attacks.base import seeded
from ..inference import accuracy
from ..models import Ensemble
from ..params import SIN_SYSTEMS

Builder = Callable[[], nn.Module]


@dataclass(frozen=True)
class SystemSpec:
    """One compared model (Figure 1 of the paper): how many members, wide or not, adversarially trained or not.

    `separate` = members trained as independent single models and ensembled only at test time (Separate2Adv).
    """

    name: str
    members: int
    wide: bool = False
    adversarial: bool = False
    separate: bool = False


SYSTEMS: dict[str, SystemSpec] = {
    s.name: s
    for s in (
        SystemSpec("Baseline", 1),
        SystemSpec("Ensemble2", 2),
        SystemSpec("Ensemble4", 4),
        SystemSpec("SingleAdv", 1, adversarial=True),
        SystemSpec("DoubleAdv", 1, wide=True, adversarial=True),
        SystemSpec("Ensemble2Adv", 2, adversarial=True),
        SystemSpec("Ensemble4Adv", 4, adversarial=True),
        SystemSpec("Separate2Adv", 2, adversarial=True, separate=True),
    )
}


if tuple(SYSTEMS) != SIN_SYSTEMS:  # the names profiles may use (params) and the recipes here must agree
    raise ImportError(f"defenses.ensemble_at.SYSTEMS {tuple(SYSTEMS)} and params.SIN_SYSTEMS {SIN_SYSTEMS} disagree")


def system_spec(name: str) -> SystemSpec:
    """The SystemSpec of a model name of the paper; unknown names list the allowed ones."""
    if name not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; allowed: {', '.join(SYSTEMS)}")
    return SYSTEMS[name]


def build_ensemble(builder: Builder, members: int, seed: int, mode: str = "prob") -> Ensemble:
    """`members` copies of the architecture, each initialised differently (seed, seed + 1, ...), averaged."""
    if members < 1:
        raise ValueError(f"an ensemble needs members >= 1; got members={members}")
    nets = []
    for i in range(members):
        torch.manual_seed(seed * 1000 + i)
        nets.append(builder())
    return Ensemble(nets, mode=mode)


def with_mode(ensemble: Ensemble, mode: str) -> Ensemble:
    """The same members (shared parameters) averaged in another mode ('logit' = the paper's "remove softmax")."""
    return Ensemble(list(ensemble.members), mode=mode)


class MeanMemberMargin(nn.Module):
    """Appendix A.2's transfer target for the margin-loss PGD, bound to the labels `y` of one batch: two scores per
    image, [mean_m max_{i!=y} z_mi, mean_m z_my], whose margin at label 1 is the mean of the members' own CW margins.

    A mean of member log-softmaxes is no such target: each member's logsumexp is the same for every class, so its
    margin is exactly the margin of the logit average (the "remove softmax" attack)."""

    def __init__(self, members: Sequence[nn.Module], y: Tensor) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.y = y

    def forward(self, x: Tensor) -> Tensor:
        y = self.y[: len(x)]  # a prefix too: `Attack` checks the model on the batch's first image
        if len(y) != len(x):
            raise ValueError(f"MeanMemberMargin is bound to {len(self.y)} labels; got a batch of {len(x)} images")
        z = torch.stack([m(x) for m in self.members])  # (members, N, classes)
        true = z.gather(2, y.view(1, -1, 1).expand(len(z), -1, 1)).squeeze(2)
        others = z.masked_fill(nn.functional.one_hot(y, z.shape[2]).bool(), float("-inf")).amax(dim=2)
        return torch.stack([others.mean(dim=0), true.mean(dim=0)], dim=1)


def member_margin_attack(
    members: Sequence[nn.Module], spec: Mapping[str, Any], x: Tensor, y: Tensor, batch_size: int = 256
) -> Tensor:
    """Adversarials of PGD (`spec`, margin loss) on the mean of the members' margins (Appendix A.2's transfer attack),
    batch by batch with the random stream `Attack.__call__` would draw, so its starts match the other targets'."""
    options = dict(spec.get("options", {}))
    if options.get("loss", "margin") != "margin":
        raise ValueError(f"the mean-member-margin attack needs loss 'margin'; got loss={options['loss']!r}")
    adversary = create_attack({**spec, "options": {**options, "loss": "margin"}})
    if adversary.targeted:
        raise ValueError("the mean-member-margin attack is untargeted; drop targeted from the spec")
    chunks = []
    with seeded(adversary.seed, x.device):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            target = MeanMemberMargin(members, yb).eval()
            chunks.append(adversary.perturb(target, xb, torch.ones_like(yb)))  # label 1 = the true class's score
    return torch.cat(chunks)


def robust_accuracy(model: nn.Module, spec: Any, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    """Accuracy (percent) of `model` on the adversarials of attack `spec` (every sample counts)."""
    adversarial = create_attack(spec)(model, x, y, batch_size=batch_size).x_adv
    return 100 * accuracy(model, adversarial, y)


def evaluation_scores(
    model: nn.Module, x: Tensor, y: Tensor, attacks: Mapping[str, Any], blackbox: tuple[Tensor, Tensor] | None = None
) -> dict[str, float]:
    """Section 4.3's evaluation job: clean accuracy, each white-box attack's accuracy and the black-box accuracy on
    a precomputed adversarial set (percent)."""
    model.eval()
    scores = {"clean": 100 * accuracy(model, x, y)}
    for name, spec in attacks.items():
        scores[name] = robust_accuracy(model, spec, x, y)
    if blackbox is not None:
        scores["blackbox"] = 100 * accuracy(model, *blackbox)
    return scores


def remove_outliers(series: Sequence[float], window: int = 50, n_std: float = 3.0) -> np.ndarray:
    """Section 4.3's outlier removal: a centred rolling median of `window`; points whose absolute difference to
    it exceeds the mean difference plus n_std standard deviations are replaced by the smoothed value."""
    values = pd.Series(np.asarray(series, dtype=float))
    smooth = values.rolling(window, center=True, min_periods=1).median()
    difference = (values - smooth).abs()
    outlier = difference > difference.mean() + n_std * difference.std(ddof=0)
    return values.where(~outlier, smooth).to_numpy()


def average_seeds(
    curves: Sequence[tuple[Sequence[float], Sequence[float]]], points: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Section 4.3's seed averaging: each (steps, values) curve, outliers removed, is interpolated onto the same
    `points` steps (over the range all curves cover) and the curves are averaged."""
    if not curves:
        raise ValueError("average_seeds needs at least one (steps, values) curve")
    start = max(float(np.min(s)) for s, _ in curves)
    stop = min(float(np.max(s)) for s, _ in curves)
    grid = np.linspace(start, stop, points)
    stacked = [np.interp(grid, np.asarray(s, dtype=float), remove_outliers(v)) for s, v in curves]
    return grid, np.mean(stacked, axis=0)


def strongest_attack(
    model: nn.Module, x: Tensor, y: Tensor, spec: Mapping[str, Any], *, start_steps: int, max_steps: int
) -> tuple[float, int, list[tuple[int, float]]]:
    """Appendix A: PGD on the CW margin loss, doubling the steps until the accuracy stops falling (or max_steps).
    Returns the lowest accuracy (percent), the steps that reached it and every (steps, accuracy) tried."""
    if start_steps < 1 or max_steps < start_steps:
        raise ValueError(f"need 1 <= start_steps <= max_steps; got start_steps={start_steps}, max_steps={max_steps}")
    tried: list[tuple[int, float]] = []
    steps = start_steps
    while steps <= max_steps:
        accuracy = robust_accuracy(
            model, {**spec, "steps": steps, "options": {**spec.get("options", {}), "loss": "margin"}}, x, y
        )
        if tried and accuracy >= tried[-1][1]:
            tried.append((steps, accuracy))
            break
        tried.append((steps, accuracy))
        steps *= 2
    best_steps, best = min(tried, key=lambda item: (item[1], item[0]))
    return best, best_steps, tried


def member_gradients_reached(ensemble: Ensemble, x: Tensor, y: Tensor, spec: Any) -> list[bool]:
    """Per member: does the loss on the training attack's adversarials (crafted against the whole ensemble)
    give it a non-zero parameter gradient? Algorithm 1 needs every member to learn from the joint attack."""
    x_adv = create_attack(spec)(ensemble.eval(), x, y).x_adv
    ensemble.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(ensemble(x_adv), y).backward()
    return [any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in m.parameters()) for m in ensemble.members]
