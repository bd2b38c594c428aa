"""The experiments of "Strength in Numbers" (Grefenstette et al. 2018) as cached, seeded runs.

Every system of Figure 1 is trained with `advlib.train.fit` (the ensemble as one model; Algorithm 1 when
adversarial) and evaluated after every epoch by Section 4.3's job (clean, the white-box attacks, the black-box set
made by PGD against a separately trained logit-averaged ensemble of two other architectures). Trained systems and
their evaluation histories are cached together; the tables evaluated after training (1c, 2, Figures 2c and 3) are
cached under the keys of the systems they evaluate, so a rerun only loads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import pandas as pd
import torch
from torch import Tensor, nn

from ..attacks.pgd import ADAM_RULE
from ..cache import Cache, cached_frames, cached_model
from ..data import dataset_info, load_dataset, to_tensors
from ..defenses.ensemble_at import (
    average_seeds,
    build_ensemble,
    evaluation_scores,
    member_mean_loss,
    robust_accuracy,
    strongest_attack,
    system_spec,
    with_mode,
)
from ..evaluate import accuracy, accuracy_vs_steps, attack
from ..models import Ensemble, count_parameters, create_model_for
from ..params import StrengthInNumbersParams, TrainSpec
from ..report import Claim, proportion_gap
from ..train import fit, train_classifier

SCORES = ("clean", "IFGSM5", "PGD5", "PGD20", "blackbox")


class EnsembleStudy:
    """One notebook run: the black-box set, every system for every seed, and the paper's tables from them."""

    def __init__(
        self, p: StrengthInNumbersParams, device: torch.device | str = "cpu", cache: Cache | None = None
    ) -> None:
        self.p, self.device, self.cache = p, torch.device(device), cache or Cache()
        self.info = dataset_info(p.data.name)
        self.train_set = load_dataset(p.data.name, "train", n=p.data.n_train, seed=p.seed, download=p.data.download)
        x, y = to_tensors(load_dataset(p.data.name, "test", n=p.n_eval, seed=p.seed, download=p.data.download))
        self.x, self.y = x.to(self.device), y.to(self.device)
        self._blackbox: tuple[Tensor, Tensor, str] | None = None
        self._systems: dict[tuple[str, int], tuple[Ensemble, list[dict[str, Any]]]] = {}

    # -- models ----------------------------------------------------------------------------
    def builder(self, wide: bool = False):
        options = {**self.p.train.model_options, **(self.p.double_options if wide else {})}
        return lambda: create_model_for(self.p.train.model, self.info, **options)

    def blackbox(self) -> tuple[Tensor, Tensor]:
        """The precomputed black-box set: blackbox_attack against the logit-averaged ensemble of the source models."""
        if self._blackbox is None:
            sources = [
                train_classifier(spec, self.p.data, seed=self.p.seed + i, device=self.device, cache=self.cache)
                for i, spec in enumerate(self.p.blackbox_sources)
            ]
            source = Ensemble([s.model for s in sources], mode="logit").eval()
            key = "+".join(s.key for s in sources) + f"|pgd-{ADAM_RULE}"  # the attack's Adam rule changes the set
            result = attack(self.p.blackbox_attack, source, self.x, self.y, model_key=key, cache=self.cache)
            self._blackbox = (result.x_adv, self.y, key)
        return self._blackbox[0], self._blackbox[1]

    def system(self, name: str, seed: int) -> tuple[Ensemble, list[dict[str, Any]]]:
        """A trained system and its per-epoch evaluation history (cached); Separate2Adv = two SingleAdv runs
        (seeds seed and seed + 1000) ensembled at test time, with no history of its own."""
        if (name, seed) in self._systems:
            return self._systems[(name, seed)]
        spec = system_spec(name)
        if spec.separate:
            members = [self.system("SingleAdv", seed + 1000 * j)[0].members[0] for j in range(spec.members)]
            self._systems[(name, seed)] = (Ensemble(members).eval(), [])
            return self._systems[(name, seed)]
        model = build_ensemble(self.builder(spec.wide), spec.members, seed).to(self.device)
        train_spec = self._train_spec(name)
        blackbox_x, blackbox_y = self.blackbox()
        key = self.system_key(name, seed)

        def evaluate_epoch(epoch: int, module: nn.Module, record: dict[str, Any]) -> None:
            record.update(evaluation_scores(module, self.x, self.y, self.p.eval_attacks, (blackbox_x, blackbox_y)))
            module.train()

        def build(module: nn.Module, checkpoint_dir) -> dict[str, Any]:
            return fit(
                module,
                self.train_set,
                train_spec,
                seed=seed,
                device=self.device,
                checkpoint_dir=checkpoint_dir,
                on_epoch=evaluate_epoch,
                desc=f"train {name} (seed {seed})",
            )

        model, meta = cached_model("ensemble_at", key, model, build, cache=self.cache, label=f"{name} (seed {seed})")
        self._systems[(name, seed)] = (model.eval(), meta["history"])
        return self._systems[(name, seed)]

    def _train_spec(self, name: str) -> TrainSpec:
        """The training spec of system `name`: Algorithm 1 with the paper's rho when adversarial, plain training else."""
        adversarial = system_spec(name).adversarial
        return self.p.train.model_copy(
            update={
                "adversary": self.p.train_attack if adversarial else None,
                "adv_weight": self.p.rho / (1 + self.p.rho) if adversarial else 1.0,
            }
        )

    def system_key(self, name: str, seed: int) -> dict[str, Any]:
        """What determines a trained system (its cache key); a separately trained one is the keys of its members."""
        spec = system_spec(name)
        if spec.separate:
            return {
                "separate": name,
                "members": [self.system_key("SingleAdv", seed + 1000 * j) for j in range(spec.members)],
            }
        self.blackbox()
        return {
            "system": name,
            "members": spec.members,
            "wide": spec.wide,
            "model": [self.p.train.model, self.p.train.model_options, self.p.double_options if spec.wide else {}],
            "train": self._train_spec(name).model_dump(mode="json"),
            "seed": seed,
            "data": self.p.data.model_dump(mode="json"),
            "eval": {
                "n": self.p.n_eval,
                "attacks": {k: v.model_dump(mode="json") for k, v in self.p.eval_attacks.items()},
                "blackbox": cast(tuple[Tensor, Tensor, str], self._blackbox)[2],  # set by self.blackbox() above
                "blackbox_attack": self.p.blackbox_attack.model_dump(mode="json"),
                "pgd_adam": ADAM_RULE,
            },
        }

    def _cached_tables(self, table: str, systems: list[str], settings: Any, build) -> tuple[pd.DataFrame, ...]:
        """`build()`'s tables, cached under the keys of `systems` (seed p.seeds[0]), the test images and `settings`."""
        seed = self.p.seeds[0]
        key = {
            "table": table,
            "systems": {name: self.system_key(name, seed) for name in systems},
            "eval": [self.p.data.model_dump(mode="json"), self.p.n_eval, self.p.seed],
            "settings": settings,
            "pgd_adam": ADAM_RULE,
        }
        return cached_frames("ensemble_tables", key, build, cache=self.cache, label=f"{table} ({', '.join(systems)})")

    # -- the paper's artifacts -------------------------------------------------------------
    def parameter_counts(self) -> pd.DataFrame:
        """Parameters of every system (members x architecture)."""
        rows = []
        for name in self.p.systems:
            spec = system_spec(name)
            one = count_parameters(self.builder(spec.wide)())
            rows.append({"system": name, "members": spec.members, "parameters": spec.members * one})
        return pd.DataFrame(rows).set_index("system")

    def curves(self) -> pd.DataFrame:
        """Per system and score: the seed-averaged evaluation curve over epochs (outliers removed), long format."""
        rows = []
        for name in self.p.systems:
            histories = [self.system(name, seed)[1] for seed in self.p.seeds]
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

    def table1a(self, curves: pd.DataFrame, last: int = 10) -> pd.DataFrame:
        """Mean of the last `last` evaluations of every score (seed-averaged curves)."""
        tail = curves.groupby(["system", "score"], sort=False).apply(
            lambda g: g.sort_values("epoch")["accuracy"].tail(last).mean(), include_groups=False
        )
        return tail.unstack("score")[list(SCORES)].reindex(
            [s for s in self.p.systems if s in tail.index.get_level_values(0)]
        )

    def table1b(self, curves: pd.DataFrame) -> pd.DataFrame:
        """Every score at the epoch of the best IFGSM5 accuracy (seed-averaged curves)."""
        rows = {}
        for name, group in curves.groupby("system", sort=False):
            wide = group.pivot(index="epoch", columns="score", values="accuracy")
            rows[name] = {"epoch": wide["IFGSM5"].idxmax(), **wide.loc[wide["IFGSM5"].idxmax(), list(SCORES)].to_dict()}
        return pd.DataFrame(rows).T

    def table1c(self) -> pd.DataFrame:
        """Accuracy after the long attacks (the paper: 500 steps), final weights of seed p.seeds[0], every system."""
        seed = self.p.seeds[0]

        def build() -> tuple[pd.DataFrame]:
            table = {
                name: {
                    label: robust_accuracy(self.system(name, seed)[0], spec, self.x, self.y)
                    for label, spec in self.p.long_attacks.items()
                }
                for name in self.p.systems
            }
            return (pd.DataFrame(table).T,)

        settings = {k: v.model_dump(mode="json") for k, v in self.p.long_attacks.items()}
        return self._cached_tables("table1c", list(self.p.systems), settings, build)[0]

    def steps_curves(self) -> pd.DataFrame:
        """Figure 2c: accuracy vs PGD steps for every system, one recording run each (seed p.seeds[0])."""

        def build() -> tuple[pd.DataFrame]:
            frames = []
            for name in self.p.systems:
                model = self.system(name, self.p.seeds[0])[0]
                frame = accuracy_vs_steps(model, self.x, self.y, self.p.steps_curve.attack, self.p.steps_curve.steps)
                frames.append(frame.assign(system=name))
            return (pd.concat(frames, ignore_index=True),)

        return self._cached_tables("figure2c", list(self.p.systems), self.p.steps_curve.model_dump(mode="json"), build)[
            0
        ]

    def table2(self, name: str = "Ensemble4Adv") -> tuple[pd.DataFrame, pd.DataFrame]:
        """Appendix A.1: each member of `name`, the ensemble and the logit-averaged ensemble under the strongest
        adversary; plus every (steps, accuracy) the step doubling tried."""
        return self._cached_tables(
            "table2", [name], self.p.strongest.model_dump(mode="json"), lambda: self._table2(name)
        )

    def _table2(self, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        ensemble = self.system(name, self.p.seeds[0])[0]
        models = {f"Model {i + 1}": member for i, member in enumerate(ensemble.members)}
        models["Ensemble"] = ensemble
        models["Ensemble (remove softmax)"] = with_mode(ensemble, "logit").eval()
        spec = self.p.strongest.attack.model_dump()
        rows, tried = [], []
        for label, model in models.items():
            clean = 100 * accuracy(model, self.x, self.y)
            adversarial, steps, history = strongest_attack(
                model,
                self.x,
                self.y,
                spec,
                start_steps=self.p.strongest.start_steps,
                max_steps=self.p.strongest.max_steps,
            )
            rows.append({"model": label, "clean accuracy": clean, "adversarial accuracy": adversarial, "steps": steps})
            tried += [{"model": label, "steps": s, "accuracy": a} for s, a in history]
        return pd.DataFrame(rows).set_index("model"), pd.DataFrame(tried)

    def figure3(self, name: str = "Ensemble4Adv") -> pd.DataFrame:
        """Appendix A.2: accuracy of the ensemble vs attack steps when PGD (margin loss) targets the ensemble, the
        mean loss across members (transfer), or the logit-averaged ensemble (remove softmax)."""
        settings = {"strongest": self.p.strongest.model_dump(mode="json"), "steps": list(self.p.transfer_steps)}
        return self._cached_tables("figure3", [name], settings, lambda: (self._figure3(name),))[0]

    def _figure3(self, name: str) -> pd.DataFrame:
        ensemble = self.system(name, self.p.seeds[0])[0]
        targets = {
            "ensemble": ensemble,
            "mean member loss (transfer)": member_mean_loss(list(ensemble.members)).eval(),
            "remove softmax": with_mode(ensemble, "logit").eval(),
        }
        base = self.p.strongest.attack.model_dump()
        rows = []
        for steps in self.p.transfer_steps:
            spec = {**base, "steps": steps, "options": {**base.get("options", {}), "loss": "margin"}}
            for label, source in targets.items():
                x_adv = attack(spec, source, self.x, self.y).x_adv
                rows.append({"attack on": label, "steps": steps, "accuracy": 100 * accuracy(ensemble, x_adv, self.y)})
        return pd.DataFrame(rows)


# -- the paper's claims, each checked on the tables it cites -------------------------------------------------------
Tables = Mapping[str, Any]
ADVERSARIAL_SYSTEMS = ("SingleAdv", "DoubleAdv", "Ensemble2Adv", "Ensemble4Adv")
PLAIN_SYSTEMS = ("Baseline", "Ensemble2", "Ensemble4")


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


def claims(n_eval: int, plateau_points: float = 2.0, softmax_points: float = 2.0) -> list[Claim]:
    """The claims of Sections 5 and A of the paper. A miss's reason gives the gap and whether it is inside the sampling
    noise of the `n_eval` evaluation images (Agresti-Caffo 95%), plus what the cited table shows about the cause."""

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

    def clean_reason(t: Tables) -> str:
        adv, plain = split(t, "table1b", "clean")
        epochs = t["table1b"]["epoch"]
        return (
            f"Table 1b takes each model at its best IFGSM5 evaluation: epochs "
            f"{', '.join(f'{e:g}' for e in epochs[plain.index])} of {epochs.max():g} for the non-adversarial models "
            f"(before their clean accuracy converged), {', '.join(f'{e:g}' for e in epochs[adv.index])} for the "
            f"adversarial ones; " + gap(adv.mean(), plain.mean())
        )

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
            lambda t: double_pair(t)[0] > double_pair(t)[1],
            lambda t: list_pgd20(t, ("SingleAdv", "DoubleAdv", "Ensemble2Adv")),
            lambda t: "Ensemble2Adv vs the better single model: " + gap(*double_pair(t)),
        ),
        Claim(
            "more_parameters_help",
            "More parameters help an adversarially trained model: DoubleAdv beats SingleAdv "
            "and Ensemble4Adv beats Ensemble2Adv on PGD20 (Table 1a: 0.44 vs 0.43, 0.53 vs 0.52).",
            ("table1a",),
            lambda t: all(pgd20(t, big) > pgd20(t, small) for small, big in bigger_pairs(t)),
            lambda t: "; ".join(
                f"{small} {pgd20(t, small):.1f}% -> {big} {pgd20(t, big):.1f}%" for small, big in bigger_pairs(t)
            ),
            lambda t: (
                "; ".join(f"{big} vs {small}: " + gap(pgd20(t, big), pgd20(t, small)) for small, big in bigger_pairs(t))
                + " (the paper's own gaps are 1 point)"
            ),
        ),
        Claim(
            "adv_beats_plain",
            "Adversarially trained models beat the non-adversarial ones on PGD20 (Table 1a: the "
            "smallest gap is 22 points).",
            ("table1a",),
            lambda t: split(t, "table1a", "PGD20")[0].min() > split(t, "table1a", "PGD20")[1].max(),
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
            lambda t: split(t, "table1a", "blackbox")[0].min() > split(t, "table1a", "blackbox")[1].max(),
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
            lambda t: bool((pgd_vs_ifgsm(t)["PGD5"] <= pgd_vs_ifgsm(t)["IFGSM5"]).all()),
            lambda t: "; ".join(f"{n} {r.PGD5:.1f}% vs {r.IFGSM5:.1f}%" for n, r in pgd_vs_ifgsm(t).iterrows()),
            lambda t: "; ".join(
                f"{n}: " + gap(r.PGD5, r.IFGSM5) for n, r in pgd_vs_ifgsm(t).iterrows() if r.PGD5 > r.IFGSM5
            ),
        ),
        Claim(
            "clean_cost",
            "Adversarial training costs clean accuracy (Table 1b: roughly 10 points).",
            ("table1b",),
            lambda t: split(t, "table1b", "clean")[0].mean() < split(t, "table1b", "clean")[1].mean(),
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
            lambda t: abs(separate(t)[1] - separate(t)[0]) < abs(separate(t)[1] - separate(t)[2]),
            lambda t: "SingleAdv {:.1f}%, Separate2Adv {:.1f}%, Ensemble2Adv {:.1f}%".format(*separate(t)),
            separate_reason,
        ),
        Claim(
            "plain_ensembles_collapse",
            "Non-adversarial models fall below 10% accuracy at the longest PGD run "
            "(Figure 2c; the paper: 0.02-0.04 after 500 steps).",
            ("figure2c",),
            lambda t: bool((_last_step(t["figure2c"])[_rows(_last_step(t["figure2c"]), PLAIN_SYSTEMS)] < 10).all()),
            lambda t: ", ".join(f"{n} {a:.1f}%" for n, a in _last_step(t["figure2c"]).items()),
            collapse_reason,
        ),
        Claim(
            "gap_over_steps",
            "Ensemble2Adv stays above SingleAdv at every number of PGD steps (Figure 2c: a gap of "
            "about 7 points is preserved).",
            ("figure2c",),
            lambda t: bool((steps_gap(t) > 0).all()),
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
            lambda t: plateau(t)[2] < plateau_points,
            lambda t: "{3}: {2:.1f} points from {0} to {1} steps".format(*plateau(t)),
            plateau_reason,
        ),
        Claim(
            "ensemble_beats_members",
            "Ensemble4Adv is more robust than its best member under the strongest adversary (Table 2: 49.7% vs 43.9%).",
            ("table2",),
            lambda t: members(t)[0] > members(t)[1],
            lambda t: "ensemble {:.1f}% vs best member {:.1f}%".format(*members(t)),
            lambda t: gap(*members(t)),
        ),
        Claim(
            "remove_softmax_close",
            f"Removing the softmax (averaging logits) changes the ensemble's adversarial "
            f"accuracy by about a point (Table 2: 49.7% vs 48.7%): within {softmax_points:g} points.",
            ("table2",),
            lambda t: abs(softmax(t)[0] - softmax(t)[1]) <= softmax_points,
            lambda t: "ensemble {:.1f}% vs logit average {:.1f}%".format(*softmax(t)),
            lambda t: gap(*softmax(t)),
        ),
    ]
