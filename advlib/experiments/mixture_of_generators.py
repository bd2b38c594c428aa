"""The experiments of "Adversarial defenses via a mixture of generators" as one `Study`: cached, seeded runs and the
paper's tables as declared artifacts.

Data follow Section 4: the training split is cut into two disjoint halves, canonical images (never
attacked) and transformed images (attacked); the classifier is pretrained on the training split.
Every attack's adversarials are built once per split against that classifier and cached; a
system's transformed training pool gives each transformed image one attack drawn at random
(seeded), so training sees the attacks in equal shares without attack ids or labels. A system's per-sample
evaluation on the test adversarials is cached under a key derived from the system's, so a rerun only loads it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import torch
from scipy import stats as scipy_stats
from torch import Tensor

from ..attacks import attack_info
from ..cache import Artifact, Cache, CacheKey, Trained, cached_model
from ..data import load_dataset, to_tensors
from ..defenses.mixgen import (
    IDLE,
    ROLES,
    DefenseEvaluation,
    MixtureOfGenerators,
    evaluate_defense,
    faster_init,
    identity_init,
    train_competitive,
)
from ..evaluate import AttackResult, attack
from ..models import create_model
from ..params import MixtureOfGeneratorsParams
from ..report import Claim, paper_vs_run, proportion_gap
from ..train import train_classifier
from .base import Study, artifact

STEM = "mixture_of_generators"
SystemKind = Literal["joint", "faster", "single", "large"]
SYSTEM_KINDS = ("joint", "faster", "single", "large")


@dataclass
class Halves:
    """Disjoint canonical / transformed halves of the training split."""

    canonical: Tensor
    transformed: Tensor
    transformed_y: Tensor


def mean_and_errors(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation and standard error of repeated runs (NaN spread for a single run)."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else float("nan")
    return {
        "mean": float(array.mean()),
        "std": std,
        "se": std / np.sqrt(len(array)) if len(array) > 1 else float("nan"),
    }


def table6_reference_rows(table6: pd.DataFrame) -> pd.DataFrame:
    """Table 6 reshaped to the paper's rows: the two joint experiments, the faster mean and its spread
    (the paper's '±' equals the sample standard deviation); NaN where this run has fewer repeats."""
    indexed = table6.set_index(["kind", "experiment"])
    wanted = {
        "jointly_experiment1": ("joint", "1"),
        "jointly_experiment2": ("joint", "2"),
        "faster_mean": ("faster", "mean"),
        "faster_pm": ("faster", "std"),
    }
    rows = {
        name: indexed.loc[key] if key in indexed.index else pd.Series(np.nan, index=indexed.columns)
        for name, key in wanted.items()
    }
    return pd.DataFrame(rows).T


class MixtureStudy(Study):
    """One notebook run: the classifier, the disjoint halves, the adversarial sets and every defense system (each a
    `Trained` under a derived key), and the paper's tables and claims."""

    stem = STEM
    p: MixtureOfGeneratorsParams

    def __init__(
        self, p: MixtureOfGeneratorsParams, device: torch.device | str = "cpu", cache: Cache | None = None
    ) -> None:
        super().__init__(p, device, cache)
        self._adversarials: dict[tuple[str, str], Tensor] = {}
        self._evaluations: dict[tuple[str, tuple[str, ...], int], DefenseEvaluation] = {}

    # -- data and classifier -------------------------------------------------------------------
    @cached_property
    def halves(self) -> Halves:
        """First n_canonical images of a seeded stratified order are canonical, the next n_transformed transformed."""
        p = self.p
        total = p.n_canonical + p.n_transformed
        x, y = to_tensors(load_dataset(p.data.name, "train", n=total, seed=p.seed, download=p.data.download))
        return Halves(canonical=x[: p.n_canonical], transformed=x[p.n_canonical :], transformed_y=y[p.n_canonical :])

    @cached_property
    def evaluation_set(self) -> tuple[Tensor, Tensor]:
        """The test half: the first n_test images of a seeded stratified order of the test split."""
        p = self.p
        return to_tensors(load_dataset(p.data.name, "test", n=p.n_test, seed=p.seed, download=p.data.download))

    @cached_property
    def trained(self) -> Trained:
        """The pretrained classifier the attacks target and the defense feeds."""
        return train_classifier(self.p.classifier, self.p.data, seed=self.p.seed, device=self.device, cache=self.cache)

    @property
    def classifier(self) -> torch.nn.Module:
        return self.trained.model

    # -- attacks -------------------------------------------------------------------------------
    def adversarials(self, name: str, split: Literal["transformed", "test"]) -> Tensor:
        """The adversarials of attack `name` (a key of p.attacks) on a split, cached on disk and in memory."""
        if (name, split) not in self._adversarials:
            x, y = (
                (self.halves.transformed, self.halves.transformed_y) if split == "transformed" else self.evaluation_set
            )
            result = attack(
                self.p.attacks[name],
                self.classifier,
                x.to(self.device),
                y.to(self.device),
                model_key=self.trained.key,
                cache=self.cache,
            )
            self._adversarials[(name, split)] = result.x_adv.cpu()
        return self._adversarials[(name, split)]

    @cached_property
    def success_set(self) -> tuple[Tensor, dict[str, AttackResult]]:
        """n_success random clean training images and every attack's result on them (Table 1, Figure 2)."""
        x, y = to_tensors(
            load_dataset(
                self.p.data.name, "train", n=self.p.n_success, seed=self.p.seed + 1, download=self.p.data.download
            )
        )
        results = {
            name: attack(
                spec,
                self.classifier,
                x.to(self.device),
                y.to(self.device),
                model_key=self.trained.key,
                cache=self.cache,
            )
            for name, spec in self.p.attacks.items()
        }
        return x, results

    @property
    def attack_images(self) -> dict[str, Tensor]:
        """Figure 2: the clean success-set images and each attack's adversarials of them."""
        x, results = self.success_set
        return {"clean": x, **{name: result.x_adv.cpu() for name, result in results.items()}}

    def transformed_pool(self, names: Sequence[str], seed: int) -> Tensor:
        """Each transformed image under one attack of `names`, drawn uniformly at random with `seed`."""
        choice = torch.randint(
            len(names), (len(self.halves.transformed),), generator=torch.Generator().manual_seed(seed)
        )
        pool = torch.empty_like(self.halves.transformed)
        for index, name in enumerate(names):
            mask = choice == index
            pool[mask] = self.adversarials(name, "transformed")[mask]
        return pool

    # -- systems -------------------------------------------------------------------------------
    def system_key(self, kind: str, names: Sequence[str], seed: int) -> CacheKey:
        """The derived key of a trained system: its kind, the attacks of its pool in order, the seed, the training
        parameters, the classifier and the halves."""
        p = self.p
        return self.key(
            "mixgen",
            variant=kind,
            attacks=[(name, p.attacks[name]) for name in names],
            seed=seed,
            mixture=p.mixture,
            classifier=self.trained,
            halves={"data": p.data, "n_canonical": p.n_canonical, "n_transformed": p.n_transformed, "seed": p.seed},
        )

    def system(self, kind: SystemKind, names: Sequence[str], seed: int = 0) -> Trained[MixtureOfGenerators]:
        """A trained defense: 'joint' (one identity-initialised generator per attack), 'faster' (copies of one
        identity-initialised generator with zero_fraction of weights zeroed), 'single' (one attack, one generator)
        or 'large' (one large generator for all `names`). Both training phases checkpoint every epoch, so a killed
        build resumes; `meta['identity_mse']` holds the identity initialisation's per-epoch MSE."""
        if kind not in SYSTEM_KINDS:
            raise ValueError(f"system kind {kind!r} is not allowed; choose one of {', '.join(SYSTEM_KINDS)}")
        if kind == "single" and len(names) != 1:
            raise ValueError(f"a 'single' system takes exactly one attack, got {list(names)}")
        spec = self.p.mixture
        n_generators = 1 if kind in ("single", "large") else len(names)
        generator_name = "mixgen_large_generator" if kind == "large" else "mixgen_generator"
        torch.manual_seed(seed)
        mixture = MixtureOfGenerators(
            [create_model(generator_name) for _ in range(n_generators)], create_model("mixgen_discriminator")
        ).to(self.device)

        def build(module: MixtureOfGenerators, checkpoint_dir: Path) -> dict[str, Any]:
            pool = self.transformed_pool(names, seed).to(self.device)
            if kind == "faster":
                identity_mse = identity_init(
                    module.generators[:1],
                    pool,
                    epochs=spec.identity_epochs,
                    batch_size=spec.batch_size,
                    lr=spec.lr,
                    seed=seed,
                    checkpoint_dir=checkpoint_dir / "identity",
                )
                copies = faster_init(module.generators[0], n_generators, zero_fraction=spec.zero_fraction, seed=seed)
                for target, source in zip(module.generators, copies):
                    target.load_state_dict(source.state_dict())
            else:
                identity_mse = identity_init(
                    module.generators,
                    pool,
                    epochs=spec.identity_epochs,
                    batch_size=spec.batch_size,
                    lr=spec.lr,
                    seed=seed,
                    checkpoint_dir=checkpoint_dir / "identity",
                )
            history = train_competitive(
                module,
                self.halves.canonical.to(self.device),
                pool,
                epochs=spec.train_epochs,
                batch_size=spec.batch_size,
                lr=spec.lr,
                seed=seed,
                checkpoint_dir=checkpoint_dir / "competitive",
            )
            return {"identity_mse": identity_mse, "history": history}

        label = f"{kind} mixture ({'+'.join(names)}, seed {seed})"
        return cached_model(self.system_key(kind, names, seed), mixture, build, cache=self.cache, label=label)

    def separately_trained(self, names: Sequence[str], seed: int = 0) -> MixtureOfGenerators:
        """Table 3 'trained separately': the single-attack generators with the joint system's discriminator."""
        generators = [self.system("single", [name], seed).model.generators[0] for name in names]
        joint = self.system("joint", names, seed).model
        return MixtureOfGenerators(generators, joint.discriminator).eval()

    def evaluate(self, mixture: MixtureOfGenerators, names: Sequence[str]) -> DefenseEvaluation:
        """Classifier accuracy after the defense on the test adversarials of `names` (all pooled)."""
        y = self.evaluation_set[1].to(self.device)
        adversarials = {name: (self.adversarials(name, "test").to(self.device), y) for name in names}
        return evaluate_defense(mixture, self.classifier, adversarials)

    def evaluation(self, kind: str, names: Sequence[str], seed: int) -> DefenseEvaluation:
        """`evaluate` of the system `kind` ('separately' or a system kind) on the attacks `names`, cached under the
        keys of the systems it uses and the test half."""

        def build() -> Artifact:
            mixture = (
                self.separately_trained(names, seed)
                if kind == "separately"
                else self.system(cast(SystemKind, kind), names, seed).model  # `system` checks the kind
            )
            result = self.evaluate(mixture, names)
            fields = ("y", "attack", "winner", "correct", "correct_undefended")
            return Artifact(
                tensors={f: torch.from_numpy(getattr(result, f)) for f in fields},
                meta={
                    "attack_names": result.attack_names,
                    "num_generators": result.num_generators,
                    "num_classes": result.num_classes,
                },
            )

        systems = (
            [*(self.system_key("single", [name], seed) for name in names), self.system_key("joint", names, seed)]
            if kind == "separately"
            else [self.system_key(kind, names, seed)]
        )
        test = {"data": self.p.data, "n_test": self.p.n_test, "seed": self.p.seed}
        found = self.cache.get_or_build(
            self.key("mixgen_eval", variant=kind, systems=systems, test=test),
            build,
            label=f"evaluation of {kind} ({'+'.join(names)}, seed {seed})",
        )
        arrays: dict[str, Any] = {f: t.numpy() for f, t in found.tensors.items()}
        return DefenseEvaluation(**arrays, **found.meta)

    def _evaluate(self, kind: str, names: Sequence[str], seed: int) -> DefenseEvaluation:
        """`evaluation`, kept in memory for the tables that share it."""
        key = (kind, tuple(names), seed)
        if key not in self._evaluations:
            self._evaluations[key] = self.evaluation(kind, names, seed)
        return self._evaluations[key]

    def joint(self, size: int, seed: int | None = None, kind: str = "joint") -> DefenseEvaluation:
        """The evaluation of a joint (or faster) system on the attack set of `size` attacks."""
        return self._evaluate(kind, self.p.attack_sets[size], self.p.seed if seed is None else seed)

    def expertise_systems(self) -> dict[str, DefenseEvaluation]:
        """Figures 7-30: the joint system of every attack set and the first expertise_faster_repeats faster ones."""
        faster_seeds = [self.p.seed + r for r in range(min(self.p.expertise_faster_repeats, self.p.faster_repeats))]
        return {
            f"expertise_{kind}_{size}attacks_seed{seed}": self.joint(size, seed, kind)
            for size in sorted(self.p.attack_sets)
            for kind, seeds in (("joint", [self.p.seed]), ("faster", faster_seeds))
            for seed in seeds
        }

    def attack_legend(self) -> str:
        """What each attack abbreviation of the expertise figures stands for: the attack and its budget."""
        return "attacks: " + "; ".join(
            f"{key} = {attack_info(spec.name).summary}, eps {spec.eps:g}" for key, spec in self.p.attacks.items()
        )

    # -- artifacts -----------------------------------------------------------------------------
    @artifact(
        "table1",
        "Table 1: each attack, its eps and its success rate (%) on random clean training images.",
        pair=lambda t: t.set_index("attack")["success"],
    )
    def table1(self) -> pd.DataFrame:
        _, results = self.success_set
        return pd.DataFrame(
            [
                {
                    "attack": name,
                    "method": self.p.attacks[name].name,
                    "eps": self.p.attacks[name].eps,
                    "success": 100 * float(result.success.float().mean()),
                }
                for name, result in results.items()
            ]
        )

    @artifact(
        "table2",
        "Table 2: accuracy (%) after the defense (and undefended) of one single-generator system per attack.",
        pair=lambda t: t.set_index("attack")["defended"],
    )
    def table2(self) -> pd.DataFrame:
        rows = []
        for name in self.p.attacks:
            evaluation = self._evaluate("single", [name], self.p.seed)
            rows.append(
                {"attack": name, "defended": evaluation.accuracy(), "undefended": evaluation.accuracy_undefended()}
            )
        return pd.DataFrame(rows)

    @artifact("figures5-6", "Figures 5-6: accuracy (%) after the defense per class, single-attack systems.")
    def single_class_accuracy(self) -> pd.DataFrame:
        return pd.concat(
            {
                name: self._evaluate("single", [name], self.p.seed).class_attack_accuracy()[name]
                for name in self.p.attacks
            },
            axis=1,
        )

    @artifact(
        "table3",
        "Table 3: accuracy (%) after the defense per attack set: trained separately, jointly, faster initialisation.",
        pair=lambda t: t.rename(index={"joint": "jointly"}),
    )
    def table3(self) -> pd.DataFrame:
        table = {}
        for size, names in sorted(self.p.attack_sets.items()):
            column = {
                kind: self._evaluate(kind, names, self.p.seed).accuracy() for kind in ("separately", "joint", "faster")
            }
            column["undefended"] = self._evaluate("joint", names, self.p.seed).accuracy_undefended()
            table[str(size)] = column
        frame = pd.DataFrame(table)
        frame.index.name = "system"
        return frame

    @artifact(
        "section45",
        "Section 4.5: the large generator against the mixture on the largest attack set (accuracy %).",
        pair=lambda t: t.set_index("system")["accuracy"],
    )
    def large_vs_mixture(self) -> pd.DataFrame:
        names = self.p.attack_sets[max(self.p.attack_sets)]
        large = self._evaluate("large", names, self.p.seed)
        joint = self._evaluate("joint", names, self.p.seed)
        mixture_params = sum(
            p.numel() for g in self.system("joint", names, self.p.seed).model.generators for p in g.parameters()
        )
        large_params = sum(p.numel() for p in self.system("large", names, self.p.seed).model.generators.parameters())
        return pd.DataFrame(
            [
                {
                    "system": "large_generator",
                    "attacks": len(names),
                    "generator_weights": large_params,
                    "accuracy": large.accuracy(),
                },
                {
                    "system": "mixture_jointly",
                    "attacks": len(names),
                    "generator_weights": mixture_params,
                    "accuracy": joint.accuracy(),
                },
            ]
        )

    @artifact("generator_roles", "Figures 4, 7-30: each generator's wins, accuracy, attacks covered and role.")
    def generator_roles(self) -> pd.DataFrame:
        roles = {name: evaluation.generator_roles() for name, evaluation in self.expertise_systems().items()}
        return pd.concat(roles, names=["system", "generator"])

    @artifact(
        "table6",
        "Table 6: repeated runs (joint and faster initialisation), each experiment, mean, std and SE.",
        pair=table6_reference_rows,
    )
    def table6(self) -> pd.DataFrame:
        rows = []
        for kind, repeats in (("joint", self.p.joint_repeats), ("faster", self.p.faster_repeats)):
            per_size = {
                size: [self._evaluate(kind, names, self.p.seed + r).accuracy() for r in range(repeats)]
                for size, names in sorted(self.p.attack_sets.items())
            }
            for r in range(repeats):
                rows.append({"kind": kind, "experiment": str(r + 1), **{str(s): v[r] for s, v in per_size.items()}})
            for stat in ("mean", "std", "se"):
                rows.append(
                    {
                        "kind": kind,
                        "experiment": stat,
                        **{str(s): mean_and_errors(v)[stat] for s, v in per_size.items()},
                    }
                )
        return pd.DataFrame(rows)

    @artifact(
        "budget",
        "This run's data sizes, epochs actually run and repeats beside the paper's.",
        pair=lambda t: t["run"],
        floatfmt=0,
    )
    def budget(self) -> pd.DataFrame:
        """This run's data and training budget beside the paper's (params/references 'budget'): the epochs are those
        actually run, read from the training histories (classifier; identity init and training of the largest
        joint system), so a claim's reason can say how far the run is from the paper's budget."""
        joint = self.system("joint", self.p.attack_sets[max(self.p.attack_sets)], self.p.seed)
        run = {
            "n_canonical": len(self.halves.canonical),
            "n_transformed": len(self.halves.transformed),
            "n_test": len(self.evaluation_set[0]),
            "classifier_epochs": len(self.trained.history),
            "identity_epochs": len(joint.meta["identity_mse"]),
            "train_epochs": len(joint.history),
            "joint_repeats": self.p.joint_repeats,
            "faster_repeats": self.p.faster_repeats,
        }
        return paper_vs_run(self.stem, "budget", run)

    def claims(self) -> list[Claim]:
        return claims()


# -- claims --------------------------------------------------------------------------------------------------------
# A claim about accuracies gets a verdict only where the 95% interval of the compared quantity decides it (test
# images are finite); otherwise it is not measured at this profile and its reason gives the interval. Intervals add
# one success and one failure to each accuracy (Agresti-Caffo, as report.proportion_gap) and treat the compared
# accuracies as independent samples (they are measured on the same test images, so this overstates the noise a little).
# Spreads of repeated runs are compared by their variance ratio against the 5% critical F of the repeats. The role
# claims count the roles of DefenseEvaluation.generator_roles and take the counts as measured (no noise model).

Tables = Mapping[str, Any]
Z95 = 1.96
ABOUT_EQUAL = 10.0  # points: "similar" / "qualitatively similar" in the paper, made explicit
CHANCE = 10.0  # percent: a random classifier on the ten MNIST classes
HIGH_ACCURACY = 90.0  # percent: Table 2's "above 90%"
HARD_ATTACKS = ("AUN", "AGN")
_SYSTEM = re.compile(r"^expertise_(?P<kind>\w+?)_(?P<size>\d+)attacks_seed(?P<seed>\d+)$")


def interval(terms: Sequence[tuple[float, float, int]]) -> tuple[float, float]:
    """The value (points) of sum_i c_i * accuracy_i and its 95% half-width; terms are (c_i, accuracy % , images)."""
    value, variance = 0.0, 0.0
    for coefficient, accuracy, n in terms:
        if n < 1:
            raise ValueError(f"a compared accuracy needs >= 1 image, got n={n}")
        p = (accuracy / 100 * n + 1) / (n + 2)
        value += coefficient * accuracy
        variance += coefficient**2 * p * (1 - p) / (n + 2)
    return value, Z95 * math.sqrt(variance) * 100


def above(terms: Sequence[tuple[float, float, int]], threshold: float = 0.0) -> bool | None:
    """True if the interval of the combination lies above `threshold`, False if below, None if it straddles it."""
    value, half = interval(terms)
    return True if value - half > threshold else False if value + half < threshold else None


def within(terms: Sequence[tuple[float, float, int]], margin: float) -> bool | None:
    """True if the whole interval lies within +-margin, False if it lies wholly outside, None otherwise."""
    value, half = interval(terms)
    return True if abs(value) + half <= margin else False if abs(value) - half > margin else None


def every(verdicts: Iterable[bool | None]) -> bool | None:
    """All decided and true -> True; any decided false -> False; else None (not measured)."""
    verdicts = list(verdicts)
    return False if any(v is False for v in verdicts) else True if all(v is True for v in verdicts) else None


def _n_test(t: Tables) -> int:
    return int(t["budget"].loc["n_test", "run"])


def budget_note(t: Tables) -> str:
    """This run's training budget against the paper's, from the cited 'budget' table."""
    b = t["budget"]
    row = lambda key: f"{b.loc[key, 'run']:.0f} (paper {b.loc[key, 'paper']:.0f})"
    return (
        f"budget: {row('train_epochs')} training and {row('identity_epochs')} identity epochs on "
        f"{row('n_transformed')} transformed images, classifier {row('classifier_epochs')} epochs, "
        f"{row('n_test')} test images per attack"
    )


def _sizes(table3: pd.DataFrame) -> list[str]:
    return sorted(table3.columns, key=int)


def _table3_terms(t: Tables, a: str, b: str, size: str) -> list[tuple[float, float, int]]:
    n = int(size) * _n_test(t)
    return [(1.0, float(t["table3"].loc[a, size]), n), (-1.0, float(t["table3"].loc[b, size]), n)]


def _gaps(t: Tables, a: str, b: str, decide) -> str:
    """Per attack set, the gap a - b with its interval, for the sets where `decide` is not True."""
    parts = []
    for size in _sizes(t["table3"]):
        if decide(_table3_terms(t, a, b, size)) is not True:
            n = int(size) * _n_test(t)
            parts.append(
                f"{size} attacks: "
                + proportion_gap(float(t["table3"].loc[a, size]), float(t["table3"].loc[b, size]), n)
            )
    return "; ".join(parts)


def _roles(t: Tables) -> pd.DataFrame:
    """The generator_roles table with kind, size and seed of each system as columns."""
    roles = t["generator_roles"].reset_index()
    parsed = roles["system"].str.extract(_SYSTEM)
    if parsed.isna().any().any():
        raise ValueError(
            f"generator_roles systems must be named like 'expertise_joint_9attacks_seed0'; got "
            f"{sorted(set(roles['system'][parsed.isna().any(axis=1)]))}"
        )
    return roles.assign(kind=parsed["kind"], size=parsed["size"].astype(int), seed=parsed["seed"].astype(int))


def _role_counts(t: Tables, size: int) -> pd.Series:
    """How many generators of the `size`-attack systems hold each role, the idle ones (no win) last and apart."""
    roles = _roles(t)
    chosen = roles[roles["size"] == size]
    if chosen.empty:
        raise KeyError(f"no {size}-attack system in generator_roles")
    return chosen["role"].astype(str).value_counts().reindex([*ROLES, IDLE], fill_value=0)


def _non_generalist_share(t: Tables, size: int) -> float:
    """Share of specialists and marginalists among the generators of `size`-attack systems that won at least one
    sample: idle generators are left out, so a system that collapsed onto one generator does not count as specialised."""
    roles = _roles(t)
    active = roles[(roles["size"] == size) & (roles["wins"] > 0)]
    if active.empty:
        raise KeyError(f"no {size}-attack generator won a sample")
    return float((active["role"].astype(str) != "generalist").mean())


def _collapse(t: Tables) -> str:
    """How far the systems collapsed onto few generators: per size, generators that won nothing and the mean top share."""
    roles = _roles(t)
    parts = []
    for size, group in roles.groupby("size"):
        idle = int((group["wins"] == 0).sum())
        top = group.groupby("system")["win_share"].max().mean()
        parts.append(
            f"{size} attacks: {idle} of {len(group)} generators won no sample, the top generator won "
            f"{100 * top:.0f}% on average"
        )
    return "; ".join(parts)


def _hard_pairs(t: Tables) -> list[tuple[str, str]]:
    accuracy = t["table2"].set_index("attack")["defended"]
    missing = [h for h in HARD_ATTACKS if h not in accuracy.index]
    if missing:
        raise KeyError(f"Table 2 lacks {', '.join(missing)}")
    return [(other, hard) for hard in HARD_ATTACKS for other in accuracy.index if other not in HARD_ATTACKS]


def _pair_terms(t: Tables, a: str, b: str) -> list[tuple[float, float, int]]:
    accuracy = t["table2"].set_index("attack")["defended"]
    return [(1.0, float(accuracy[a]), _n_test(t)), (-1.0, float(accuracy[b]), _n_test(t))]


def _spread(t: Tables) -> pd.Series:
    rows = t["table6"].set_index(["kind", "experiment"])
    return rows.loc[("faster", "std")].astype(float).sort_index(key=lambda index: index.astype(int))


def _spread_critical(t: Tables) -> float:
    """The 5% one-sided critical F for the variance ratio of two spreads over the run's faster repeats."""
    repeats = int(t["budget"].loc["faster_repeats", "run"])
    return float(scipy_stats.f.ppf(0.95, repeats - 1, repeats - 1))


def spread_verdict(t: Tables) -> bool | None:
    """Each larger attack set's spread below the smallest set's by a variance ratio beyond the 5% critical F: True;
    one above it by such a ratio: False; otherwise None (fewer than 2 repeats, or ratios inside the F noise)."""
    if int(t["budget"].loc["faster_repeats", "run"]) < 2:
        return None
    spread, critical = _spread(t), _spread_critical(t)
    ratios = (spread.iloc[0] / spread.iloc[1:]) ** 2
    return every(True if r > critical else False if 1 / r > critical else None for r in ratios)


def _spread_reason(t: Tables) -> str:
    """The variance ratios against the smallest attack set, with the critical F of the repeats' degrees of freedom."""
    repeats = int(t["budget"].loc["faster_repeats", "run"])
    paper = int(t["budget"].loc["faster_repeats", "paper"])
    if repeats < 2:
        return f"{repeats} faster-initialisation repeat (paper {paper}): a spread needs at least 2"
    spread, critical = _spread(t), _spread_critical(t)
    ratios = ", ".join(
        f"{spread.index[0]} vs {size}: F = {(spread.iloc[0] / std) ** 2:.2f}" for size, std in spread.iloc[1:].items()
    )
    return (
        f"std {', '.join(f'{s} attacks {v:.1f}' for s, v in spread.items())} over {repeats} repeats (paper {paper}); "
        f"variance ratios {ratios}; with {repeats - 1} degrees of freedom each a ratio must exceed {critical:.2f} "
        f"(or fall below {1 / critical:.2f}) to be resolved at 5%"
    )


def claims() -> list[Claim]:  # noqa: C901 -- a table of claim declarations: mccabe adds up its small per-claim closures
    """The paper's qualitative claims on the tables the notebook saves: table2, table3, section45,
    generator_roles, table6 and budget (the run's sizes and epochs beside the paper's)."""

    def hardest(t: Tables) -> bool | None:
        return every(above(_pair_terms(t, other, hard)) for other, hard in _hard_pairs(t))

    def hardest_reason(t: Tables) -> str:
        failing = [(o, h) for o, h in _hard_pairs(t) if above(_pair_terms(t, o, h)) is not True]
        accuracy = t["table2"].set_index("attack")["defended"]
        worst = min(failing, key=lambda pair: accuracy[pair[0]] - accuracy[pair[1]])
        return (
            f"{len(failing)} of {len(_hard_pairs(t))} (attack, hard attack) pairs not resolved in the claimed order; "
            f"worst {worst[0]} {accuracy[worst[0]]:.1f}% vs {worst[1]} {accuracy[worst[1]]:.1f}%: "
            + proportion_gap(accuracy[worst[0]], accuracy[worst[1]], _n_test(t))
            + "; "
            + budget_note(t)
        )

    def high(t: Tables) -> dict[str, bool | None]:
        accuracy = t["table2"].set_index("attack")["defended"]
        return {name: above([(1.0, float(a), _n_test(t))], HIGH_ACCURACY) for name, a in accuracy.items()}

    def most_high(t: Tables) -> bool | None:
        verdicts = list(high(t).values())
        yes, no = verdicts.count(True), verdicts.count(False)
        return True if yes > len(verdicts) / 2 else False if len(verdicts) - no <= len(verdicts) / 2 else None

    def most_high_reason(t: Tables) -> str:
        verdicts = list(high(t).values())
        accuracy = t["table2"]["defended"]
        return (
            f"{verdicts.count(True)} of {len(verdicts)} attacks resolved above {HIGH_ACCURACY:.0f}%, "
            f"{verdicts.count(False)} resolved below (95% intervals on {_n_test(t)} images); median "
            f"{accuracy.median():.1f}%, {HIGH_ACCURACY - accuracy.median():.1f} points short; " + budget_note(t)
        )

    def chance_terms(t: Tables, size: str) -> list[tuple[float, float, int]]:
        return [(1.0, float(t["table3"].loc["joint", size]), int(size) * _n_test(t))]

    def chance_reason(t: Tables) -> str:
        parts = []
        for size in _sizes(t["table3"]):
            value, half = interval(chance_terms(t, size))
            if above(chance_terms(t, size), CHANCE) is not True:
                parts.append(f"{size} attacks: {value:.1f}% +- {half:.1f} on {int(size) * _n_test(t)} images")
        return "not resolved above chance (10%): " + "; ".join(parts) + "; " + budget_note(t)

    def drop_terms(t: Tables) -> list[tuple[float, float, int]]:
        sizes = _sizes(t["table3"])
        if len(sizes) != 3:
            raise KeyError(f"three attack sets needed, got {sizes}")
        joint = t["table3"].loc["joint"]
        return [(c, float(joint[s]), int(s) * _n_test(t)) for c, s in zip((1.0, -2.0, 1.0), sizes)]

    def drop_reason(t: Tables) -> str:
        sizes = _sizes(t["table3"])
        joint = t["table3"].loc["joint"]
        value, half = interval(drop_terms(t))
        return (
            f"drop {sizes[0]}->{sizes[1]} {joint[sizes[0]] - joint[sizes[1]]:+.1f} points, {sizes[1]}->{sizes[2]} "
            f"{joint[sizes[1]] - joint[sizes[2]]:+.1f}: difference {value:+.1f} +- {half:.1f} points "
            f"({'inside the noise' if abs(value) <= half else 'outside the noise'}); " + budget_note(t)
        )

    def harder(t: Tables) -> bool | None:
        sizes = _sizes(t["table3"])
        if len(sizes) < 2:
            raise KeyError("at least two attack sets needed")
        joint = t["table3"].loc["joint"]
        return every(
            above(
                [
                    (1.0, float(joint[sizes[0]]), int(sizes[0]) * _n_test(t)),
                    (-1.0, float(joint[s]), int(s) * _n_test(t)),
                ]
            )
            for s in sizes[1:]
        )

    def harder_reason(t: Tables) -> str:
        sizes = _sizes(t["table3"])
        joint = t["table3"].loc["joint"]
        return (
            "; ".join(
                f"{sizes[0]} vs {s} attacks: "
                + proportion_gap(
                    float(joint[sizes[0]]), float(joint[s]), int(sizes[0]) * _n_test(t), int(s) * _n_test(t)
                )
                for s in sizes[1:]
            )
            + "; "
            + budget_note(t)
        )

    def large_terms(t: Tables) -> list[tuple[float, float, int]]:
        rows = t["section45"].set_index("system")
        n = int(rows.loc["large_generator", "attacks"]) * _n_test(t)
        return [
            (1.0, float(rows.loc["large_generator", "accuracy"]), n),
            (-1.0, float(rows.loc["mixture_jointly", "accuracy"]), n),
        ]

    def large_reason(t: Tables) -> str:
        (_, large, n), (_, mixture, _) = large_terms(t)
        return f"margin {ABOUT_EQUAL:.0f} points; " + proportion_gap(large, mixture, n) + "; " + budget_note(t)

    def sizes_of_roles(t: Tables) -> tuple[int, int]:
        sizes = sorted(_roles(t)["size"].unique())
        if len(sizes) < 2:
            raise KeyError("expertise systems of at least two attack-set sizes needed")
        return int(sizes[0]), int(sizes[-1])

    def role_counts_text(t: Tables, size: int) -> str:
        counts = _role_counts(t, size)
        return ", ".join(f"{n} {role}s" for role, n in counts.drop(IDLE).items()) + f" ({counts[IDLE]} idle)"

    table3_text = lambda t, a, b: "; ".join(
        f"{s}: {t['table3'].loc[a, s]:.1f}% vs {t['table3'].loc[b, s]:.1f}%" for s in _sizes(t["table3"])
    )
    return [
        Claim(
            "hardest_attacks",
            "AUN and AGN are the hardest attacks to defend against (Table 2).",
            ("table2", "budget"),
            hardest,
            lambda t: (
                "lowest two: "
                + ", ".join(
                    f"{k} {v:.1f}%" for k, v in t["table2"].set_index("attack")["defended"].nsmallest(2).items()
                )
            ),
            hardest_reason,
        ),
        Claim(
            "single_attack_high",
            "For most attacks the accuracy after the defense is above 90% (Table 2).",
            ("table2", "budget"),
            most_high,
            lambda t: (
                f"{int((t['table2']['defended'] > HIGH_ACCURACY).sum())} of {len(t['table2'])} attacks above "
                f"{HIGH_ACCURACY:.0f}%; median {t['table2']['defended'].median():.1f}%"
            ),
            most_high_reason,
        ),
        Claim(
            "above_chance",
            "After the defense the classifier is meaningfully more accurate than a random classifier "
            "(10%) on every attack set, trained jointly (Table 3).",
            ("table3", "budget"),
            lambda t: every(above(chance_terms(t, s), CHANCE) for s in _sizes(t["table3"])),
            lambda t: "; ".join(f"{s}: {t['table3'].loc['joint', s]:.1f}%" for s in _sizes(t["table3"])),
            chance_reason,
        ),
        Claim(
            "separate_beats_joint",
            "Generators trained separately consistently outperform the jointly trained system (Table 3).",
            ("table3", "budget"),
            lambda t: every(above(_table3_terms(t, "separately", "joint", s)) for s in _sizes(t["table3"])),
            lambda t: table3_text(t, "separately", "joint"),
            lambda t: _gaps(t, "separately", "joint", above) + "; " + budget_note(t),
        ),
        Claim(
            "faster_about_joint",
            f"Faster initialisation gives results qualitatively similar to joint training "
            f"(within {ABOUT_EQUAL:.0f} points on every attack set, Table 3).",
            ("table3", "budget"),
            lambda t: every(within(_table3_terms(t, "faster", "joint", s), ABOUT_EQUAL) for s in _sizes(t["table3"])),
            lambda t: table3_text(t, "faster", "joint"),
            lambda t: (
                f"margin {ABOUT_EQUAL:.0f} points; "
                + _gaps(t, "faster", "joint", lambda terms: within(terms, ABOUT_EQUAL))
                + "; "
                + budget_note(t)
            ),
        ),
        Claim(
            "more_attacks_harder",
            "The jointly trained system's accuracy drops when the number of attacks grows from 3 to 5 and 9 (Table 3).",
            ("table3", "budget"),
            harder,
            lambda t: " -> ".join(f"{t['table3'].loc['joint', s]:.1f}" for s in _sizes(t["table3"])),
            harder_reason,
        ),
        Claim(
            "drop_flattens",
            "Going from 5 to 9 attacks costs the jointly trained system less accuracy than going "
            "from 3 to 5 (Table 3).",
            ("table3", "budget"),
            lambda t: above(drop_terms(t)),
            lambda t: (
                "drops "
                + ", ".join(
                    f"{a}->{b}: {t['table3'].loc['joint', a] - t['table3'].loc['joint', b]:+.1f}"
                    for a, b in zip(_sizes(t["table3"]), _sizes(t["table3"])[1:])
                )
            ),
            drop_reason,
        ),
        Claim(
            "large_about_mixture",
            f"One large generator reaches about the accuracy of the 9-generator mixture "
            f"(within {ABOUT_EQUAL:.0f} points, Section 4.5).",
            ("section45", "budget"),
            lambda t: within(large_terms(t), ABOUT_EQUAL),
            lambda t: f"large {large_terms(t)[0][1]:.1f}% vs mixture {large_terms(t)[1][1]:.1f}%",
            large_reason,
        ),
        Claim(
            "generalists_most_common",
            "Generalists are the most common generators of the 9-attack systems (Section 4.6, Figure 4; counted among "
            "the generators that win samples, idle ones reported apart).",
            ("generator_roles",),
            lambda t: bool(
                (lambda c: c["generalist"] > c.drop(["generalist", IDLE]).max())(_role_counts(t, sizes_of_roles(t)[1]))
            ),
            lambda t: f"{sizes_of_roles(t)[1]} attacks: " + role_counts_text(t, sizes_of_roles(t)[1]),
            lambda t: (
                f"{sizes_of_roles(t)[1]} attacks: " + role_counts_text(t, sizes_of_roles(t)[1]) + "; " + _collapse(t)
            ),
        ),
        Claim(
            "specialisation_grows",
            "Specialisation grows with the number of generators: more of the 9-attack "
            "systems' active generators than of the 3-attack ones are specialists or marginalists (Section 4.6, "
            "Figures 7-30).",
            ("generator_roles",),
            lambda t: _non_generalist_share(t, sizes_of_roles(t)[1]) > _non_generalist_share(t, sizes_of_roles(t)[0]),
            lambda t: (
                "non-generalist share of generators that won "
                + " vs ".join(f"{_non_generalist_share(t, s):.2f} ({s} attacks)" for s in sizes_of_roles(t))
            ),
            lambda t: (
                "; ".join(f"{s} attacks: {role_counts_text(t, s)}" for s in sizes_of_roles(t)) + "; " + _collapse(t)
            ),
        ),
        Claim(
            "spread_shrinks",
            "The spread of repeated runs shrinks with more attacks and generators: the standard "
            "deviation of the faster-initialisation runs is smaller for 5 and 9 attacks than for 3 (Table 6).",
            ("table6", "budget"),
            spread_verdict,
            lambda t: "std " + ", ".join(f"{s}: {v:.1f}" for s, v in _spread(t).items()),
            _spread_reason,
        ),
    ]
