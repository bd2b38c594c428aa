"""The experiments of "Adversarial defenses via a mixture of generators" as cached, seeded runs.

Data follow Section 4: the training split is cut into two disjoint halves, canonical images (never
attacked) and transformed images (attacked); the classifier is pretrained on the training split.
Every attack's adversarials are built once per split against that classifier and cached; a
system's transformed training pool gives each transformed image one attack drawn at random
(seeded), so training sees the attacks in equal shares without attack ids or labels. A system's per-sample
evaluation on the test adversarials is cached under the system's key, so a rerun only loads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..cache import Artifact, Cache, cached_model
from ..data import load_dataset, to_tensors
from ..defenses.mixgen import (DefenseEvaluation, MixtureOfGenerators, evaluate_defense, faster_init, identity_init,
                               train_competitive)
from ..evaluate import attack
from ..models import create_model
from ..params import MixtureOfGeneratorsParams
from ..train import TrainedModel, train_classifier

SystemKind = Literal["joint", "faster", "single", "large"]
SYSTEM_KINDS = ("joint", "faster", "single", "large")


@dataclass
class Halves:
    """Disjoint canonical / transformed halves of the training split and the test images."""

    canonical: Tensor
    transformed: Tensor
    transformed_y: Tensor
    test: Tensor
    test_y: Tensor


def split_halves(p: MixtureOfGeneratorsParams) -> Halves:
    """First n_canonical images of a seeded stratified order are canonical, the next n_transformed transformed."""
    total = p.n_canonical + p.n_transformed
    x, y = to_tensors(load_dataset(p.data.name, "train", n=total, seed=p.seed, download=p.data.download))
    tx, ty = to_tensors(load_dataset(p.data.name, "test", n=p.n_test, seed=p.seed, download=p.data.download))
    return Halves(canonical=x[:p.n_canonical], transformed=x[p.n_canonical:], transformed_y=y[p.n_canonical:],
                  test=tx, test_y=ty)


class MixtureStudy:
    """One notebook run: the classifier, the adversarial sets and every defense system, each cached."""

    def __init__(self, p: MixtureOfGeneratorsParams, device: torch.device | str = "cpu", cache: Cache | None = None):
        self.p, self.device, self.cache = p, torch.device(device), cache or Cache()
        self.halves = split_halves(p)
        self.trained: TrainedModel = train_classifier(p.classifier, p.data, seed=p.seed, device=self.device, cache=self.cache)
        self.classifier = self.trained.model
        self._adversarials: dict[tuple[str, str], Tensor] = {}

    # -- attacks ---------------------------------------------------------------------------
    def adversarials(self, name: str, split: Literal["transformed", "test"]) -> Tensor:
        """The adversarials of attack `name` (a key of p.attacks) on a split, cached on disk and in memory."""
        if (name, split) not in self._adversarials:
            x, y = ((self.halves.transformed, self.halves.transformed_y) if split == "transformed"
                    else (self.halves.test, self.halves.test_y))
            result = attack(self.p.attacks[name], self.classifier, x.to(self.device), y.to(self.device),
                            model_key=self.trained.key, cache=self.cache)
            self._adversarials[(name, split)] = result.x_adv.cpu()
        return self._adversarials[(name, split)]

    def table1(self) -> tuple[pd.DataFrame, dict[str, Tensor]]:
        """Attack, eps and success rate on n_success random clean training images; plus each attack's adversarials."""
        x, y = to_tensors(load_dataset(self.p.data.name, "train", n=self.p.n_success, seed=self.p.seed + 1,
                                       download=self.p.data.download))
        rows, images = [], {}
        for name, spec in self.p.attacks.items():
            result = attack(spec, self.classifier, x.to(self.device), y.to(self.device), model_key=self.trained.key,
                            cache=self.cache)
            rows.append({"attack": name, "method": spec.name, "eps": spec.eps, "success": 100 * float(result.success.float().mean())})
            images[name] = result.x_adv.cpu()
        return pd.DataFrame(rows), {"clean": x, **images}

    def transformed_pool(self, names: Sequence[str], seed: int) -> Tensor:
        """Each transformed image under one attack of `names`, drawn uniformly at random with `seed`."""
        choice = torch.randint(len(names), (len(self.halves.transformed),), generator=torch.Generator().manual_seed(seed))
        pool = torch.empty_like(self.halves.transformed)
        for index, name in enumerate(names):
            mask = choice == index
            pool[mask] = self.adversarials(name, "transformed")[mask]
        return pool

    # -- systems ---------------------------------------------------------------------------
    def system(self, kind: SystemKind, names: Sequence[str], seed: int = 0) -> tuple[MixtureOfGenerators, dict[str, Any]]:
        """A trained defense: 'joint' (one identity-initialised generator per attack), 'faster' (copies of one
        identity-initialised generator with zero_fraction of weights zeroed), 'single' (one attack, one generator)
        or 'large' (one large generator for all `names`)."""
        if kind not in SYSTEM_KINDS:
            raise ValueError(f"system kind {kind!r} is not allowed; choose one of {', '.join(SYSTEM_KINDS)}")
        if kind == "single" and len(names) != 1:
            raise ValueError(f"a 'single' system takes exactly one attack, got {list(names)}")
        spec = self.p.mixture
        n_generators = 1 if kind in ("single", "large") else len(names)
        generator_name = "mixgen_large_generator" if kind == "large" else "mixgen_generator"
        torch.manual_seed(seed)
        mixture = MixtureOfGenerators([create_model(generator_name) for _ in range(n_generators)],
                                      create_model("mixgen_discriminator")).to(self.device)
        key = self.system_key(kind, names, seed)

        def build(module: nn.Module, checkpoint_dir) -> dict[str, Any]:
            pool = self.transformed_pool(names, seed).to(self.device)
            if kind == "faster":
                identity_mse = identity_init(module.generators[:1], pool, epochs=spec.identity_epochs,
                                             batch_size=spec.batch_size, lr=spec.lr, seed=seed)
                copies = faster_init(module.generators[0], n_generators, zero_fraction=spec.zero_fraction, seed=seed)
                for target, source in zip(module.generators, copies):
                    target.load_state_dict(source.state_dict())
            else:
                identity_mse = identity_init(module.generators, pool, epochs=spec.identity_epochs,
                                             batch_size=spec.batch_size, lr=spec.lr, seed=seed)
            trained = train_competitive(module, self.halves.canonical.to(self.device), pool, epochs=spec.train_epochs,
                                        batch_size=spec.batch_size, lr=spec.lr, seed=seed)
            return {"identity_mse": identity_mse, "history": trained["history"]}

        label = f"{kind} mixture ({'+'.join(names)}, seed {seed})"
        mixture, meta = cached_model("mixgen", key, mixture, build, cache=self.cache, label=label)
        return mixture.eval(), meta

    def system_key(self, kind: str, names: Sequence[str], seed: int) -> dict[str, Any]:
        """What determines a trained system of `kind` (its cache key); 'separately' names the systems it combines."""
        return {"kind": kind, "attacks": {n: self.p.attacks[n].model_dump(mode="json") for n in names}, "seed": seed,
                "mixture": self.p.mixture.model_dump(mode="json"), "classifier": self.trained.key,
                "halves": [self.p.data.name, self.p.n_canonical, self.p.n_transformed, self.p.seed]}

    def separately_trained(self, names: Sequence[str], seed: int = 0) -> MixtureOfGenerators:
        """Table 3 'trained separately': the single-attack generators with the joint system's discriminator."""
        generators = [self.system("single", [name], seed)[0].generators[0] for name in names]
        joint, _ = self.system("joint", names, seed)
        return MixtureOfGenerators(generators, joint.discriminator).eval()

    def evaluate(self, mixture: MixtureOfGenerators, names: Sequence[str]) -> DefenseEvaluation:
        """Classifier accuracy after the defense on the test adversarials of `names` (all pooled)."""
        adversarials = {name: (self.adversarials(name, "test").to(self.device), self.halves.test_y.to(self.device))
                        for name in names}
        return evaluate_defense(mixture, self.classifier, adversarials)

    def evaluation(self, kind: str, names: Sequence[str], seed: int) -> DefenseEvaluation:
        """`evaluate` of the system `kind` ('separately' or a system kind) on the attacks `names`, cached under the
        system's key and the test images."""
        def build() -> Artifact:
            mixture = self.separately_trained(names, seed) if kind == "separately" else self.system(kind, names, seed)[0]
            result = self.evaluate(mixture, names)
            fields = ("y", "attack", "winner", "correct", "correct_undefended")
            return Artifact(tensors={f: torch.from_numpy(getattr(result, f)) for f in fields},
                            meta={"attack_names": result.attack_names, "num_generators": result.num_generators,
                                  "num_classes": result.num_classes})

        key = {**self.system_key(kind, names, seed), "test": [self.p.data.name, self.p.n_test, self.p.seed]}
        found = self.cache.get_or_build("mixgen_eval", key, build, label=f"evaluation of {kind} ({'+'.join(names)}, seed {seed})")
        return DefenseEvaluation(**{f: t.numpy() for f, t in found.tensors.items()}, **found.meta)


def mean_and_errors(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation and standard error of repeated runs (NaN spread for a single run)."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else float("nan")
    return {"mean": float(array.mean()), "std": std, "se": std / np.sqrt(len(array)) if len(array) > 1 else float("nan")}


class MixtureTables:
    """The paper's tables from a study: each method trains (or loads) what it needs and returns a DataFrame."""

    def __init__(self, study: MixtureStudy):
        self.study, self.p = study, study.p
        self.evaluations: dict[tuple[str, tuple[str, ...], int], DefenseEvaluation] = {}

    def _evaluate(self, kind: str, names: Sequence[str], seed: int) -> DefenseEvaluation:
        key = (kind, tuple(names), seed)
        if key not in self.evaluations:
            self.evaluations[key] = self.study.evaluation(kind, names, seed)
        return self.evaluations[key]

    def table2(self) -> pd.DataFrame:
        """Single attack / single generator: accuracy after defense (and undefended) per attack."""
        rows = []
        for name in self.p.attacks:
            evaluation = self._evaluate("single", [name], self.p.seed)
            rows.append({"attack": name, "defended": evaluation.accuracy(),
                         "undefended": evaluation.accuracy_undefended()})
        return pd.DataFrame(rows)

    def single_class_accuracy(self) -> pd.DataFrame:
        """Figures 5-6: accuracy per class (rows) for each single-attack system (columns)."""
        return pd.concat({name: self._evaluate("single", [name], self.p.seed).class_attack_accuracy()[name]
                          for name in self.p.attacks}, axis=1)

    def table3(self) -> pd.DataFrame:
        """Accuracy after defense for each attack set: trained separately, jointly, faster initialisation."""
        table = {}
        for size, names in sorted(self.p.attack_sets.items()):
            column = {kind: self._evaluate(kind, names, self.p.seed).accuracy() for kind in ("separately", "joint", "faster")}
            column["undefended"] = self._evaluate("joint", names, self.p.seed).accuracy_undefended()
            table[str(size)] = column
        frame = pd.DataFrame(table)
        frame.index.name = "system"
        return frame

    def large_vs_mixture(self) -> pd.DataFrame:
        """Section 4.5: the large generator against the mixture, on the largest attack set."""
        names = self.p.attack_sets[max(self.p.attack_sets)]
        large = self._evaluate("large", names, self.p.seed)
        joint = self._evaluate("joint", names, self.p.seed)
        mixture_params = sum(p.numel() for g in self.study.system("joint", names, self.p.seed)[0].generators
                             for p in g.parameters())
        large_params = sum(p.numel() for p in self.study.system("large", names, self.p.seed)[0].generators.parameters())
        return pd.DataFrame([{"system": "large_generator", "generator_weights": large_params, "accuracy": large.accuracy()},
                             {"system": "mixture_jointly", "generator_weights": mixture_params, "accuracy": joint.accuracy()}])

    def table6(self) -> pd.DataFrame:
        """Repeated runs (seeds p.seed + r): joint and faster initialisation, each experiment, mean, std and SE."""
        rows = []
        for kind, repeats in (("joint", self.p.joint_repeats), ("faster", self.p.faster_repeats)):
            per_size = {size: [self._evaluate(kind, names, self.p.seed + r).accuracy() for r in range(repeats)]
                        for size, names in sorted(self.p.attack_sets.items())}
            for r in range(repeats):
                rows.append({"kind": kind, "experiment": str(r + 1), **{str(s): v[r] for s, v in per_size.items()}})
            for stat in ("mean", "std", "se"):
                rows.append({"kind": kind, "experiment": stat,
                             **{str(s): mean_and_errors(v)[stat] for s, v in per_size.items()}})
        return pd.DataFrame(rows)

    def joint(self, size: int, seed: int | None = None, kind: str = "joint") -> DefenseEvaluation:
        """The evaluation of a joint (or faster) system on the attack set of `size` attacks."""
        return self._evaluate(kind, self.p.attack_sets[size], self.p.seed if seed is None else seed)

    def expertise_systems(self) -> dict[str, DefenseEvaluation]:
        """Figures 7-30: the joint system of every attack set and the first expertise_faster_repeats faster ones."""
        faster_seeds = [self.p.seed + r for r in range(min(self.p.expertise_faster_repeats, self.p.faster_repeats))]
        return {f"expertise_{kind}_{size}attacks_seed{seed}": self.joint(size, seed, kind)
                for size in sorted(self.p.attack_sets)
                for kind, seeds in (("joint", [self.p.seed]), ("faster", faster_seeds)) for seed in seeds}

    @staticmethod
    def table6_reference_rows(table6: pd.DataFrame) -> pd.DataFrame:
        """Table 6 reshaped to the paper's rows: the two joint experiments, the faster mean and its spread
        (the paper's '±' equals the sample standard deviation); NaN where this run has fewer repeats."""
        indexed = table6.set_index(["kind", "experiment"])
        wanted = {"jointly_experiment1": ("joint", "1"), "jointly_experiment2": ("joint", "2"),
                  "faster_mean": ("faster", "mean"), "faster_pm": ("faster", "std")}
        rows = {name: indexed.loc[key] if key in indexed.index else pd.Series(np.nan, index=indexed.columns)
                for name, key in wanted.items()}
        return pd.DataFrame(rows).T
