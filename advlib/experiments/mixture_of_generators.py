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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..attacks import attack_info
from ..cache import Artifact, Cache, CacheKey, Trained, cached_model
from ..claims import Claim, Comparison, Runs, pooled_spread
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
from ..report import paper_vs_run
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
    # the training budget: the classifier's, the identity initialisation's and the competitive training's epochs and
    # the mixture's training images (the test images and the repeats are the evaluation, which the ladder keeps)
    budget = ("classifier.epochs", "mixture.identity_epochs", "mixture.train_epochs", "n_canonical", "n_transformed")
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
    def budget_table(self) -> pd.DataFrame:
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
# Each claim is a row of `CLAIMS`: its sentence, the tables it cites and a measure returning `Comparison`s, from which
# `claims.evaluate_claims` derives the verdict (holds / fails / undecided), the interval and the reason.
# Accuracies are counts of test images: a single-attack system is scored on the n_test test images, a system of a
# k-attack set on the k * n_test adversarials of its set. The multi-attack systems are compared over their training
# runs (Table 6: the paper trains the joint system twice and the faster-initialisation one 10 times), because one run
# of a mixture moves by more than its images' interval (investigations/cpu_variance.md): each side is the mean of its
# runs, and the interval adds the runs' spread to the images' sampling error (`Comparison.runs`). The spread is pooled
# over the joint and faster repeats of each attack set (2 + 10 runs, 10 degrees of freedom at the paper's counts; two
# joint runs alone give one) and assumed for every mixture system of that set, including the ones trained once
# (separately trained generators, the large generator); the claim's note states it. Table 2's single-attack systems
# have one run each and no repeats to borrow from: their comparisons count images only, unpaired Agresti-Caffo (the
# tables keep no per-image outcomes; outcomes on the same images are positively correlated, so the unpaired interval
# is the conservative one).
# Spreads of repeated runs are compared by the F interval on their variance ratio. The role claims count generators:
# each generator that won at least one sample is one draw of a role (idle generators have no role and are reported
# apart), the draws taken as independent.

Tables = Mapping[str, Any]
ABOUT_EQUAL = 10.0  # points: "similar" / "qualitatively similar" in the paper, made explicit
CHANCE = 10.0  # percent: a random classifier on the ten MNIST classes
HIGH_ACCURACY = 90.0  # percent: Table 2's "above 90%"
HARD_ATTACKS = ("AUN", "AGN")
_SYSTEM = re.compile(r"^expertise_(?P<kind>\w+?)_(?P<size>\d+)attacks_seed(?P<seed>\d+)$")


# -- what the claims read ------------------------------------------------------------------------------------------
def _n_test(t: Tables) -> int:
    return int(t["budget"].loc["n_test", "run"])


def _pooled(t: Tables, size: str) -> int:
    """The test adversarials a system of the `size`-attack set is scored on: every attack's n_test images."""
    return int(size) * _n_test(t)


def _defended(t: Tables) -> pd.Series:
    """Table 2's accuracy after the defense, by attack."""
    return t["table2"].set_index("attack")["defended"].astype(float)


def _sizes(table: pd.DataFrame) -> list[str]:
    """The attack-set sizes (columns named by a number), smallest first."""
    return sorted((str(c) for c in table.columns if str(c).isdigit()), key=int)


def _table6_runs(t: Tables, kind: str) -> dict[str, list[float]]:
    """Table 6's runs of `kind` (joint or faster), one accuracy per run, by attack-set size."""
    table6 = t["table6"]
    runs = table6[(table6["kind"] == kind) & table6["experiment"].astype(str).str.isdigit()]
    if runs.empty:
        raise KeyError(f"no {kind} run in Table 6")
    return {s: runs[s].astype(float).tolist() for s in _sizes(table6)}


def _spread(t: Tables, size: str) -> tuple[float, float]:
    """The run-to-run variance of the `size`-attack set, pooled over its joint and faster repeats (Table 6)."""
    return pooled_spread([_table6_runs(t, kind)[size] for kind in ("joint", "faster")])


def _runs(t: Tables, name: str, values: Sequence[float], size: str) -> Runs:
    """A system of the `size`-attack set over its runs, with the set's spread pooled over its joint and faster runs."""
    return Runs(name, tuple(float(v) for v in values), _pooled(t, size), _spread(t, size))


def _repeated(t: Tables, kind: str) -> dict[str, Runs]:
    """Table 6's joint or faster system over its runs, by attack-set size."""
    return {s: _runs(t, f"{kind}, {s} attacks", v, s) for s, v in _table6_runs(t, kind).items()}


def budget_note(t: Tables) -> str:
    """This run's training budget against the paper's, from the cited 'budget' table."""
    b = t["budget"]
    row = lambda key: f"{b.loc[key, 'run']:.0f} (paper {b.loc[key, 'paper']:.0f})"
    return (
        f"budget: {row('train_epochs')} training and {row('identity_epochs')} identity epochs on "
        f"{row('n_transformed')} transformed images, classifier {row('classifier_epochs')} epochs, "
        f"{row('n_test')} test images per attack"
    )


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


def _role_sizes(t: Tables) -> tuple[int, int]:
    """The smallest and largest attack-set sizes of the expertise systems."""
    sizes = sorted(_roles(t)["size"].unique())
    if len(sizes) < 2:
        raise KeyError("expertise systems of at least two attack-set sizes needed")
    return int(sizes[0]), int(sizes[-1])


def _role_counts(t: Tables, size: int) -> pd.Series:
    """How many generators of the `size`-attack systems hold each role, the idle ones (no win) last and apart."""
    roles = _roles(t)
    chosen = roles[roles["size"] == size]
    if chosen.empty:
        raise KeyError(f"no {size}-attack system in generator_roles")
    return chosen["role"].astype(str).value_counts().reindex([*ROLES, IDLE], fill_value=0)


def _active(t: Tables, size: int) -> pd.Series:
    """The role counts of the `size`-attack systems' generators that won at least one sample."""
    counts = _role_counts(t, size).drop(IDLE)
    if counts.sum() == 0:
        raise KeyError(f"no {size}-attack generator won a sample")
    return counts


def _role_text(t: Tables, size: int) -> str:
    counts = _role_counts(t, size)
    roles = ", ".join(f"{n} {role}{'s' if n != 1 else ''}" for role, n in counts.drop(IDLE).items())
    return f"{size} attacks: {roles} ({counts[IDLE]} idle)"


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


def _faster_runs(t: Tables) -> dict[str, list[float]]:
    """Table 6's faster-initialisation runs (one accuracy per repeat), by attack-set size."""
    runs = _table6_runs(t, "faster")
    count = len(next(iter(runs.values())))
    if count < 2:
        raise KeyError(f"{count} faster-initialisation run(s) in Table 6: a spread needs at least 2")
    return runs


# -- measures: one per claim ---------------------------------------------------------------------------------------
def hardest_attacks(t: Tables) -> list[Comparison]:
    """Every other attack's accuracy after the defense above each hard attack's (14 pairs at the paper's 9 attacks).
    The single systems are scored on the same test images: unpaired interval, the conservative one."""
    accuracy, n = _defended(t), _n_test(t)
    missing = [h for h in HARD_ATTACKS if h not in accuracy.index]
    if missing:
        raise KeyError(f"Table 2 lacks {', '.join(missing)}")
    others = [a for a in accuracy.index if a not in HARD_ATTACKS]
    return [Comparison.accuracies((a, accuracy[a]), (h, accuracy[h]), ">", n) for h in HARD_ATTACKS for a in others]


def single_attack_high(t: Tables) -> list[Comparison]:
    """Each attack's accuracy after the defense against 90% (Wilson on its n_test images); the claim takes most."""
    n = _n_test(t)
    return [Comparison.against((a, v), HIGH_ACCURACY, ">", n) for a, v in _defended(t).items()]


def above_chance(t: Tables) -> list[Comparison]:
    """The jointly trained system of each attack set, over its runs, against chance."""
    return [Comparison.runs(joint, CHANCE, ">") for joint in _repeated(t, "joint").values()]


def separate_beats_joint(t: Tables) -> list[Comparison]:
    """Table 3's separately trained system (one run, the set's pooled spread) against the joint runs, per set."""
    table3 = t["table3"]
    joint = _repeated(t, "joint")
    return [
        Comparison.runs(_runs(t, f"separately, {s} attacks", [table3.loc["separately", s]], s), joint[s], ">")
        for s in _sizes(table3)
    ]


def faster_about_joint(t: Tables) -> list[Comparison]:
    """The faster-initialisation runs against the joint runs, per attack set."""
    faster, joint = _repeated(t, "faster"), _repeated(t, "joint")
    return [Comparison.runs(faster[s], joint[s], "within", ABOUT_EQUAL) for s in joint]


def more_attacks_harder(t: Tables) -> list[Comparison]:
    """The joint system of the smallest attack set above those of the larger sets, over their runs."""
    joint = _repeated(t, "joint")
    if len(joint) < 2:
        raise KeyError("at least two attack sets needed")
    first, *rest = joint
    return [Comparison.runs(joint[first], joint[s], ">") for s in rest]


def drop_flattens(t: Tables) -> Comparison:
    """The joint system's drop from the first to the second attack set above its drop from the second to the third:
    the contrast a1 - 2 a2 + a3 of the three sets' mean accuracies over their runs."""
    joint = _repeated(t, "joint")
    if len(joint) != 3:
        raise KeyError(f"three attack sets needed, got {list(joint)}")
    (a, first), (b, second), (c, third) = joint.items()
    return Comparison.runs(
        (f"drop {a}->{b}", {first: 1.0, second: -1.0}), (f"drop {b}->{c}", {second: 1.0, third: -1.0}), ">"
    )


def large_about_mixture(t: Tables) -> Comparison:
    """The large generator (one run, the set's pooled spread) against the joint mixture's runs on the same set."""
    rows = t["section45"].set_index("system")
    size = str(int(rows.loc["large_generator", "attacks"]))
    large = _runs(t, "large generator", [rows.loc["large_generator", "accuracy"]], size)
    mixture = replace(_repeated(t, "joint")[size], name="mixture")
    return Comparison.runs(large, mixture, "within", threshold=ABOUT_EQUAL)


def generalists_most_common(t: Tables) -> list[Comparison]:
    """The share of generalists among the largest set's active generators above each other role's share: shares of
    one multinomial sample, so each pair is paired (a generator is a generalist or the other role, never both)."""
    size = _role_sizes(t)[1]
    counts = _active(t, size)
    return [
        replace(
            Comparison.paired(
                f"generalists ({size} attacks)",
                f"{role}s",
                int(counts["generalist"]),
                int(counts[role]),
                int(counts.sum()),
                ">",
            ),
            sample_name="generators",
        )
        for role in ROLES
        if role != "generalist"
    ]


def specialisation_grows(t: Tables) -> Comparison:
    """The non-generalist share of the largest set's active generators above the smallest set's (separate systems)."""
    small, large = _role_sizes(t)
    shares = {}
    for size in (small, large):
        counts = _active(t, size)
        shares[size] = (100 * (1 - counts["generalist"] / counts.sum()), int(counts.sum()))
    return replace(
        Comparison.accuracies(
            (f"non-generalists, {large} attacks", shares[large][0]),
            (f"{small} attacks", shares[small][0]),
            ">",
            shares[large][1],
            shares[small][1],
        ),
        sample_name="generators",
    )


def spread_shrinks(t: Tables) -> list[Comparison]:
    """The smallest set's variance of faster-initialisation runs over each larger set's (F interval on the ratio)."""
    runs = _faster_runs(t)
    alike = [s for s, values in runs.items() if len(set(values)) == 1]
    if alike:  # a variance ratio with a zero variance has no interval
        raise KeyError(f"the faster-initialisation runs of the {', '.join(alike)}-attack set(s) all scored the same")
    first, *rest = runs
    return [Comparison.variances((f"{first} attacks", runs[first]), (f"{s} attacks", runs[s]), ">") for s in rest]


# -- notes: the measured context a claim that does not hold reports ------------------------------------------------
def _lowest_two(t: Tables) -> str:
    lowest = _defended(t).nsmallest(2)
    return "lowest two: " + ", ".join(f"{a} {v:.1f}%" for a, v in lowest.items()) + "; " + budget_note(t)


def _median_note(t: Tables) -> str:
    return f"median {_defended(t).median():.1f}%; " + budget_note(t)


def _runs_note(t: Tables) -> str:
    """How many runs each system has, and the pooled spread a system trained once is given."""
    counts = {kind: len(next(iter(_table6_runs(t, kind).values()))) for kind in ("joint", "faster")}
    spreads = {s: _spread(t, s) for s in _table6_runs(t, "joint")}
    stds = ", ".join(f"{s} attacks {math.sqrt(v):.1f} ({dof:.0f} dof)" for s, (v, dof) in spreads.items())
    return (
        f"runs: joint {counts['joint']}, faster {counts['faster']}, separately and large generator 1 each; run-to-run "
        f"std pooled over the joint and faster runs, assumed for every system of a set: {stds} points; "
        + budget_note(t)
    )


def _drops_note(t: Tables) -> str:
    joint = {s: r.mean for s, r in _repeated(t, "joint").items()}
    steps = ", ".join(f"{a}->{b} {joint[b] - joint[a]:+.1f}" for a, b in zip(joint, list(joint)[1:]))
    return f"mean accuracy change {steps} points; " + _runs_note(t)


def _roles_note(t: Tables) -> str:
    return _role_text(t, _role_sizes(t)[1]) + "; " + _collapse(t)


def _roles_by_size_note(t: Tables) -> str:
    return "; ".join(_role_text(t, s) for s in _role_sizes(t)) + "; " + _collapse(t)


def _spread_note(t: Tables) -> str:
    runs = _faster_runs(t)
    stds = ", ".join(f"{s} attacks {np.std(v, ddof=1):.1f}" for s, v in runs.items())
    return f"std of {len(next(iter(runs.values())))} faster-initialisation runs: {stds}"


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "hardest_attacks",
        "AUN and AGN are the hardest attacks to defend against (Table 2).",
        ("table2", "budget"),
        hardest_attacks,
        note=_lowest_two,
    ),
    Claim(
        "single_attack_high",
        "For most attacks the accuracy after the defense is above 90% (Table 2).",
        ("table2", "budget"),
        single_attack_high,
        quantifier="majority",
        note=_median_note,
    ),
    Claim(
        "above_chance",
        "After the defense the classifier is meaningfully more accurate than a random classifier "
        "(10%) on every attack set, trained jointly (Table 3; over the joint runs of Table 6).",
        ("table6", "budget"),
        above_chance,
        note=_runs_note,
    ),
    Claim(
        "separate_beats_joint",
        "Generators trained separately consistently outperform the jointly trained system (Table 3; the joint system "
        "over its runs of Table 6).",
        ("table3", "table6", "budget"),
        separate_beats_joint,
        note=_runs_note,
    ),
    Claim(
        "faster_about_joint",
        f"Faster initialisation gives results qualitatively similar to joint training "
        f"(within {ABOUT_EQUAL:.0f} points on every attack set, Table 3; over the runs of Table 6).",
        ("table6", "budget"),
        faster_about_joint,
        note=_runs_note,
    ),
    Claim(
        "more_attacks_harder",
        "The jointly trained system's accuracy drops when the number of attacks grows from 3 to 5 and 9 (Table 3; "
        "over the joint runs of Table 6).",
        ("table6", "budget"),
        more_attacks_harder,
        note=_runs_note,
    ),
    Claim(
        "drop_flattens",
        "Going from 5 to 9 attacks costs the jointly trained system less accuracy than going from 3 to 5 (Table 3; "
        "over the joint runs of Table 6).",
        ("table6", "budget"),
        drop_flattens,
        note=_drops_note,
    ),
    Claim(
        "large_about_mixture",
        f"One large generator reaches about the accuracy of the 9-generator mixture "
        f"(within {ABOUT_EQUAL:.0f} points, Section 4.5; the mixture over its joint runs of Table 6).",
        ("section45", "table6", "budget"),
        large_about_mixture,
        note=_runs_note,
    ),
    Claim(
        "generalists_most_common",
        "Generalists are the most common generators of the 9-attack systems (Section 4.6, Figure 4; counted among "
        "the generators that win samples, idle ones reported apart).",
        ("generator_roles",),
        generalists_most_common,
        note=_roles_note,
    ),
    Claim(
        "specialisation_grows",
        "Specialisation grows with the number of generators: more of the 9-attack "
        "systems' active generators than of the 3-attack ones are specialists or marginalists (Section 4.6, "
        "Figures 7-30).",
        ("generator_roles",),
        specialisation_grows,
        note=_roles_by_size_note,
    ),
    Claim(
        "spread_shrinks",
        "The spread of repeated runs shrinks with more attacks and generators: the standard "
        "deviation of the faster-initialisation runs is smaller for 5 and 9 attacks than for 3 (Table 6).",
        ("table6",),
        spread_shrinks,
        note=_spread_note,
    ),
)


def claims() -> list[Claim]:
    """The paper's qualitative claims on the tables the notebook saves: table2, table3, section45, generator_roles,
    table6 and budget (the run's sizes and epochs beside the paper's)."""
    return list(CLAIMS)
