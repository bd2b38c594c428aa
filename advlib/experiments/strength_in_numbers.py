"""The experiments of "Strength in Numbers" (Grefenstette et al. 2018) as one `Study`.

Every system of Figure 1 is trained by `advlib.train.fit` on a `ClassifierStep` (the ensemble as one model; Algorithm 1
when adversarial) and evaluated after every epoch by Section 4.3's job (clean, the white-box attacks, the black-box set
made by PGD against a separately trained logit-averaged ensemble of two other architectures). Trained systems and
their evaluation histories are cached together; the tables evaluated after training (1c, 2, Figures 2c and 3) are
cached under the keys of the systems they evaluate, so a rerun only loads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..attacks.pgd import ADAM_RULE
from ..cache import Cache, CacheKey, Trained, cached_frames, cached_model
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
from ..report import Claim, compare_accuracies, correct_count, proportion_gap
from ..train import ClassifierStep, fit, train_classifier
from .base import Study, artifact

SCORES = ("clean", "IFGSM5", "PGD5", "PGD20", "blackbox")
PAPER_TIME_STEPS = 1000  # Section 4.3: every evaluation curve is interpolated onto 1,000 time steps
PAPER_WINDOW = 10  # Table 1a: "the average of the last 10 evaluation steps"
APPENDIX_SYSTEM = "Ensemble4Adv"  # the ensemble Appendix A (Table 2, Figure 3) dissects
Tables = Mapping[str, Any]
ADVERSARIAL_SYSTEMS = ("SingleAdv", "DoubleAdv", "Ensemble2Adv", "Ensemble4Adv")
PLAIN_SYSTEMS = ("Baseline", "Ensemble2", "Ensemble4")


class EnsembleStudy(Study):
    """One notebook run: the black-box set, every system for every seed, and the paper's tables from them."""

    stem = "strength_in_numbers"
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
    def claims(self) -> list[Claim]:  # noqa: C901, PLR0915 -- a table of claim declarations: mccabe adds up its small per-claim closures
        """The claims of Sections 5 and A of the paper. Each compares accuracies as counts of correct images (Table 1a
        scores images x final evaluations x seeds, Table 1b images x seeds, the others the `n_eval` images once), so
        equal counts tie. A miss's reason gives the gap and whether it is inside the sampling noise of the `n_eval`
        evaluation images (Agresti-Caffo 95%), plus what the cited table shows about the cause."""
        n_eval, plateau_points, softmax_points = self.p.n_eval, self.plateau_points, self.softmax_points
        window, seeds = final_window(self.p.train.epochs), len(self.p.seeds)
        n_1a, n_1b = n_eval * window * seeds, n_eval * seeds
        dataset = "MNIST" if self.p.data.name.startswith("mnist") else self.p.data.name

        def above(a: float, b: float, n: int = n_eval) -> bool:
            """Accuracy a beats b by at least one image."""
            return compare_accuracies(a, b, n) > 0

        def count_gap(a: float, b: float, n: int = n_eval) -> int:
            return correct_count(a, n) - correct_count(b, n)

        def within(images: int, points: float, n: int = n_eval) -> bool:
            """Whether `images` of `n` are at most `points` percent (exactly: images x 100 <= points x n)."""
            return abs(images) * 100 <= points * n

        def pgd20(t: Tables, name: str) -> float:
            return float(t["table1a"].loc[name, "PGD20"])

        def gap(a: float, b: float) -> str:
            return proportion_gap(a, b, n_eval)

        def double_pair(t: Tables) -> tuple[float, float]:
            return pgd20(t, "Ensemble2Adv"), max(pgd20(t, "SingleAdv"), pgd20(t, "DoubleAdv"))

        def bigger_pairs(t: Tables) -> list[tuple[str, str]]:
            pairs = [
                (a, b)
                for a, b in (("SingleAdv", "DoubleAdv"), ("Ensemble2Adv", "Ensemble4Adv"))
                if a in t["table1a"].index and b in t["table1a"].index
            ]
            if not pairs:
                raise KeyError("SingleAdv/DoubleAdv or Ensemble2Adv/Ensemble4Adv")
            return pairs

        def split(t: Tables, table: str, column: str) -> tuple[pd.Series, pd.Series]:
            frame = t[table]
            return frame.loc[_rows(frame, ADVERSARIAL_SYSTEMS), column], frame.loc[_rows(frame, PLAIN_SYSTEMS), column]

        def pgd_vs_ifgsm(t: Tables) -> pd.DataFrame:
            return t["table1a"].loc[_rows(t["table1a"], ADVERSARIAL_SYSTEMS), ["IFGSM5", "PGD5"]]

        def clean_counts(t: Tables) -> tuple[int, int]:
            """The adversarial and plain models' summed correct counts, each scaled by the other group's size (so
            comparing them compares the two mean accuracies exactly)."""
            adv, plain = split(t, "table1b", "clean")
            return (
                sum(correct_count(a, n_1b) for a in adv) * len(plain),
                sum(correct_count(a, n_1b) for a in plain) * len(adv),
            )

        def clean_reason(t: Tables) -> str:
            adv, plain = split(t, "table1b", "clean")
            epochs = t["table1b"]["epoch"]
            text = (
                f"Table 1b takes each model at its best IFGSM5 evaluation among the final {window} of "
                f"{self.p.train.epochs}: epochs {', '.join(f'{e:g}' for e in epochs[plain.index])} of "
                f"{epochs.max():g} for the non-adversarial models, {', '.join(f'{e:g}' for e in epochs[adv.index])} "
                f"for the adversarial ones; " + gap(adv.mean(), plain.mean())
            )
            if self.p.data.name != "cifar10":
                text += (
                    f"; the paper's clean cost is measured on CIFAR-10 and does not transfer to {dataset} at this "
                    f"scale: here adversarial training costs no clean accuracy at the final evaluations"
                )
            return text

        def separate(t: Tables) -> tuple[float, float, float]:
            c = t["table1c"]
            single, sep, ens = (float(c.loc[n, "PGD"]) for n in ("SingleAdv", "Separate2Adv", "Ensemble2Adv"))
            return single, sep, ens

        def separate_reason(t: Tables) -> str:
            single, sep, ens = separate(t)
            return (
                f"Separate2Adv is {sep - single:+.1f} points from SingleAdv and {sep - ens:+.1f} from Ensemble2Adv; "
                f"Separate2Adv vs Ensemble2Adv: " + gap(sep, ens)
            )

        def collapse_reason(t: Tables) -> str:
            wide = t["figure2c"].pivot(index="steps", columns="system", values="accuracy")
            last, half = int(wide.index.max()), int(wide.index[len(wide) // 2])
            plain = [n for n in PLAIN_SYSTEMS if n in wide.columns and wide.loc[last, n] >= 10]
            return (
                "; ".join(
                    f"{n} {wide.loc[last, n]:.1f}% at {last} steps, {wide.loc[last, n] - 10:.1f} points above 10%, "
                    f"{wide.loc[half, n] - wide.loc[last, n]:+.1f} points lost from {half} to {last} steps"
                    for n in plain
                )
                + " (the paper: 2-4% after 500 steps)"
            )

        def steps_pair(t: Tables) -> pd.DataFrame:
            """Ensemble2Adv and SingleAdv accuracy per number of steps, from 1 step on (row 0 is the start)."""
            wide = t["figure2c"].pivot(index="steps", columns="system", values="accuracy")
            return wide.loc[wide.index >= 1, ["Ensemble2Adv", "SingleAdv"]]

        def steps_gap(t: Tables) -> pd.Series:
            pair = steps_pair(t)
            return pair["Ensemble2Adv"] - pair["SingleAdv"]

        def steps_reason(t: Tables) -> str:
            at = int(steps_gap(t).idxmin())
            row = steps_pair(t).loc[at]
            return f"at {at} steps: " + gap(float(row["Ensemble2Adv"]), float(row["SingleAdv"]))

        def plateau(t: Tables) -> tuple[int, int, float, str]:
            wide = _figure3_wide(t["figure3"])
            if len(wide) < 2:
                raise KeyError("two step counts in figure3")
            strongest = wide.iloc[-1].idxmin()
            return (
                int(wide.index[-2]),
                int(wide.index[-1]),
                float(wide[strongest].iloc[-2] - wide[strongest].iloc[-1]),
                strongest,
            )

        def plateau_images(t: Tables) -> int:
            """Images the strongest attack's last step count breaks beyond the one before."""
            wide = _figure3_wide(t["figure3"])
            target = plateau(t)[3]
            return count_gap(float(wide[target].iloc[-2]), float(wide[target].iloc[-1]))

        def plateau_reason(t: Tables) -> str:
            wide = _figure3_wide(t["figure3"])
            first, last, drop, target = plateau(t)
            return (
                f"the attack on the {target} still lowers accuracy by {drop:.1f} points from {first} to {last} steps; "
                f"the paper's plateau starts at 100 steps and this profile's longest run is {last}; "
                + gap(float(wide[target].iloc[-1]), float(wide[target].iloc[-2]))
            )

        def members(t: Tables) -> tuple[float, float]:
            table = t["table2"]
            member_rows = [i for i in table.index if str(i).startswith("Model")]
            return float(table.loc["Ensemble", "adversarial accuracy"]), float(
                table.loc[member_rows, "adversarial accuracy"].max()
            )

        def softmax(t: Tables) -> tuple[float, float]:
            table = t["table2"]
            return float(table.loc["Ensemble", "adversarial accuracy"]), float(
                table.loc["Ensemble (remove softmax)", "adversarial accuracy"]
            )

        def list_pgd20(t: Tables, names: Sequence[str]) -> str:
            return ", ".join(f"{n} {pgd20(t, n):.1f}%" for n in names if n in t["table1a"].index)

        return [
            Claim(
                "ensemble_beats_double",
                "Ensemble2Adv beats SingleAdv and the parameter-matched DoubleAdv on PGD20 "
                "(Table 1a: 0.52 vs 0.43 and 0.44).",
                ("table1a",),
                lambda t: above(*double_pair(t), n_1a),
                lambda t: list_pgd20(t, ("SingleAdv", "DoubleAdv", "Ensemble2Adv")),
                lambda t: "Ensemble2Adv vs the better single model: " + gap(*double_pair(t)),
            ),
            Claim(
                "more_parameters_help",
                "More parameters help an adversarially trained model: DoubleAdv beats SingleAdv "
                "and Ensemble4Adv beats Ensemble2Adv on PGD20 (Table 1a: 0.44 vs 0.43, 0.53 vs 0.52).",
                ("table1a",),
                lambda t: all(above(pgd20(t, big), pgd20(t, small), n_1a) for small, big in bigger_pairs(t)),
                lambda t: "; ".join(
                    f"{small} {pgd20(t, small):.1f}% -> {big} {pgd20(t, big):.1f}%" for small, big in bigger_pairs(t)
                ),
                lambda t: (
                    "; ".join(
                        f"{big} vs {small}: " + gap(pgd20(t, big), pgd20(t, small)) for small, big in bigger_pairs(t)
                    )
                    + " (the paper's own gaps are 1 point)"
                ),
            ),
            Claim(
                "adv_beats_plain",
                "Adversarially trained models beat the non-adversarial ones on PGD20 (Table 1a: the "
                "smallest gap is 22 points).",
                ("table1a",),
                lambda t: above(split(t, "table1a", "PGD20")[0].min(), split(t, "table1a", "PGD20")[1].max(), n_1a),
                lambda t: "worst adversarial {:.1f}% vs best non-adversarial {:.1f}%".format(
                    split(t, "table1a", "PGD20")[0].min(), split(t, "table1a", "PGD20")[1].max()
                ),
                lambda t: gap(split(t, "table1a", "PGD20")[0].min(), split(t, "table1a", "PGD20")[1].max()),
            ),
            Claim(
                "adv_beats_plain_blackbox",
                "Adversarially trained models resist the black-box set better than the "
                "non-adversarial ones (Table 1a: 0.80-0.85 vs 0.22-0.27).",
                ("table1a",),
                lambda t: above(
                    split(t, "table1a", "blackbox")[0].min(), split(t, "table1a", "blackbox")[1].max(), n_1a
                ),
                lambda t: "worst adversarial {:.1f}% vs best non-adversarial {:.1f}%".format(
                    split(t, "table1a", "blackbox")[0].min(), split(t, "table1a", "blackbox")[1].max()
                ),
                lambda t: gap(split(t, "table1a", "blackbox")[0].min(), split(t, "table1a", "blackbox")[1].max()),
            ),
            Claim(
                "pgd_beats_ifgsm",
                "PGD5 (Adam) is at least as strong as IFGSM5 on every adversarially trained model "
                "(Table 1a: 0.44-0.58 vs 0.55-0.66).",
                ("table1a",),
                lambda t: not any(above(r.PGD5, r.IFGSM5, n_1a) for _, r in pgd_vs_ifgsm(t).iterrows()),
                lambda t: "; ".join(f"{n} {r.PGD5:.1f}% vs {r.IFGSM5:.1f}%" for n, r in pgd_vs_ifgsm(t).iterrows()),
                lambda t: "; ".join(
                    f"{n}: " + gap(r.PGD5, r.IFGSM5)
                    for n, r in pgd_vs_ifgsm(t).iterrows()
                    if above(r.PGD5, r.IFGSM5, n_1a)
                ),
            ),
            Claim(
                "clean_cost",
                "Adversarial training costs clean accuracy (Table 1b: roughly 10 points).",
                ("table1b",),
                lambda t: clean_counts(t)[0] < clean_counts(t)[1],
                lambda t: "mean clean: adversarial {:.1f}% vs non-adversarial {:.1f}%".format(
                    split(t, "table1b", "clean")[0].mean(), split(t, "table1b", "clean")[1].mean()
                ),
                clean_reason,
            ),
            Claim(
                "separate_near_single",
                "Separate2Adv (two SingleAdv trained apart) is closer to SingleAdv than to "
                "Ensemble2Adv under the long PGD (Table 1c: 0.47 vs 0.44 and 0.52).",
                ("table1c",),
                lambda t: (
                    abs(count_gap(separate(t)[1], separate(t)[0])) < abs(count_gap(separate(t)[1], separate(t)[2]))
                ),
                lambda t: "SingleAdv {:.1f}%, Separate2Adv {:.1f}%, Ensemble2Adv {:.1f}%".format(*separate(t)),
                separate_reason,
            ),
            Claim(
                "plain_ensembles_collapse",
                "Non-adversarial models fall below 10% accuracy at the longest PGD run "
                "(Figure 2c; the paper: 0.02-0.04 after 500 steps).",
                ("figure2c",),
                lambda t: all(
                    correct_count(a, n_eval) * 100 < 10 * n_eval
                    for a in _last_step(t["figure2c"])[_rows(_last_step(t["figure2c"]), PLAIN_SYSTEMS)]
                ),
                lambda t: ", ".join(f"{n} {a:.1f}%" for n, a in _last_step(t["figure2c"]).items()),
                collapse_reason,
            ),
            Claim(
                "gap_over_steps",
                "Ensemble2Adv stays above SingleAdv at every number of PGD steps (Figure 2c: a gap of "
                "about 7 points is preserved).",
                ("figure2c",),
                lambda t: all(above(r["Ensemble2Adv"], r["SingleAdv"]) for _, r in steps_pair(t).iterrows()),
                lambda t: (
                    f"Ensemble2Adv - SingleAdv: {steps_gap(t).min():+.1f} to {steps_gap(t).max():+.1f} points "
                    f"over 1-{int(steps_gap(t).index.max())} steps"
                ),
                steps_reason,
            ),
            Claim(
                "plateau",
                f"Attack strength on Ensemble4Adv plateaus by 100 steps (Figure 3): the strongest attack's "
                f"last step count lowers accuracy by under {plateau_points:g} points.",
                ("figure3",),
                lambda t: plateau_images(t) * 100 < plateau_points * n_eval,
                lambda t: "{3}: {2:.1f} points from {0} to {1} steps".format(*plateau(t)),
                plateau_reason,
            ),
            Claim(
                "ensemble_beats_members",
                "Ensemble4Adv is more robust than its best member under the strongest adversary (Table 2: 49.7% vs 43.9%).",
                ("table2",),
                lambda t: above(*members(t)),
                lambda t: "ensemble {:.1f}% vs best member {:.1f}%".format(*members(t)),
                lambda t: gap(*members(t)),
            ),
            Claim(
                "remove_softmax_close",
                f"Removing the softmax (averaging logits) changes the ensemble's adversarial "
                f"accuracy by about a point (Table 2: 49.7% vs 48.7%): within {softmax_points:g} points.",
                ("table2",),
                lambda t: within(count_gap(*softmax(t)), softmax_points),
                lambda t: "ensemble {:.1f}% vs logit average {:.1f}%".format(*softmax(t)),
                lambda t: gap(*softmax(t)),
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


def _last_step(curve: pd.DataFrame) -> pd.Series:
    """Accuracy per system at the longest attack of a steps curve (Figure 2c's long format)."""
    return curve[curve.steps == curve.steps.max()].set_index("system")["accuracy"]


def _figure3_wide(figure3: pd.DataFrame) -> pd.DataFrame:
    return figure3.pivot(index="steps", columns="attack on", values="accuracy").sort_index()
