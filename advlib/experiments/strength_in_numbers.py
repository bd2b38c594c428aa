"""The experiments of "Strength in Numbers" (Grefenstette et al. 2018) as one `Study`.

Every system of Figure 1 is trained by `advlib.train.fit` on a `ClassifierStep` (the ensemble as one model; Algorithm 1
when adversarial) and evaluated after every epoch by Section 4.3's job (clean, the white-box attacks, the black-box set
made by PGD against a separately trained logit-averaged ensemble of two other architectures). Trained systems and
their evaluation histories are cached together; the tables evaluated after training (1c, 2, Figures 2c and 3) are
cached under the keys of the systems they evaluate, so a rerun only loads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..attacks.pgd import ADAM_RULE
from ..cache import Cache, CacheKey, Trained, cached_frames, cached_model
from ..claims import Claim, Comparison, DoesNotTransfer
from ..data import DatasetInfo, dataset_info, load_dataset, to_tensors
from ..defenses.ensemble_at import (
    average_seeds,
    build_ensemble,
    evaluation_scores,
    member_margin_attack,
    robust_accuracy,
    strongest_attack,
    system_spec,
    with_mode,
)
from ..evaluate import accuracy, accuracy_vs_steps, attack
from ..models import Ensemble, count_parameters, create_model_for
from ..params import StrengthInNumbersParams, TrainSpec
from ..train import ClassifierStep, fit, train_classifier
from .base import Study, artifact

SCORES = ("clean", "IFGSM5", "PGD5", "PGD20", "blackbox")
PAPER_TIME_STEPS = 1000  # Section 4.3: every evaluation curve is interpolated onto 1,000 time steps
PAPER_WINDOW = 10  # Table 1a: "the average of the last 10 evaluation steps"
APPENDIX_SYSTEM = "Ensemble4Adv"  # the ensemble Appendix A (Table 2, Figure 3) dissects
Tables = Mapping[str, Any]
ADVERSARIAL_SYSTEMS = ("SingleAdv", "DoubleAdv", "Ensemble2Adv", "Ensemble4Adv")
PLAIN_SYSTEMS = ("Baseline", "Ensemble2", "Ensemble4")
BIGGER = (("SingleAdv", "DoubleAdv"), ("Ensemble2Adv", "Ensemble4Adv"))  # (smaller, bigger) adversarial systems


class EnsembleStudy(Study):
    """One notebook run: the black-box set, every system for every seed, and the paper's tables from them."""

    stem = "strength_in_numbers"
    # the training budget: epochs, training images and the steps of the training attack (the evaluation attacks and
    # curves are the evaluation, which the ladder keeps)
    budget = ("train.epochs", "data.n_train", "train_attack.steps")
    p: StrengthInNumbersParams
    plateau_points = 2.0  # Figure 3's plateau: the last step count lowers accuracy by less than this
    softmax_points = 2.0  # Table 2's "about a point" between the ensemble and its logit average

    def __init__(
        self, p: StrengthInNumbersParams, device: torch.device | str = "cpu", cache: Cache | None = None
    ) -> None:
        super().__init__(p, device, cache)
        self._systems: dict[tuple[str, int], Trained[Ensemble]] = {}

    # -- data and models -------------------------------------------------------------------
    @cached_property
    def info(self) -> DatasetInfo:
        return dataset_info(self.p.data.name)

    @cached_property
    def train_set(self) -> Dataset:
        data = self.p.data
        return load_dataset(data.name, "train", n=data.n_train, seed=self.p.seed, download=data.download)

    @cached_property
    def evaluation_set(self) -> tuple[Tensor, Tensor]:
        """The `n_eval` test images (a stratified subset drawn with `p.seed`), on the study's device."""
        data = self.p.data
        x, y = to_tensors(load_dataset(data.name, "test", n=self.p.n_eval, seed=self.p.seed, download=data.download))
        return x.to(self.device), y.to(self.device)

    @property
    def images(self) -> dict[str, Any]:
        """What names the evaluation images in a cache key."""
        return {"data": self.p.data, "n": self.p.n_eval, "seed": self.p.seed}

    def options(self, wide: bool) -> dict[str, Any]:
        """The architecture's options of a member: `train.model_options`, widened by `double_options` for DoubleAdv."""
        return {**self.p.train.model_options, **(self.p.double_options if wide else {})}

    def builder(self, wide: bool = False) -> Callable[[], nn.Module]:
        """A fresh member (an untrained network of the study's architecture) on every call."""
        options = self.options(wide)
        return lambda: create_model_for(self.p.train.model, self.info, **options)

    @cached_property
    def blackbox_sources(self) -> list[Trained]:
        """The separately trained source models of the black-box set (seeds p.seed, p.seed + 1, ...)."""
        return [
            train_classifier(spec, self.p.data, seed=self.p.seed + i, device=self.device, cache=self.cache)
            for i, spec in enumerate(self.p.blackbox_sources)
        ]

    @cached_property
    def blackbox_key(self) -> CacheKey:
        """What names the black-box set: its sources, its attack, and the Adam rule of PGD (which changes the set)."""
        return self.key("blackbox", sources=self.blackbox_sources, attack=self.p.blackbox_attack, pgd_adam=ADAM_RULE)

    @cached_property
    def blackbox(self) -> tuple[Tensor, Tensor]:
        """The precomputed black-box set: blackbox_attack against the logit-averaged ensemble of the source models."""
        x, y = self.evaluation_set
        source = Ensemble([s.model for s in self.blackbox_sources], mode="logit").eval()
        result = attack(self.p.blackbox_attack, source, x, y, model_key=self.blackbox_key.key, cache=self.cache)
        return result.x_adv, y

    def system(self, name: str, seed: int) -> Trained[Ensemble]:
        """A trained system with its per-epoch evaluation history (cached); Separate2Adv = two SingleAdv runs
        (seeds seed and seed + 1000) ensembled at test time, with no history of its own."""
        if (name, seed) not in self._systems:
            self._systems[(name, seed)] = (
                self._separate(name, seed) if system_spec(name).separate else self._train(name, seed)
            )
        return self._systems[(name, seed)]

    def _separate(self, name: str, seed: int) -> Trained[Ensemble]:
        singles = [self.system("SingleAdv", seed + 1000 * j) for j in range(system_spec(name).members)]
        key = self.key("separate", system=name, members=singles)
        return Trained(Ensemble([s.model.members[0] for s in singles]).eval(), [], key.key)

    def _system_key(self, name: str, seed: int) -> CacheKey:
        """What names a trained system and its evaluation history: the system, its members' architecture, its
        training, seed and data, and the evaluation job (images, white-box attacks, black-box set)."""
        spec = system_spec(name)
        return self.key(
            "ensemble_at",
            system=spec,
            model_options=self.options(spec.wide),
            train=self._train_spec(name),
            seed=seed,
            data=self.p.data,
            data_seed=self.p.seed,
            evaluation={"images": self.images, "attacks": self.p.eval_attacks, "blackbox": self.blackbox_key},
            pgd_adam=ADAM_RULE,
        )

    def _train(self, name: str, seed: int) -> Trained[Ensemble]:
        spec = system_spec(name)
        model = build_ensemble(self.builder(spec.wide), spec.members, seed).to(self.device)
        train_spec = self._train_spec(name)
        blackbox = self.blackbox
        x, y = self.evaluation_set

        def evaluate_epoch(epoch: int, module: nn.Module, record: dict[str, Any]) -> None:
            record.update(evaluation_scores(module, x, y, self.p.eval_attacks, blackbox))
            module.train()

        def build(module: Ensemble, checkpoint_dir: Path) -> list[dict[str, Any]]:
            step = ClassifierStep(module, self.train_set, train_spec, device=self.device)
            return fit(
                step,
                seed=seed,
                checkpoint_dir=checkpoint_dir,
                on_epoch=evaluate_epoch,
                desc=f"train {name} (seed {seed})",
            )

        return cached_model(self._system_key(name, seed), model, build, cache=self.cache, label=f"{name} (seed {seed})")

    def _train_spec(self, name: str) -> TrainSpec:
        """The training spec of system `name`: Algorithm 1 with the paper's rho when adversarial, plain training else."""
        adversarial = system_spec(name).adversarial
        return self.p.train.model_copy(
            update={
                "adversary": self.p.train_attack if adversarial else None,
                "adv_weight": self.p.rho / (1 + self.p.rho) if adversarial else 1.0,
            }
        )

    def _cached_tables(
        self, table: str, systems: list[str], settings: Any, build: Callable[[], tuple[pd.DataFrame, ...]]
    ) -> tuple[pd.DataFrame, ...]:
        """`build()`'s tables, cached under the keys of `systems` (seed p.seeds[0]), the test images and `settings`."""
        seed = self.p.seeds[0]
        key = self.key(
            "ensemble_tables",
            table=table,
            systems={name: self.system(name, seed) for name in systems},
            images=self.images,
            settings=settings,
            pgd_adam=ADAM_RULE,
        )
        return cached_frames(key, build, cache=self.cache, label=f"{table} ({', '.join(systems)})")

    # -- the paper's artifacts -------------------------------------------------------------
    @artifact("parameters", "Parameters of every system (members x parameters of one member).")
    def parameter_counts(self) -> pd.DataFrame:
        """Parameters of every system (members x architecture)."""
        rows = []
        for name in self.p.systems:
            spec = system_spec(name)
            one = count_parameters(self.builder(spec.wide)())
            rows.append({"system": name, "members": spec.members, "parameters": spec.members * one})
        return pd.DataFrame(rows).set_index("system")

    @cached_property
    def seed_curves(self) -> pd.DataFrame:
        """Per system and score: the seed-averaged evaluation curve over epochs (outliers removed), long format."""
        rows = []
        for name in self.p.systems:
            histories = [self.system(name, seed).history for seed in self.p.seeds]
            if not histories[0]:
                continue
            for score in SCORES:
                series = [([h["epoch"] for h in history], [h[score] for h in history]) for history in histories]
                epochs = series[0][0]
                grid, mean = average_seeds(series, points=len(epochs))
                rows += [
                    {"system": name, "score": score, "epoch": float(e), "accuracy": float(v)}
                    for e, v in zip(grid, mean)
                ]
        return pd.DataFrame(rows)

    @artifact("curves", "Seed-averaged accuracy (%) of every system and score after each epoch (outliers removed).")
    def curves(self) -> pd.DataFrame:
        return self.seed_curves

    @artifact(
        "table1a",
        "Table 1a: mean accuracy (%) of the final evaluations (the paper's last 10 of 1,000 time steps: the final 1% "
        "of training, at least one evaluation; seed-averaged).",
        pair=lambda t: t / 100,
    )
    def table1a(self) -> pd.DataFrame:
        return last_evaluations(self.seed_curves, self.p.systems)

    @artifact(
        "table1b",
        "Table 1b: accuracy (%) at the evaluation with the best IFGSM5 accuracy among Table 1a's final ones "
        "(seed-averaged).",
        pair=lambda t: t.drop(columns="epoch") / 100,
    )
    def table1b(self) -> pd.DataFrame:
        return best_ifgsm_evaluation(self.seed_curves)

    @artifact("table1c", "Table 1c: accuracy (%) after the long attacks, final weights.", pair=lambda t: t.T / 100)
    def table1c(self) -> pd.DataFrame:
        """Accuracy after the long attacks (the paper: 500 steps), final weights of seed p.seeds[0], every system."""
        seed = self.p.seeds[0]
        x, y = self.evaluation_set

        def build() -> tuple[pd.DataFrame]:
            table = {
                name: {
                    label: robust_accuracy(self.system(name, seed).model, spec, x, y)
                    for label, spec in self.p.long_attacks.items()
                }
                for name in self.p.systems
            }
            return (pd.DataFrame(table).T,)

        return self._cached_tables("table1c", list(self.p.systems), self.p.long_attacks, build)[0]

    @artifact("figure2c", "Figure 2c: accuracy (%) vs PGD (Adam) steps, one recording run per system.")
    def steps_curves(self) -> pd.DataFrame:
        """Figure 2c: accuracy vs PGD steps for every system, one recording run each (seed p.seeds[0])."""
        x, y = self.evaluation_set
        curve = self.p.steps_curve

        def build() -> tuple[pd.DataFrame]:
            frames = []
            for name in self.p.systems:
                model = self.system(name, self.p.seeds[0]).model
                frames.append(accuracy_vs_steps(model, x, y, curve.attack, curve.steps).assign(system=name))
            return (pd.concat(frames, ignore_index=True),)

        return self._cached_tables("figure2c", list(self.p.systems), curve, build)[0]

    @cached_property
    def strongest(self) -> tuple[pd.DataFrame, ...]:
        """Appendix A.1 on Ensemble4Adv: each member, the ensemble and the logit-averaged ensemble under the strongest
        adversary; plus every (steps, accuracy) the step doubling tried."""
        return self._cached_tables("table2", [APPENDIX_SYSTEM], self.p.strongest, self._table2)

    @artifact(
        "table2",
        "Table 2: each member of Ensemble4Adv, the ensemble and its logit average under the strongest adversary (%).",
        pair=lambda t: t[["clean accuracy", "adversarial accuracy"]],
    )
    def table2(self) -> pd.DataFrame:
        return self.strongest[0]

    @artifact("table2_doubling", "Table 2's step doubling: the accuracy (%) after every number of steps tried.")
    def table2_doubling(self) -> pd.DataFrame:
        return self.strongest[1]

    def _table2(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        x, y = self.evaluation_set
        ensemble = self.system(APPENDIX_SYSTEM, self.p.seeds[0]).model
        models: dict[str, nn.Module] = {f"Model {i + 1}": member for i, member in enumerate(ensemble.members)}
        models["Ensemble"] = ensemble
        models["Ensemble (remove softmax)"] = with_mode(ensemble, "logit").eval()
        spec = self.p.strongest.attack.model_dump()
        rows, tried = [], []
        for label, model in models.items():
            clean = 100 * accuracy(model, x, y)
            adversarial, steps, history = strongest_attack(
                model, x, y, spec, start_steps=self.p.strongest.start_steps, max_steps=self.p.strongest.max_steps
            )
            rows.append({"model": label, "clean accuracy": clean, "adversarial accuracy": adversarial, "steps": steps})
            tried += [{"model": label, "steps": s, "accuracy": a} for s, a in history]
        return pd.DataFrame(rows).set_index("model"), pd.DataFrame(tried)

    @artifact(
        "figure3",
        "Figure 3: Ensemble4Adv accuracy (%) vs steps of PGD (margin loss) on the ensemble, on the mean of the members' "
        "margins and on the logit average.",
    )
    def figure3(self) -> pd.DataFrame:
        """Appendix A.2: accuracy of the ensemble vs attack steps when PGD (margin loss) targets the ensemble, the
        mean of the members' margins (transfer), or the logit-averaged ensemble (remove softmax)."""
        settings = {"strongest": self.p.strongest, "steps": self.p.transfer_steps, "transfer": "mean-member-margin"}
        return self._cached_tables("figure3", [APPENDIX_SYSTEM], settings, lambda: (self._figure3(),))[0]

    def _figure3(self) -> pd.DataFrame:
        x, y = self.evaluation_set
        ensemble = self.system(APPENDIX_SYSTEM, self.p.seeds[0]).model
        members = list(ensemble.members)
        targets: dict[str, Callable[[dict[str, Any]], Tensor]] = {
            "ensemble": lambda spec: attack(spec, ensemble, x, y).x_adv,
            "mean member loss (transfer)": lambda spec: member_margin_attack(members, spec, x, y),
            "remove softmax": lambda spec: attack(spec, with_mode(ensemble, "logit").eval(), x, y).x_adv,
        }
        base = self.p.strongest.attack.model_dump()
        rows = []
        for steps in self.p.transfer_steps:
            spec = {**base, "steps": steps, "options": {**base.get("options", {}), "loss": "margin"}}
            for label, adversarials in targets.items():
                x_adv = adversarials(spec)
                rows.append({"attack on": label, "steps": steps, "accuracy": 100 * accuracy(ensemble, x_adv, y)})
        return pd.DataFrame(rows)

    @artifact("paper_vs_run", "Every published number beside this run's (fractions), per artifact.", floatfmt=3)
    def paper_vs_run(self) -> pd.DataFrame:
        return super().paper_vs_run()

    # -- the paper's claims, each checked on the tables it cites ------------------------------------------------
    def claims(self) -> list[Claim]:
        """The claims of Sections 5 and A of the paper, measured on this run's sample sizes (`SinMeasures`)."""
        return sin_claims(
            SinMeasures(
                n_eval=self.p.n_eval,
                window=final_window(self.p.train.epochs),
                seeds=len(self.p.seeds),
                epochs=self.p.train.epochs,
                dataset=self.p.data.name,
                plateau_points=self.plateau_points,
                softmax_points=self.softmax_points,
            )
        )


@dataclass(frozen=True)
class SinMeasures:
    """The measures of the paper's claims for one run: each reads the cited tables and returns the comparison(s) that
    test one claim.

    Accuracies are compared as counts of correct images on every image they average over: Table 1a's over the
    `n_eval` images x the `window` final evaluations x the `seeds` (`n_1a`), Table 1b's over images x seeds (`n_1b`),
    the others over the `n_eval` images once. Every comparison sets two systems (or attacks, or step counts) scored on
    the same images against each other, but the tables keep no per-image outcomes (Table 1a even averages several
    evaluations), so each uses the unpaired Agresti-Caffo interval: the conservative one for positively correlated
    same-image outcomes. Figure 2c's collapse is one accuracy against 10% (Wilson)."""

    n_eval: int
    window: int = 1  # the final evaluations Table 1a averages (`final_window`)
    seeds: int = 1
    epochs: int = 1  # training epochs = evaluations per run
    dataset: str = "mnist5k"
    plateau_points: float = 2.0
    softmax_points: float = 2.0

    @property
    def n_1a(self) -> int:
        return self.n_eval * self.window * self.seeds

    @property
    def n_1b(self) -> int:
        return self.n_eval * self.seeds

    # -- Table 1a -----------------------------------------------------------------------------------------------------
    def ensemble_over_single_and_double(self, t: Tables) -> list[Comparison]:
        """Ensemble2Adv's PGD20 accuracy above SingleAdv's and above DoubleAdv's (strict)."""
        table = t["table1a"]
        ensemble = ("Ensemble2Adv", float(table.loc["Ensemble2Adv", "PGD20"]))
        return [
            Comparison.accuracies(ensemble, (name, float(table.loc[name, "PGD20"])), ">", self.n_1a)
            for name in ("SingleAdv", "DoubleAdv")
        ]

    def bigger_over_smaller(self, t: Tables) -> list[Comparison]:
        """DoubleAdv above SingleAdv and Ensemble4Adv above Ensemble2Adv on PGD20 (strict), for the pairs the run has."""
        table = t["table1a"]
        pairs = [(big, small) for small, big in BIGGER if big in table.index and small in table.index]
        if not pairs:
            raise KeyError("SingleAdv/DoubleAdv or Ensemble2Adv/Ensemble4Adv")
        return [
            Comparison.accuracies(
                (big, float(table.loc[big, "PGD20"])), (small, float(table.loc[small, "PGD20"])), ">", self.n_1a
            )
            for big, small in pairs
        ]

    def adversarial_over_plain(self, t: Tables, score: str) -> list[Comparison]:
        """Every adversarially trained system above every non-adversarial one on `score` (strict): one comparison per
        pair, so no system is picked by its measured accuracy."""
        adversarial, plain = _split(t["table1a"], score)
        return [
            Comparison.accuracies((a, adversarial[a]), (p, plain[p]), ">", self.n_1a)
            for a in adversarial.index
            for p in plain.index
        ]

    def pgd_at_most_ifgsm(self, t: Tables) -> list[Comparison]:
        """On every adversarially trained system, PGD5 accuracy not above IFGSM5's ("at least as strong": `<=`, so a
        tie of counts holds)."""
        table = t["table1a"]
        return [
            Comparison.accuracies(
                (f"{name} PGD5", float(table.loc[name, "PGD5"])),
                (f"{name} IFGSM5", float(table.loc[name, "IFGSM5"])),
                "<=",
                self.n_1a,
            )
            for name in _rows(table, ADVERSARIAL_SYSTEMS)
        ]

    # -- Table 1b -----------------------------------------------------------------------------------------------------
    def clean_cost(self, t: Tables) -> Comparison:
        """The adversarially trained systems' mean clean accuracy below the non-adversarial ones' (strict): each mean
        counts every scored image of its group (n_1b x systems), so comparing counts compares the means exactly.

        The paper measures this cost on CIFAR-10; on another dataset the claim does not transfer and the measured
        comparison goes into the reason."""
        adversarial, plain = _split(t["table1b"], "clean")
        comparison = Comparison.accuracies(
            ("adversarial mean", float(adversarial.mean())),
            ("non-adversarial mean", float(plain.mean())),
            "<",
            self.n_1b * len(adversarial),
            self.n_1b * len(plain),
        )
        if self.dataset != "cifar10":
            costs = (
                "costs no clean accuracy"
                if comparison.difference >= 0
                else f"costs {-comparison.difference:.1f} points of clean accuracy"
            )
            raise DoesNotTransfer(
                f"the paper's clean cost (roughly 10 points) is measured on CIFAR-10 and does not transfer to "
                f"{_dataset_name(self.dataset)} at this scale: here adversarial training {costs}: "
                f"{comparison.describe()}; {self.clean_epochs(t)}"
            )
        return comparison

    def clean_epochs(self, t: Tables) -> str:
        """Where Table 1b took each model: its best IFGSM5 evaluation among the final ones."""
        table = t["table1b"]
        epochs = table["epoch"]

        def listed(names: Sequence[str]) -> str:
            return ", ".join(f"{e:g}" for e in epochs[_rows(table, names)])

        return (
            f"Table 1b takes each model at its best IFGSM5 evaluation among the final {self.window} of "
            f"{self.epochs}: epochs {listed(PLAIN_SYSTEMS)} of {epochs.max():g} for the non-adversarial models, "
            f"{listed(ADVERSARIAL_SYSTEMS)} for the adversarial ones"
        )

    # -- Table 1c -----------------------------------------------------------------------------------------------------
    def separate_near_single(self, t: Tables) -> Comparison:
        """Separate2Adv closer to SingleAdv than to Ensemble2Adv under the long PGD, as Separate2Adv against the
        midpoint of the two.

        With accuracies S (Separate2Adv), A (SingleAdv) and E (Ensemble2Adv), |S - A| < |S - E| exactly when
        (E - A)(2S - A - E) < 0: S lies on A's side of the midpoint (A + E) / 2. The two distances share S (and
        Separate2Adv shares a member with SingleAdv), so comparing them as two independent proportions would be
        wrong; S against the midpoint is a comparison of two accuracies: S on `n_eval` images, the midpoint as the
        mean of A and E on 2 x `n_eval` scored images (Agresti-Caffo; its pooled variance is at least the mean of the
        two, so the interval is conservative). Strictly below the midpoint when Ensemble2Adv is at or above SingleAdv
        (the paper's order: 0.52 vs 0.44), above it when the run reverses the order."""
        single, separate, ensemble = self.long_pgd(t)
        return Comparison.accuracies(
            ("Separate2Adv", separate),
            ("midpoint of SingleAdv and Ensemble2Adv", (single + ensemble) / 2),
            "<" if ensemble >= single else ">",
            self.n_eval,
            2 * self.n_eval,
        )

    def long_pgd(self, t: Tables) -> tuple[float, float, float]:
        """SingleAdv, Separate2Adv and Ensemble2Adv accuracy under Table 1c's long PGD."""
        c = t["table1c"]
        single, separate, ensemble = (float(c.loc[n, "PGD"]) for n in ("SingleAdv", "Separate2Adv", "Ensemble2Adv"))
        return single, separate, ensemble

    def separate_distances(self, t: Tables) -> str:
        single, separate, ensemble = self.long_pgd(t)
        return (
            f"Separate2Adv is {separate - single:+.1f} points from SingleAdv and {separate - ensemble:+.1f} from "
            f"Ensemble2Adv"
        )

    # -- Figure 2c ----------------------------------------------------------------------------------------------------
    def plain_below_ten(self, t: Tables) -> list[Comparison]:
        """Every non-adversarial system below 10% at the longest PGD run (Wilson against 10%)."""
        last = _last_step(t["figure2c"])
        steps = int(t["figure2c"]["steps"].max())
        return [
            Comparison.against((f"{name} at {steps} steps", float(last[name])), 10, "<", self.n_eval)
            for name in _rows(last, PLAIN_SYSTEMS)
        ]

    def collapse_note(self, t: Tables) -> str:
        """How much the plain systems still lose over the second half of the curve (is it still falling?)."""
        wide = t["figure2c"].pivot(index="steps", columns="system", values="accuracy")
        last, half = int(wide.index.max()), int(wide.index[len(wide) // 2])
        lost = ", ".join(
            f"{name} {wide.loc[half, name] - wide.loc[last, name]:+.1f}"
            for name in PLAIN_SYSTEMS
            if name in wide.columns
        )
        return f"points lost from {half} to {last} steps: {lost} (the paper: 2-4% after 500 steps)"

    def gap_at_every_step(self, t: Tables) -> list[Comparison]:
        """Ensemble2Adv above SingleAdv (strict) at every number of steps from 1 on (row 0 is the unattacked start)."""
        pair = _steps_pair(t["figure2c"])
        return [
            Comparison.accuracies(
                (f"Ensemble2Adv at {steps} steps", float(row["Ensemble2Adv"])),
                (f"SingleAdv at {steps} steps", float(row["SingleAdv"])),
                ">",
                self.n_eval,
            )
            for steps, row in pair.iterrows()
        ]

    def gap_range(self, t: Tables) -> str:
        pair = _steps_pair(t["figure2c"])
        gap = pair["Ensemble2Adv"] - pair["SingleAdv"]
        return (
            f"Ensemble2Adv - SingleAdv ranges {gap.min():+.1f} to {gap.max():+.1f} points over "
            f"{int(gap.index.min())}-{int(gap.index.max())} steps (the paper: about 7)"
        )

    # -- Figure 3 -----------------------------------------------------------------------------------------------------
    def last_doubling_drop(self, t: Tables) -> Comparison:
        """The strongest attack's (lowest accuracy at the last step count) accuracy at the step count before the last
        minus at the last: under `plateau_points` (strict). The two step counts are separate attacks on the same
        images."""
        wide = _figure3_wide(t["figure3"])
        if len(wide) < 2:
            raise KeyError("two step counts in figure3")
        target = wide.iloc[-1].idxmin()
        (before, last), (a, b) = wide.index[-2:], wide[target].iloc[-2:]
        return Comparison.accuracies(
            (f"{target} at {before} steps", float(a)),
            (f"{target} at {last} steps", float(b)),
            "<",
            self.n_eval,
            threshold=self.plateau_points,
        )

    def plateau_note(self, t: Tables) -> str:
        longest = int(_figure3_wide(t["figure3"]).index[-1])
        return f"the paper's plateau starts at 100 steps and this profile's longest run is {longest} steps"

    # -- Table 2 ------------------------------------------------------------------------------------------------------
    def ensemble_over_members(self, t: Tables) -> list[Comparison]:
        """Ensemble4Adv above each of its members (strict) under the strongest adversary: above the best member, with
        no member picked by its measured accuracy."""
        table = t["table2"]
        members = [i for i in table.index if str(i).startswith("Model")]
        if not members:
            raise KeyError("Model rows in table2")
        ensemble = ("Ensemble", float(table.loc["Ensemble", "adversarial accuracy"]))
        return [
            Comparison.accuracies(ensemble, (m, float(table.loc[m, "adversarial accuracy"])), ">", self.n_eval)
            for m in members
        ]

    def softmax_close(self, t: Tables) -> Comparison:
        """The ensemble and its logit average within `softmax_points` of each other under the strongest adversary."""
        table = t["table2"]
        return Comparison.accuracies(
            ("Ensemble", float(table.loc["Ensemble", "adversarial accuracy"])),
            ("Ensemble (remove softmax)", float(table.loc["Ensemble (remove softmax)", "adversarial accuracy"])),
            "within",
            self.n_eval,
            threshold=self.softmax_points,
        )


def sin_claims(m: SinMeasures) -> list[Claim]:
    """The claims of Sections 5 and A of the paper, each with the measure that tests it."""
    return [
        Claim(
            "ensemble_beats_double",
            "Ensemble2Adv beats SingleAdv and the parameter-matched DoubleAdv on PGD20 "
            "(Table 1a: 0.52 vs 0.43 and 0.44).",
            ("table1a",),
            m.ensemble_over_single_and_double,
        ),
        Claim(
            "more_parameters_help",
            "More parameters help an adversarially trained model: DoubleAdv beats SingleAdv "
            "and Ensemble4Adv beats Ensemble2Adv on PGD20 (Table 1a: 0.44 vs 0.43, 0.53 vs 0.52).",
            ("table1a",),
            m.bigger_over_smaller,
            note=lambda t: "the paper's own gaps are 1 point",
        ),
        Claim(
            "adv_beats_plain",
            "Adversarially trained models beat the non-adversarial ones on PGD20 (Table 1a: the "
            "smallest gap is 22 points).",
            ("table1a",),
            partial(m.adversarial_over_plain, score="PGD20"),
        ),
        Claim(
            "adv_beats_plain_blackbox",
            "Adversarially trained models resist the black-box set better than the "
            "non-adversarial ones (Table 1a: 0.80-0.85 vs 0.22-0.27).",
            ("table1a",),
            partial(m.adversarial_over_plain, score="blackbox"),
        ),
        Claim(
            "pgd_beats_ifgsm",
            "PGD5 (Adam) is at least as strong as IFGSM5 on every adversarially trained model "
            "(Table 1a: 0.44-0.58 vs 0.55-0.66).",
            ("table1a",),
            m.pgd_at_most_ifgsm,
        ),
        Claim(
            "clean_cost",
            "Adversarial training costs clean accuracy (Table 1b: roughly 10 points).",
            ("table1b",),
            m.clean_cost,
            note=m.clean_epochs,
        ),
        Claim(
            "separate_near_single",
            "Separate2Adv (two SingleAdv trained apart) is closer to SingleAdv than to "
            "Ensemble2Adv under the long PGD (Table 1c: 0.47 vs 0.44 and 0.52).",
            ("table1c",),
            m.separate_near_single,
            note=m.separate_distances,
        ),
        Claim(
            "plain_ensembles_collapse",
            "Non-adversarial models fall below 10% accuracy at the longest PGD run "
            "(Figure 2c; the paper: 0.02-0.04 after 500 steps).",
            ("figure2c",),
            m.plain_below_ten,
            note=m.collapse_note,
        ),
        Claim(
            "gap_over_steps",
            "Ensemble2Adv stays above SingleAdv at every number of PGD steps (Figure 2c: a gap of "
            "about 7 points is preserved).",
            ("figure2c",),
            m.gap_at_every_step,
            note=m.gap_range,
        ),
        Claim(
            "plateau",
            f"Attack strength on Ensemble4Adv plateaus by 100 steps (Figure 3): the strongest attack's "
            f"last step count lowers accuracy by under {m.plateau_points:g} points.",
            ("figure3",),
            m.last_doubling_drop,
            note=m.plateau_note,
        ),
        Claim(
            "ensemble_beats_members",
            "Ensemble4Adv is more robust than its best member under the strongest adversary (Table 2: 49.7% vs 43.9%).",
            ("table2",),
            m.ensemble_over_members,
        ),
        Claim(
            "remove_softmax_close",
            f"Removing the softmax (averaging logits) changes the ensemble's adversarial "
            f"accuracy by about a point (Table 2: 49.7% vs 48.7%): within {m.softmax_points:g} points.",
            ("table2",),
            m.softmax_close,
        ),
    ]


def final_window(evaluations: int) -> int:
    """How many final evaluations Table 1 reads: the paper's "last 10 evaluation steps" of its 1,000 interpolated time
    steps (Section 4.3), i.e. the final 1% of training; a run with fewer evaluations takes its final 1%, at least one."""
    if evaluations < 1:
        raise ValueError(f"evaluations must be >= 1, got {evaluations}")
    return min(PAPER_WINDOW, max(1, round(evaluations * PAPER_WINDOW / PAPER_TIME_STEPS)))


def last_evaluations(curves: pd.DataFrame, systems: Sequence[str], last: int | None = None) -> pd.DataFrame:
    """Table 1a: the mean of the final evaluations of every score (seed-averaged curves), systems in order; `last`
    evaluations, or `final_window` of the run's."""
    tail = curves.groupby(["system", "score"], sort=False).apply(
        lambda g: g.sort_values("epoch")["accuracy"].tail(last or final_window(len(g))).mean(), include_groups=False
    )
    return tail.unstack("score")[list(SCORES)].reindex([s for s in systems if s in tail.index.get_level_values(0)])


def best_ifgsm_evaluation(curves: pd.DataFrame, last: int | None = None) -> pd.DataFrame:
    """Table 1b: every score at the evaluation with the best IFGSM5 accuracy (seed-averaged curves) among the final
    `last` (or `final_window`) ones, the latest on ties: an argmax over all of a short run picks the noise of its
    untrained first epochs (a plain model's IFGSM5 is a few images)."""
    rows = {}
    for name, group in curves.groupby("system", sort=False):
        wide = group.pivot(index="epoch", columns="score", values="accuracy").sort_index()
        final = wide.tail(last or final_window(len(wide)))
        epoch = final["IFGSM5"][::-1].idxmax()
        rows[name] = {"epoch": epoch, **final.loc[epoch, list(SCORES)].to_dict()}
    return pd.DataFrame(rows).T


def _rows(table: pd.DataFrame | pd.Series, names: Sequence[str]) -> list[str]:
    """The systems of `names` the table has (KeyError, i.e. not measured, if none)."""
    present = [n for n in names if n in table.index]
    if not present:
        raise KeyError(" or ".join(names))
    return present


def _split(table: pd.DataFrame, column: str) -> tuple[pd.Series, pd.Series]:
    """`column` of the adversarially trained systems and of the non-adversarial ones (KeyError if a group is absent)."""
    return table.loc[_rows(table, ADVERSARIAL_SYSTEMS), column], table.loc[_rows(table, PLAIN_SYSTEMS), column]


def _steps_pair(curve: pd.DataFrame) -> pd.DataFrame:
    """Ensemble2Adv and SingleAdv accuracy per number of steps of Figure 2c, from 1 step on (row 0 is the start)."""
    wide = curve.pivot(index="steps", columns="system", values="accuracy")
    return wide.loc[wide.index >= 1, ["Ensemble2Adv", "SingleAdv"]]


def _dataset_name(name: str) -> str:
    return "MNIST" if name.startswith("mnist") else name


def _last_step(curve: pd.DataFrame) -> pd.Series:
    """Accuracy per system at the longest attack of a steps curve (Figure 2c's long format)."""
    return curve[curve.steps == curve.steps.max()].set_index("system")["accuracy"]


def _figure3_wide(figure3: pd.DataFrame) -> pd.DataFrame:
    return figure3.pivot(index="steps", columns="attack on", values="accuracy").sort_index()
