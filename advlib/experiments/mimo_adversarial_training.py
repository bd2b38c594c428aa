"""The experiments of "Resilience to Multiple Attacks via Adversarially Trained MIMO Ensembles" as a `Study`.

Every system of Tables 4 and 8 is trained once by `defenses.mat.MIMOStep` under `train.fit` (single models through
`SingleAsMIMO`) and cached with its per-epoch history: loss, counted forward/backward passes per batch (Table 6), seconds (Table 7) and,
for MIMO systems, the cross-gradient ratio and sign disagreement on the training attack's adversarials of a fixed batch
(Figures 1 and 4). Evaluations are cached per model and attack; unions follow the paper's rule (broken = success within
eps + 1e-4).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..cache import Cache, Trained, cached_model
from ..claims import Claim, Comparison, Relation
from ..data import DatasetInfo, dataset_info, load_dataset, to_tensors
from ..defenses.mat import (
    Inner,
    MIMOStep,
    NormStep,
    cross_gradient_ratio,
    mat_attack,
    msd_attack,
    ramp_scale,
    sign_disagreement,
)
from ..evaluate import accuracy_vs_eps, accuracy_vs_steps, attack, attack_suite, union_robustness
from ..inference import predict
from ..models import Ensemble, create_model_for
from ..models.mimo import MIMO, MIMOAverage, MIMOMember, SingleAsMIMO, create_mimo
from ..params import MATNorm, MATParams
from ..report import load_references
from ..train import epoch_seed, fit
from .base import MissingResult, Study, artifact

LABELS = {
    "standard": "standard",
    "linf_at": "Linf AT",
    "l2_at": "L2 AT",
    "l1_at": "L1 AT",
    "vanilla": "Vanilla Ensemble",
    "msd": "MSD",
    "mat": "MAT",
    "mat_linf": "MAT(Linf)",
    "mat_l2": "MAT(L2)",
    "mat_msd": "MAT+MSD",
}
SINGLE_AT: dict[str, MATNorm] = {"linf_at": "linf", "l2_at": "l2", "l1_at": "l1"}
AT_FOR_NORM = {norm: system for system, norm in SINGLE_AT.items()}
NORM_LABELS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
# The paper's MNIST budget (Section 4, Appendix C), against which reasons for a missed claim measure this run's.
PAPER_BUDGET = {"images": 60_000, "epochs": 25, "iterations": 100, "n_eval": 1_000}
DIAGNOSTICS_STREAM = 7_919  # offset of the diagnostics attack's seed from the epoch's training seed
Tables = Mapping[str, Any]


TABLE4_SYSTEMS = ("standard", "linf_at", "l2_at", "l1_at", "vanilla", "msd", "mat")
TABLE8_SYSTEMS = ("linf_at", "mat_linf", "l2_at", "mat_l2", "msd", "mat_msd")
IMAGES = "images"  # Tables 4/8 column of each row's evaluated images, when n_each < n_eval makes them differ
TABLE4_CAPTION = (
    "{data}: every system under every attack, the union of each norm's attacks and of all (robust accuracy, %)."
)
TRANSFER_CAPTION = (
    "Transferability: misclassified evaluation images on each target (columns) under the PGD crafted on the sub-model "
    "trained for the norm and on the ensemble (rows), with the ratios r_ij = N_ij / N_ii (%)."
)


def _rates(table: pd.DataFrame) -> pd.DataFrame:
    """A robustness table's accuracies as the paper lays them out, without the image counts of an n_each run."""
    return table.drop(columns=IMAGES, errors="ignore")


def strip_norms(table: pd.DataFrame) -> pd.DataFrame:
    """Sub-model labels without their '(norm)' suffix, as the paper's tables name them."""
    rename = lambda label: label.split(" (")[0] if str(label).startswith("Sub-model") else label
    return table.rename(index=rename, columns=rename)


def transfer_for_paper(table: pd.DataFrame, ensemble_label: str) -> pd.DataFrame:
    """A transfer table's counts keyed as the references are: rows 'source sub-model', 'ensemble', 'No Attack';
    columns '<Norm> sub-model' and 'ensemble'. Sub-models are matched by the norm they were trained for, not by number,
    because the paper's transferability tables number them Linf, L2, L1 while its Section 4.1 numbers them L1, L2, Linf."""

    def rename(label: str) -> str:
        if str(label).startswith("Sub-model") and label.endswith(")"):
            return f"{NORM_LABELS[label[label.rindex('(') + 1 : -1]]} sub-model"
        return "ensemble" if label == ensemble_label else label

    counts = table["count"].rename(columns=rename)
    rows = {
        "source sub-model": counts.iloc[0],
        "ensemble": counts.loc[ensemble_label],
        "No Attack": counts.loc["No Attack"],
    }
    return pd.DataFrame(rows).T


def _paired_transfer(system: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The pairing of a transfer table of `system` with the references."""
    return lambda table: transfer_for_paper(table, LABELS[system])


class MATStudy(Study):
    """One notebook run: every system trained (cached), and the paper's tables and figures from them as declared
    artifacts, each paired with the paper's numbers where it has them."""

    stem = "mimo_adversarial_training"
    # the training budget (epochs, with the radius ramp scaled alongside so that it stays below them; training images)
    # and the training attack's steps
    budget = ("train.epochs", "ramp_epochs", "data.n_train", "iterations")
    p: MATParams

    def __init__(self, p: MATParams, device: torch.device | str = "cpu", cache: Cache | None = None) -> None:
        super().__init__(p, device, cache)
        self._trained: dict[str, Trained[MIMO | SingleAsMIMO]] = {}

    @cached_property
    def info(self) -> DatasetInfo:
        return dataset_info(self.p.data.name)

    @cached_property
    def train_set(self) -> Dataset:
        p = self.p
        return load_dataset(p.data.name, "train", n=p.data.n_train, seed=p.seed, download=p.data.download)

    @cached_property
    def evaluation_set(self) -> tuple[Tensor, Tensor]:
        """`n_eval` test images drawn with the run's seed, on the study's device."""
        p = self.p
        x, y = to_tensors(load_dataset(p.data.name, "test", n=p.n_eval, seed=p.seed, download=p.data.download))
        return x.to(self.device), y.to(self.device)

    def has(self, *systems: str) -> bool:
        """Whether the profile runs every one of `systems`."""
        return all(s in self.p.systems for s in systems)

    # -- systems ---------------------------------------------------------------------------
    def norm_steps(self, norms: list[MATNorm]) -> list[NormStep]:
        return [NormStep(n, self.p.threats[n].eps, self.p.threats[n].stepsize) for n in norms]

    def _recipe(self, name: str) -> tuple[MIMO | SingleAsMIMO, Inner | None, int, list[MATNorm]]:
        """(module to train, inner attack, members, norms) of a trained system."""
        p, k = self.p, self.p.iterations
        all_norms: list[MATNorm] = ["linf", "l2", "l1"]
        if name == "standard" or name in SINGLE_AT or name == "msd":
            # Normalised inputs, unlike the MIMO networks and the authors' code: on raw pixels the MSD model's training
            # followed the CPU's kernels (scalar vs AVX-512 ATen: Table 4 differed by one image in three rows).
            model = create_model_for(
                p.msd_model if name == "msd" else p.train.model, self.info, **p.train.model_options
            )
            norms = [SINGLE_AT[name]] if name in SINGLE_AT else all_norms if name == "msd" else []
            return SingleAsMIMO(model), self._inner(name, norms, k), 1, norms
        norms_of: dict[str, list[MATNorm]] = {
            "mat": list(p.members),
            "mat_linf": ["linf"] * len(p.members),
            "mat_l2": ["l2"] * len(p.members),
            "mat_msd": all_norms,
        }
        norms = norms_of[name]
        members = len(p.members)
        model = create_mimo(p.train.model, self.info, members, **p.train.model_options)
        return model, self._inner(name, norms, k), members, norms

    def _inner(self, name: str, norms: list[MATNorm], k: int) -> Inner | None:
        if not norms:
            return None
        steps = self.norm_steps(norms)
        if name in ("msd", "mat_msd"):
            return lambda model, x, y, g, scale: msd_attack(
                model, x, y, [s.scaled(scale) for s in steps], k, generator=g
            )
        return lambda model, x, y, g, scale: mat_attack(model, x, y, [s.scaled(scale) for s in steps], k, generator=g)

    def _diagnostic_batch(self, members: int) -> tuple[Tensor, Tensor]:
        n = self.p.diagnostics_images
        x, y = to_tensors(self.train_set, n=n * members)
        return x.view(n, members, *x.shape[1:]).to(self.device), y.view(n, members).to(self.device)

    def trained(self, name: str) -> Trained[MIMO | SingleAsMIMO]:
        """A system's trained module (a MIMO network, or SingleAsMIMO) with its history, under a key derived from the
        system, its training attack (norms, threats, iterations, ramp), the model, training, data and seed."""
        if name in self._trained:
            return self._trained[name]
        if name == "vanilla":
            raise ValueError("'vanilla' is not trained: it averages linf_at, l2_at and l1_at (see classifier)")
        p = self.p
        torch.manual_seed(p.seed)
        module, inner, members, norms = self._recipe(name)
        module = module.to(self.device)
        key = self.key(
            "mat",
            system=name,
            norms=norms,
            members=members,
            iterations=p.iterations,
            ramp_epochs=p.ramp_epochs if norms else 0,
            threats={n: p.threats[n] for n in sorted(set(norms))},
            model=p.msd_model if name == "msd" else p.train.model,
            train=p.train,
            data=p.data,
            seed=p.seed,
            diagnostics=("mean_norm_ratio", "training_attack", p.diagnostics_images) if members > 1 else None,
        )
        diagnostics = None
        if members > 1 and inner is not None:
            x_d, y_d = self._diagnostic_batch(members)
            steps = self.norm_steps(norms if len(norms) == members else ["linf"] * members)

            def diagnostics(epoch: int, model: nn.Module, record: dict[str, Any]) -> None:
                """Figures 1 and 4 on the inputs the outer step trains on: the training attack's adversarials (at the
                radii of the epoch just run) of the fixed diagnostic batch."""
                model.eval()
                generator = torch.Generator(device=self.device).manual_seed(
                    epoch_seed(p.seed, epoch - 1) + DIAGNOSTICS_STREAM
                )
                x_adv = inner(model, x_d, y_d, generator, ramp_scale(epoch - 1, p.ramp_epochs))
                record["cross_gradient_ratio"] = cross_gradient_ratio(model, x_adv, y_d).tolist()
                record["sign_disagreement"] = sign_disagreement(model, x_adv, y_d, steps).tolist()
                model.train()

        def build(target: nn.Module, checkpoint_dir: Path) -> list[dict[str, Any]]:
            with MIMOStep(
                target,
                self.train_set,
                p.train,
                members=members,
                inner=inner,
                device=self.device,
                ramp_epochs=p.ramp_epochs,
            ) as step:
                return fit(
                    step, seed=p.seed, checkpoint_dir=checkpoint_dir, on_epoch=diagnostics, desc=f"train {LABELS[name]}"
                )

        self._trained[name] = cached_model(key, module, build, cache=self.cache, label=LABELS[name])
        return self._trained[name]

    def classifier(self, name: str) -> tuple[nn.Module, str]:
        """The system as a classifier of (N, C, H, W) images and a key for caching its attacks."""
        if name == "vanilla":
            parts = [self.classifier(n) for n in ("linf_at", "l2_at", "l1_at")]
            return Ensemble([m for m, _ in parts]).eval(), "+".join(k for _, k in parts)
        trained = self.trained(name)
        module = trained.model
        return (module.model if isinstance(module, SingleAsMIMO) else MIMOAverage(module)).eval(), trained.key

    def sub_models(self, name: str) -> list[tuple[str, nn.Module, str]]:
        """(label, classifier, key) of each sub-model: the AT models of the vanilla ensemble, or MIMO members."""
        if (
            name == "vanilla"
        ):  # sub-model m is the AT model of members[m], as in MAT (Section 4.1: 1 = L1, 2 = L2, 3 = Linf)
            return [
                (f"Sub-model {m + 1} ({norm})", *self.classifier(AT_FOR_NORM[norm]))
                for m, norm in enumerate(self.p.members)
            ]
        trained = self.trained(name)
        module, key = trained.model, trained.key
        norms = self._recipe(name)[3]
        return [
            # sub-models are the members of a MIMO system
            (f"Sub-model {m + 1} ({norms[m]})", MIMOMember(cast(MIMO, module), m).eval(), f"{key}/member{m}")
            for m in range(module.members)
        ]

    # -- Tables 4 and 8 --------------------------------------------------------------------
    def robustness_table(self, systems: list[str]) -> pd.DataFrame:
        """Robust accuracy (%) of each system (columns): clean, every attack, the union of each group and of all.
        Every attack runs alone on the first `n_each` images; beyond them each group runs as a cascade, every attack
        (decision-based ones too) on the survivors of the group's earlier ones: the expensive attacks then cost in
        proportion to what the cheap ones leave, while clean, each group's first attack and the unions still cover
        all `n_eval` images (the other attacks' rows cover the first `n_each`)."""
        x, y = self.evaluation_set
        each = self.p.n_each or len(x)
        columns = {}
        for name in tqdm(systems, desc="systems", leave=False):
            model, key = self.classifier(name)
            suite = attack_suite(model, x[:each], y[:each], self.p.eval_attacks, model_key=key, cache=self.cache)
            robust = suite.robust()
            clean = suite.clean
            if each < len(x):
                clean = torch.cat([clean, predict(model, x[each:]) == y[each:]])
            overall = clean.clone()
            column = {"clean": _percent(clean)}
            for group, names in self.p.groups.items():
                first, union = robust[names[0]], torch.stack([robust[a] for a in names]).all(0)
                if each < len(x):
                    rest = union_robustness(
                        model,
                        x[each:],
                        y[each:],
                        {a: self.p.eval_attacks[a] for a in names},
                        batch_attacks_on_survivors=True,
                        model_key=key,
                        cache=self.cache,
                    )
                    first = torch.cat([first, rest.clean_correct & ~rest.broken[names[0]]])
                    union = torch.cat([union, rest.robust])
                column.update({a: _percent(robust[a]) for a in names})
                column[names[0]] = _percent(first)
                column[f"All {group}"] = _percent(union)
                overall &= union
            grouped = {a for names in self.p.groups.values() for a in names}
            for a in robust.keys() - grouped:  # in no group: run on every image (n_each = n_eval, see MATParams)
                overall &= robust[a]
            column["All attacks"] = _percent(overall)
            columns[LABELS[name]] = column
        table = pd.DataFrame(columns)
        if each < len(x):  # rows on different image counts: say which
            table[IMAGES] = [each if row in self.p.cascaded else len(x) for row in table.index]
        return table

    # -- Table 3 and the transferability tables --------------------------------------------
    def table3(self, name: str = "mat") -> pd.DataFrame:
        """The system and each sub-model against the PGD of every norm (robust accuracy, %)."""
        x, y = self.evaluation_set
        model, key = self.classifier(name)
        entries = [(LABELS[name], model, key)] + self.sub_models(name)
        rows = {}
        for norm, spec in self.p.transfer_attacks.items():
            rows[f"PGD {norm}"] = {
                label: 100
                * float((~attack(spec, m, x, y, model_key=k, cache=self.cache).broken(tol=1e-4)).float().mean())
                for label, m, k in entries
            }
        return pd.DataFrame(rows).T

    def transfer_table(self, name: str, norm: MATNorm) -> pd.DataFrame:
        """Misclassified test images (of n_eval) on every target (columns) under the `norm` PGD crafted on the
        sub-model trained for `norm` and on the ensemble (rows), with the clean errors ('No Attack') and the
        ratio r_ij = N_ij / N_ii (source row's count on itself)."""
        x, y = self.evaluation_set
        spec = self.p.transfer_attacks[norm]
        ensemble, ensemble_key = self.classifier(name)
        targets = self.sub_models(name) + [(LABELS[name], ensemble, ensemble_key)]
        sources = [t for t in targets[:-1] if t[0].endswith(f"({norm})")][:1] + [targets[-1]]
        counts, ratios = {}, {}
        for label, source, key in sources:
            x_adv = attack(spec, source, x, y, model_key=key, cache=self.cache).x_adv
            counts[label] = {t: int((predict(m, x_adv, batch_size=500) != y).sum()) for t, m, _ in targets}
            ratios[label] = {t: 100 * counts[label][t] / max(counts[label][label], 1) for t, _, _ in targets}
        counts["No Attack"] = {t: int((predict(m, x, batch_size=500) != y).sum()) for t, m, _ in targets}
        return pd.concat({"count": pd.DataFrame(counts).T, "ratio %": pd.DataFrame(ratios).T}, axis=1)

    # -- Tables 6 and 7 --------------------------------------------------------------------
    def passes_table(self, systems: list[str]) -> pd.DataFrame:
        """Forward and backward passes per batch, counted in the last training epoch, beside Table 6's formula."""
        k, m = self.p.iterations, len(self.p.members)
        formula = {
            "standard": (1, 1),
            "linf_at": (k + 1, k + 1),
            "l2_at": (k + 1, k + 1),
            "l1_at": (k + 1, k + 1),
            "msd": (4 * k + 1, k + 1),
            "mat": (k + 1, k + 1),
            "mat_linf": (k + 1, k + 1),
            "mat_l2": (k + 1, k + 1),
            "mat_msd": (4 * k + 1, k + 1),
        }
        rows = {}
        for name in systems:
            if name == "vanilla":
                rows[LABELS[name]] = {
                    "forward": float("nan"),
                    "backward": float("nan"),
                    "formula forward": m * (k + 1),
                    "formula backward": m * (k + 1),
                }
                continue
            last = self.trained(name).history[-1]
            rows[LABELS[name]] = {
                "forward": last["forward_per_batch"],
                "backward": last["backward_per_batch"],
                "formula forward": formula[name][0],
                "formula backward": formula[name][1],
            }
        return pd.DataFrame(rows).T

    def time_table(self, systems: list[str]) -> pd.DataFrame:
        """Training wall-clock seconds per system (summed over epochs), the epochs run and the ratio to Linf AT."""
        seconds = {LABELS[n]: sum(h["seconds"] for h in self.trained(n).history) for n in systems if n != "vanilla"}
        epochs = {LABELS[n]: len(self.trained(n).history) for n in systems if n != "vanilla"}
        if "vanilla" in systems:
            seconds[LABELS["vanilla"]] = sum(seconds[LABELS[n]] for n in SINGLE_AT)
            epochs[LABELS["vanilla"]] = max(epochs[LABELS[n]] for n in SINGLE_AT)
        table = pd.DataFrame({"seconds": seconds, "epochs": epochs})
        if LABELS["linf_at"] in table.index:
            table["x Linf AT"] = table["seconds"] / table.loc[LABELS["linf_at"], "seconds"]
        return table

    # -- Figures ---------------------------------------------------------------------------
    def diagnostics(self, name: str = "mat") -> pd.DataFrame:
        """Figures 1 and 4: per epoch and member, the cross-gradient ratio and the sign disagreement (long format)."""
        norms = self._recipe(name)[3]
        rows = []
        for record in self.trained(name).history:
            for m, (ratio, disagreement) in enumerate(zip(record["cross_gradient_ratio"], record["sign_disagreement"])):
                rows.append(
                    {
                        "epoch": record["epoch"],
                        "member": f"{m + 1} ({norms[m]})",
                        "cross_gradient_ratio": ratio,
                        "sign_disagreement": disagreement,
                    }
                )
        return pd.DataFrame(rows)

    def curves(self, systems: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Figures 2/3: robust accuracy vs PGD steps (one recording run) and vs radius, per norm and system."""
        x, y = self.evaluation_set
        by_steps, by_eps = [], []
        for name in tqdm(systems, desc="curves", leave=False):
            model, key = self.classifier(name)
            for norm, spec in self.p.transfer_attacks.items():
                steps = accuracy_vs_steps(model, x, y, spec, self.p.curve_steps)
                by_steps.append(steps.assign(system=LABELS[name], norm=norm))
                eps = accuracy_vs_eps(model, x, y, spec, self.p.curve_eps[norm], model_key=key, cache=self.cache)
                by_eps.append(eps.assign(system=LABELS[name], norm=norm))
        return pd.concat(by_steps, ignore_index=True), pd.concat(by_eps, ignore_index=True)

    # -- artifacts -------------------------------------------------------------------------
    @property
    def table4_name(self) -> str:
        """Table 4 is MNIST's robustness table; the paper's CIFAR-10 one is Table 5."""
        return "table5" if self.p.data.name == "cifar10" else "table4"

    @property
    def transfer_pairs(self) -> list[tuple[str, MATNorm]]:
        """(system, norm) of every transferability table the profile produces."""
        return [(s, n) for s in ("vanilla", "mat") if self.has(s) for n in self.p.transfer_attacks]

    def producible(self) -> set[str]:
        """The tables the claims may cite that this profile produces (no Table 3 without MAT; Table 4 or 5 by dataset)."""
        transfers = {f"transfer_{s}_{n}" for s, n in self.transfer_pairs}
        return {self.table4_name, "table8", "figures1_4", *(["table3"] if self.has("mat") else []), *transfers}

    def _require_mat(self, what: str) -> None:
        if not self.has("mat"):
            raise ValueError(f"{what} needs the system 'mat', which systems={self.p.systems} lacks")

    @artifact(
        "table6",
        "Forward and backward passes per training batch, counted in the last epoch, beside Table 6's "
        "formula (K training PGD steps, M members).",
        floatfmt=1,
    )
    def table6(self) -> pd.DataFrame:
        return self.passes_table(self.p.systems)

    @artifact(
        "table7", "Training wall-clock seconds per system on this machine, the epochs run and the ratio to Linf AT."
    )
    def table7(self) -> pd.DataFrame:
        return self.time_table(self.p.systems)

    @artifact(
        "figures1_4",
        "Figures 1 and 4: per epoch and MAT member, the cross-gradient ratio and the sign disagreement E_p.",
        floatfmt=4,
    )
    def figures1_4(self) -> pd.DataFrame:
        if not self.has("mat"):
            return pd.DataFrame(columns=["epoch", "member", "cross_gradient_ratio", "sign_disagreement"])
        return self.diagnostics("mat")

    @artifact(
        "table3",
        "MAT and each sub-model against the PGD of every norm (robust accuracy, %).",
        pair=strip_norms,
        floatfmt=1,
    )
    def table3_mat(self) -> pd.DataFrame:
        self._require_mat("Table 3")
        return self.table3("mat")

    @artifact("transfer_vanilla_linf", TRANSFER_CAPTION, pair=_paired_transfer("vanilla"), floatfmt=1)
    def transfer_vanilla_linf(self) -> pd.DataFrame:
        return self.transfer_table("vanilla", "linf")

    @artifact("transfer_vanilla_l2", TRANSFER_CAPTION, pair=_paired_transfer("vanilla"), floatfmt=1)
    def transfer_vanilla_l2(self) -> pd.DataFrame:
        return self.transfer_table("vanilla", "l2")

    @artifact("transfer_vanilla_l1", TRANSFER_CAPTION, pair=_paired_transfer("vanilla"), floatfmt=1)
    def transfer_vanilla_l1(self) -> pd.DataFrame:
        return self.transfer_table("vanilla", "l1")

    @artifact("transfer_mat_linf", TRANSFER_CAPTION, pair=_paired_transfer("mat"), floatfmt=1)
    def transfer_mat_linf(self) -> pd.DataFrame:
        return self.transfer_table("mat", "linf")

    @artifact("transfer_mat_l2", TRANSFER_CAPTION, pair=_paired_transfer("mat"), floatfmt=1)
    def transfer_mat_l2(self) -> pd.DataFrame:
        return self.transfer_table("mat", "l2")

    @artifact("transfer_mat_l1", TRANSFER_CAPTION, pair=_paired_transfer("mat"), floatfmt=1)
    def transfer_mat_l1(self) -> pd.DataFrame:
        return self.transfer_table("mat", "l1")

    @artifact("table4", TABLE4_CAPTION.format(data="MNIST"), pair=_rates, floatfmt=1)
    def table4(self) -> pd.DataFrame:
        return self.robustness_table([s for s in TABLE4_SYSTEMS if self.has(s)])

    @artifact("table5", TABLE4_CAPTION.format(data="CIFAR-10"), pair=_rates, floatfmt=1)
    def table5(self) -> pd.DataFrame:
        return self.table4()

    @artifact(
        "table8",
        "Sub-models trained with one attack: each single model beside its MAT variant (robust accuracy, %).",
        pair=_rates,
        floatfmt=1,
    )
    def table8(self) -> pd.DataFrame:
        return self.robustness_table([s for s in TABLE8_SYSTEMS if self.has(s)])

    @cached_property
    def curve_tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Figures 2/3's (accuracy vs steps, accuracy vs radius) for MAT, MSD and MAT+MSD, as the profile has them."""
        return self.curves([s for s in ("mat", "msd", "mat_msd") if self.has(s)])

    @artifact("figure2_steps", "Figure 2: robust accuracy (%) after each PGD step, per norm and system.", floatfmt=1)
    def figure2_steps(self) -> pd.DataFrame:
        return self.curve_tables[0]

    @artifact("figure2_eps", "Figure 3: robust accuracy (%) as the PGD radius grows, per norm and system.", floatfmt=1)
    def figure2_eps(self) -> pd.DataFrame:
        return self.curve_tables[1]

    @artifact(
        "paper_vs_run",
        "Every published number beside this run's: Table 4 (or 5), Table 8, Table 3 and the "
        "transferability tables; cells no run can reach are kept, with a note, out of the comparison.",
    )
    def paper_vs_run(self) -> pd.DataFrame:
        """The pairings with the paper, the robustness tables first, each with its excluded cells marked."""
        if not self.references:
            raise MissingResult("no artifact paired with the paper has been produced in this run")
        first = [name for name in (self.table4_name, "table8", "table3") if name in self.references]
        order = first + [name for name in self.references if name not in first]
        return pd.concat(
            {name: mark_excluded(name, self.references[name]) for name in order}, names=["artifact", "row"]
        )

    # -- claims ----------------------------------------------------------------------------
    def claims(self) -> list[Claim]:
        """The paper's qualitative claims, each measured on the run tables it cites (table3, table4, table8, the
        transfer_<system>_<norm> tables and figures1_4); see `mat_claims`."""
        return mat_claims(self.p)


def union_violations(values: dict[str, dict[str, float]]) -> dict[str, str]:
    """Published cells that no evaluation can produce: a union ('All <group>' or 'All attacks') more accurate than one
    of the attacks or unions it contains. Keys 'row / column', as paper-vs-run tables key them; values say why."""
    rows = list(values)
    groups: dict[str, list[str]] = {}
    members: list[str] = []
    for row in rows:
        if row == "All attacks":
            continue
        if row.startswith("All "):
            groups[row], members = members, []
        elif row != "clean":
            members.append(row)
    groups["All attacks"] = [r for r in rows if r not in ("clean", "All attacks")]
    bad = {}
    for union, parts in groups.items():
        for column, value in values.get(union, {}).items():
            above = [(r, values[r][column]) for r in parts if column in values[r] and values[r][column] < value]
            if above:
                lowest = min(above, key=lambda item: item[1])
                bad[f"{union} / {column}"] = (
                    f"impossible in the paper: the union ({value:g}%) is above {lowest[0]} "
                    f"({lowest[1]:g}%), which it contains"
                )
    return bad


def mark_excluded(artifact: str, table: pd.DataFrame) -> pd.DataFrame:
    """A paper-vs-run pairing of `artifact` with the references' `excluded` cells (published values no run can reach)
    kept visible but left out of the comparison: their difference is empty and a `note` column says why."""
    table = table.copy()
    excluded = load_references(MATStudy.stem)[artifact].get("excluded") or {}
    unknown = sorted(set(excluded) - set(table.index))
    if unknown:
        raise KeyError(
            f"excluded cells {unknown} of {artifact!r} are not in its values; cells: {', '.join(table.index)}"
        )
    table["note"] = ""
    for key, why in excluded.items():
        table.loc[key, "difference"] = float("nan")
        table.loc[key, "note"] = f"excluded: {why}"
    return table


def _percent(mask: Tensor) -> float:
    """The share of True in a per-image mask, in percent."""
    return 100 * float(mask.float().mean())


# -- claims --------------------------------------------------------------------------------
def _budget(p: MATParams) -> str:
    """This run's training and evaluation budget beside the paper's, for the reason of a missed claim."""
    b = PAPER_BUDGET
    images = p.data.n_train if p.data.n_train is not None else "all"
    return (
        f"this run trained {p.train.epochs} epochs on {images} images with {p.iterations}-step attacks (the paper: "
        f"{b['epochs']} epochs on {b['images']:,} with {b['iterations']}) and evaluates {p.n_eval} images (the paper: {b['n_eval']:,})"
        + (f", each attack alone on the first {p.n_each}" if p.n_each and p.n_each < p.n_eval else "")
    )


def _transfer(t: Tables, system: str, norm: str) -> pd.DataFrame:
    """The cited transfer table of `system` under `norm` PGD."""
    return t[f"transfer_{system}_{norm}"]


def _source_counts(table: pd.DataFrame) -> tuple[int, float]:
    """(N_ii, mean N_ij): the images the source sub-model's own PGD misclassifies on it, and the mean over the other
    sub-models of the images that PGD misclassifies on them."""
    counts = table["count"]
    source = counts.index[0]
    others = [c for c in counts.columns if str(c).startswith("Sub-model") and c != source]
    return int(counts.loc[source, source]), float(counts.loc[source, others].astype(float).mean())


def _ensemble_count(table: pd.DataFrame) -> int:
    """Images the PGD crafted on the ensemble misclassifies on the ensemble."""
    counts = table["count"]
    return int(counts.iloc[1][counts.index[1]])


def _own_norm_rows(table3: pd.DataFrame) -> list[tuple[str, str, float]]:
    """(sub-model, norm, robust accuracy under that norm's PGD) for each MAT sub-model of Table 3."""
    out = []
    for column in table3.columns:
        if str(column).startswith("Sub-model"):
            norm = column[column.rindex("(") + 1 : -1]
            out.append((column, norm, float(table3.loc[f"PGD {norm}", column])))
    if not out:
        raise KeyError("Table 3 has no sub-model columns")
    return out


TABLE8_PAIRS = (("Linf AT", "MAT(Linf)", "linf"), ("L2 AT", "MAT(L2)", "l2"), ("MSD", "MAT+MSD", None))


def _table8_rows(table8: pd.DataFrame, groups: Mapping[str, list[str]]) -> list[tuple[str, str, str, float, float]]:
    """(baseline, MAT variant, attack row, baseline %, variant %) for every pair of Table 8 this run has: each
    single-norm pair on its norm's attacks and their union, MSD vs MAT+MSD on every attack and union."""
    rows = []
    for base, variant, norm in TABLE8_PAIRS:
        if base not in table8.columns or variant not in table8.columns:
            continue
        names = [*groups[norm], f"All {norm}"] if norm else [r for r in table8.index if r != "clean"]
        rows += [
            (base, variant, r, float(table8.loc[r, base]), float(table8.loc[r, variant]))
            for r in names
            if pd.notna(table8.loc[r, base]) and pd.notna(table8.loc[r, variant])
        ]  # the paper leaves some cells empty
    if not rows:
        raise KeyError("Table 8 has no pair of a baseline and its MAT variant")
    return rows


class MATMeasures:
    """The measures of MAT's claims on a run of `p`, each reading only the tables its claim cites.

    Every accuracy of Tables 3, 4 and 8 and every count of the transfer tables is one evaluation of the run's
    `n_eval` images (in Tables 4 and 8, an attack that is not its group's first: of the first `n_each`), so two
    systems are always compared on the same images. The tables keep no per-image outcomes,
    so the comparisons use the unpaired Agresti-Caffo interval: the conservative one for same-image outcomes (their
    positive correlation makes the paired interval narrower)."""

    def __init__(self, p: MATParams) -> None:
        self.p, self.n, self.budget = p, p.n_eval, _budget(p)
        # Tables 4/8 rows measured on the first n_each images only: the attacks after the first of each group
        self.on_first = p.cascaded if p.n_each else set()
        self.norms = list(p.transfer_attacks)
        # Tables 11/12 show the opposite for L1; a profile without Linf and L2 transfer tables leaves it unmeasured
        self.low_transfer_norms = [nm for nm in ("linf", "l2") if nm in self.norms] or ["linf", "l2"]

    def _accuracies(
        self,
        left: tuple[str, float],
        right: tuple[str, float],
        relation: Relation,
        threshold: float = 0.0,
        row: str | None = None,
    ) -> Comparison:
        """Two accuracies of one row of Tables 3, 4 or 8 (or of the transfer counts), each on the images that row
        covers."""
        return Comparison.accuracies(left, right, relation, self._n(row), threshold=threshold)

    def _n(self, row: str | None) -> int:
        """The images a row of Tables 4/8 covers: the first n_each for an attack its group's cascade ran only on
        survivors beyond them, n_eval otherwise."""
        return self.p.n_each if row in self.on_first and self.p.n_each else self.n

    def budget_note(self, t: Tables) -> str:
        return self.budget

    # -- Table 4 --
    def mat_vs_vanilla_unions(self, t: Tables) -> list[Comparison]:
        """MAT above the vanilla ensemble (strict) on each norm's union."""
        table4 = t["table4"]
        return [
            self._accuracies((f"{u}: MAT", table4.loc[u, "MAT"]), ("vanilla", table4.loc[u, "Vanilla Ensemble"]), ">")
            for u in (f"All {g}" for g in self.p.groups)
        ]

    def mat_vs_msd_all_linf(self, t: Tables) -> Comparison:
        """MAT above MSD (strict) on the union of Linf attacks."""
        row = t["table4"].loc["All linf"]
        return self._accuracies(("All linf: MAT", row["MAT"]), ("MSD", row["MSD"]), ">")

    def vanilla_vs_linf_at(self, t: Tables) -> Comparison:
        """The vanilla ensemble's All-Linf accuracy minus Linf AT's below -20 points (strict: 'more than 20 below')."""
        row = t["table4"].loc["All linf"]
        return self._accuracies(("All linf: vanilla", row["Vanilla Ensemble"]), ("Linf AT", row["Linf AT"]), "<", -20)

    # -- Table 3 --
    def submodels_vs_standard(self, t: Tables) -> list[Comparison]:
        """Each sub-model under its own norm's PGD (Table 3) minus the standard model under that PGD (Table 4) above
        20 points: strict, as the sentence asserts robustness, which the evidence must show."""
        standard = t["table4"]["standard"]
        return [
            self._accuracies(
                (f"{column} under PGD {norm}", accuracy), ("standard", standard[f"PGD {norm}"]), ">", threshold=20
            )
            for column, norm, accuracy in _own_norm_rows(t["table3"])
        ]

    def mat_vs_weakest_submodel(self, t: Tables) -> list[Comparison]:
        """MAT above (strict) the sub-model with the lowest accuracy under each norm's PGD."""
        table3 = t["table3"]
        subs = table3[[c for c in table3.columns if str(c).startswith("Sub-model")]].astype(float)
        return [
            self._accuracies(
                (f"{row}: MAT", table3.loc[row, "MAT"]), (subs.loc[row].idxmin(), subs.loc[row].min()), ">"
            )
            for row in table3.index
        ]

    # -- transferability --
    def transfer_rates(self, t: Tables) -> list[Comparison]:
        """Per norm, MAT's mean r_ij = N_ij / N_ii from the source sub-model to the others below (strict) the vanilla
        ensemble's, each read as the share of the N_ii source images whose adversarials transfer: a proportion on
        N_ii images, Agresti-Caffo on two separate samples (the two systems' source images differ). The mean of the
        targets' counts is taken in whole images rounded against the claim (MAT's up, vanilla's down), and capped at
        N_ii: a target's own clean errors count in N_ij, so a ratio can pass 100%. The label gives the measured r_ij
        where the proportion differs from it."""
        out = []
        for norm in self.low_transfer_norms:
            mat, mat_own = self._rate(t, "mat", norm, math.ceil)
            vanilla, vanilla_own = self._rate(t, "vanilla", norm, math.floor)
            out.append(Comparison.accuracies(mat, vanilla, "<", mat_own, n_right=vanilla_own))
        return out

    def _rate(
        self, t: Tables, system: str, norm: str, rounding: Callable[[float], int]
    ) -> tuple[tuple[str, float], int]:
        """((label, transfer rate %), N_ii) of `system`'s source sub-model under `norm` PGD."""
        own, mean = _source_counts(_transfer(t, system, norm))
        if own == 0:
            raise KeyError(f"r_ij of {system} under {norm} PGD: its source sub-model's PGD misclassifies no image")
        transferred = min(rounding(mean), own)
        label = f"{norm}: MAT mean r_ij" if system == "mat" else "vanilla mean r_ij"
        if transferred != mean:
            label += f" (measured {100 * mean / own:.1f}%)"
        return (label, 100 * transferred / own), own

    def transfer_note(self, t: Tables) -> str:
        counts = "; ".join(
            f"{norm}: N_ii = {_source_counts(_transfer(t, 'mat', norm))[0]} (MAT) and "
            f"{_source_counts(_transfer(t, 'vanilla', norm))[0]} (vanilla) source images of {self.n}"
            for norm in self.low_transfer_norms
        )
        return f"{counts}; {self.budget}"

    def ensemble_transfer(self, t: Tables) -> list[Comparison]:
        """Per norm, the share of the n_eval images that PGD crafted on the whole ensemble misclassifies: MAT below
        (strict) the vanilla ensemble."""
        return [
            self._accuracies(
                (f"{norm}: MAT misclassified", 100 * _ensemble_count(_transfer(t, "mat", norm)) / self.n),
                ("vanilla", 100 * _ensemble_count(_transfer(t, "vanilla", norm)) / self.n),
                "<",
            )
            for norm in self.norms
        ]

    # -- Table 8 --
    def table8_rows(self, t: Tables) -> list[Comparison]:
        """Every row of Table 8 a MAT variant shares with its single model: the variant above (strict) the model."""
        return [
            self._accuracies((f"{row}: {variant}", v), (base, b), ">", row=row)
            for base, variant, row, b, v in _table8_rows(t["table8"], self.p.groups)
        ]

    def table8_note(self, t: Tables) -> str:
        rows = _table8_rows(t["table8"], self.p.groups)
        higher, tied = sum(v > b for *_, b, v in rows), sum(v == b for *_, b, v in rows)
        return f"by the point estimates {higher} of {len(rows)} rows higher and {tied} tied (the paper: 13 of 19); {self.budget}"

    def mat_msd_unions(self, t: Tables) -> list[Comparison]:
        """MAT+MSD above (strict) MSD on the union of Linf attacks and on the union of L1 attacks."""
        table8 = t["table8"]
        return [
            self._accuracies((f"{u}: MAT+MSD", table8.loc[u, "MAT+MSD"]), ("MSD", table8.loc[u, "MSD"]), ">")
            for u in ("All linf", "All l1")
        ]

    # -- Figure 1 --
    def _ratios(self, t: Tables) -> tuple[dict[str, pd.Series], list[int], list[int]]:
        """Per member its cross-gradient ratio by epoch, with the first and last half of the recorded epochs."""
        diagnostics = t["figures1_4"]
        epochs = sorted(int(e) for e in diagnostics["epoch"].unique())
        half = len(epochs) // 2
        if half < 2:
            raise KeyError(
                f"only {len(epochs)} epoch(s) recorded: the fall is measured between the first and last half of "
                f"training, which needs two epochs in each (the paper trains {PAPER_BUDGET['epochs']})"
            )
        series = {
            str(member): group.set_index("epoch")["cross_gradient_ratio"].astype(float)
            for member, group in diagnostics.groupby("member")
        }
        return series, epochs[:half], epochs[-half:]

    def cross_gradients(self, t: Tables) -> list[Comparison]:
        """Per member, the mean ratio of the last half of the epochs below (strict) that of the first half, and above
        zero (strict), with Welch's / the one-sample t interval. Figure 1's table holds one ratio per epoch and member
        (of mean gradient norms over the fixed diagnostics images, no per-image values), so the epochs are the
        repeated measurements; a trend within a half widens its spread, which makes the interval conservative."""
        series, early, late = self._ratios(t)
        span = lambda epochs: f"epochs {epochs[0]}-{epochs[-1]}"
        out = []
        for member, ratio in series.items():
            last = (f"member {member} {span(late)}", ratio.loc[late].tolist())
            out.append(Comparison.means(last, (span(early), ratio.loc[early].tolist()), "<"))
            out.append(Comparison.means(last, ("zero", 0.0), ">"))
        return out

    def cross_gradients_note(self, t: Tables) -> str:
        series, _, _ = self._ratios(t)
        trend = "; ".join(
            f"member {m}: {r.sort_index().iloc[0]:.3f} -> {r.sort_index().iloc[-1]:.3f}" for m, r in series.items()
        )
        ramp = f"; the training radii ramp up over the first {self.p.ramp_epochs} epochs" if self.p.ramp_epochs else ""
        return (
            f"{trend} (first -> last epoch; ratio of mean norms on the training attack's adversarials of "
            f"{self.p.diagnostics_images} fixed training images, once per epoch){ramp}; {self.budget}"
        )


def mat_claims(p: MATParams) -> list[Claim]:
    """The paper's claims for a run of `p`, as data: the sentence, the tables it cites and its measure."""
    m = MATMeasures(p)
    low_transfer = tuple(f"transfer_{s}_{nm}" for nm in m.low_transfer_norms for s in ("vanilla", "mat"))
    every_transfer = tuple(f"transfer_{s}_{nm}" for nm in m.norms for s in ("vanilla", "mat"))
    return [
        Claim(
            "mat_beats_vanilla_unions",
            "MAT beats the vanilla ensemble on the union of each norm's attacks (Table 4).",
            ("table4",),
            m.mat_vs_vanilla_unions,
            note=m.budget_note,
        ),
        Claim(
            "mat_beats_msd_all_linf",
            "MAT beats MSD on the union of Linf attacks (82.3% vs 56.3% in Table 4).",
            ("table4",),
            m.mat_vs_msd_all_linf,
            note=m.budget_note,
        ),
        Claim(
            "vanilla_fails_linf",
            "The vanilla ensemble fails under Linf attacks: its All-Linf accuracy is more than 20 "
            "points below Linf AT's (0.0% vs 94.9% in Table 4).",
            ("table4",),
            m.vanilla_vs_linf_at,
            note=m.budget_note,
        ),
        Claim(
            "mat_submodels_robust",
            "Every sub-model of MAT is robust against the PGD of its own norm: at least 20 points "
            "above the standard model under that PGD, so above chance (Table 3: 72.0%, 69.0%, 87.1% for sub-models 1, "
            "2, 3; standard model in Table 4: 0%).",
            ("table3", "table4"),
            m.submodels_vs_standard,
            note=m.budget_note,
        ),
        Claim(
            "mat_above_weakest_submodel",
            "MAT, averaging its sub-models, is more robust than its weakest sub-model under "
            "the PGD of every norm (Table 3: 89.2% vs 33.1% under Linf PGD).",
            ("table3",),
            m.mat_vs_weakest_submodel,
            note=m.budget_note,
        ),
        Claim(
            "mat_low_transfer",
            "Linf and L2 PGD crafted on one sub-model transfer less between MAT's sub-models than "
            "between the vanilla ensemble's: lower mean ratio r_ij (Tables 1, 2, 9, 10).",
            low_transfer,
            m.transfer_rates,
            note=m.transfer_note,
        ),
        Claim(
            "mat_ensemble_resists_transfer",
            "PGD crafted on the whole ensemble misclassifies fewer images on MAT than on "
            "the vanilla ensemble in every norm (Tables 1, 2, 9-12: 128 vs 960, 320 vs 437, 262 vs 383 of 1,000).",
            every_transfer,
            m.ensemble_transfer,
            note=m.budget_note,
        ),
        Claim(
            "table8_mat_mostly_higher",
            "Built on the same training attack, MAT (MAT(Linf), MAT(L2), MAT+MSD) is more "
            "robust than the single model (Linf AT, L2 AT, MSD) in most attack scenarios (Table 8: 13 of 19 rows).",
            ("table8",),
            m.table8_rows,
            quantifier="majority",
            note=m.table8_note,
        ),
        Claim(
            "table8_mat_msd_linf_l1",
            "MAT+MSD is more robust than MSD against the union of Linf attacks and the union "
            "of L1 attacks (Table 8: +20.2 and +29.2 points).",
            ("table8",),
            m.mat_msd_unions,
            note=m.budget_note,
        ),
        Claim(
            "cross_gradients_shrink",
            "The cross-gradient ratio of every MAT member falls during training but stays above zero (Figure 1).",
            ("figures1_4",),
            m.cross_gradients,
            note=m.cross_gradients_note,
        ),
    ]
