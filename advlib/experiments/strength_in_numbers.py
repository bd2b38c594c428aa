"""The experiments of "Strength in Numbers" (Grefenstette et al. 2018) as cached, seeded runs.

Every system of Figure 1 is trained with `advlib.train.fit` (the ensemble as one model; Algorithm 1 when
adversarial) and evaluated after every epoch by Section 4.3's job (clean, the white-box attacks, the black-box set
made by PGD against a separately trained logit-averaged ensemble of two other architectures). Trained systems and
their evaluation histories are cached together; the tables evaluated after training (1c, 2, Figures 2c and 3) are
cached under the keys of the systems they evaluate, so a rerun only loads them.
"""
from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from ..cache import Cache, cached_frames, cached_model
from ..data import dataset_info, load_dataset, to_tensors
from ..defenses.ensemble_at import (average_seeds, build_ensemble, evaluation_scores, member_mean_loss, robust_accuracy,
                                    strongest_attack, system_spec, with_mode)
from ..attacks.pgd import ADAM_RULE
from ..evaluate import accuracy, accuracy_vs_steps, attack
from ..models import Ensemble, count_parameters, create_model_for
from ..params import StrengthInNumbersParams, TrainSpec
from ..train import fit, train_classifier

SCORES = ("clean", "IFGSM5", "PGD5", "PGD20", "blackbox")


class EnsembleStudy:
    """One notebook run: the black-box set, every system for every seed, and the paper's tables from them."""

    def __init__(self, p: StrengthInNumbersParams, device: torch.device | str = "cpu", cache: Cache | None = None) -> None:
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
            sources = [train_classifier(spec, self.p.data, seed=self.p.seed + i, device=self.device, cache=self.cache)
                       for i, spec in enumerate(self.p.blackbox_sources)]
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
            return fit(module, self.train_set, train_spec, seed=seed, device=self.device, checkpoint_dir=checkpoint_dir,
                       on_epoch=evaluate_epoch, desc=f"train {name} (seed {seed})")

        model, meta = cached_model("ensemble_at", key, model, build, cache=self.cache, label=f"{name} (seed {seed})")
        self._systems[(name, seed)] = (model.eval(), meta["history"])
        return self._systems[(name, seed)]

    def _train_spec(self, name: str) -> TrainSpec:
        """The training spec of system `name`: Algorithm 1 with the paper's rho when adversarial, plain training else."""
        adversarial = system_spec(name).adversarial
        return self.p.train.model_copy(update={"adversary": self.p.train_attack if adversarial else None,
                                               "adv_weight": self.p.rho / (1 + self.p.rho) if adversarial else 1.0})

    def system_key(self, name: str, seed: int) -> dict[str, Any]:
        """What determines a trained system (its cache key); a separately trained one is the keys of its members."""
        spec = system_spec(name)
        if spec.separate:
            return {"separate": name, "members": [self.system_key("SingleAdv", seed + 1000 * j) for j in range(spec.members)]}
        self.blackbox()
        return {"system": name, "members": spec.members, "wide": spec.wide,
                "model": [self.p.train.model, self.p.train.model_options, self.p.double_options if spec.wide else {}],
                "train": self._train_spec(name).model_dump(mode="json"), "seed": seed,
                "data": self.p.data.model_dump(mode="json"),
                "eval": {"n": self.p.n_eval, "attacks": {k: v.model_dump(mode="json") for k, v in self.p.eval_attacks.items()},
                         "blackbox": self._blackbox[2], "blackbox_attack": self.p.blackbox_attack.model_dump(mode="json"),
                         "pgd_adam": ADAM_RULE}}

    def _cached_tables(self, table: str, systems: list[str], settings: Any, build) -> tuple[pd.DataFrame, ...]:
        """`build()`'s tables, cached under the keys of `systems` (seed p.seeds[0]), the test images and `settings`."""
        seed = self.p.seeds[0]
        key = {"table": table, "systems": {name: self.system_key(name, seed) for name in systems},
               "eval": [self.p.data.model_dump(mode="json"), self.p.n_eval, self.p.seed], "settings": settings,
               "pgd_adam": ADAM_RULE}
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
                rows += [{"system": name, "score": score, "epoch": float(e), "accuracy": float(v)} for e, v in zip(grid, mean)]
        return pd.DataFrame(rows)

    def table1a(self, curves: pd.DataFrame, last: int = 10) -> pd.DataFrame:
        """Mean of the last `last` evaluations of every score (seed-averaged curves)."""
        tail = curves.groupby(["system", "score"], sort=False).apply(lambda g: g.sort_values("epoch")["accuracy"].tail(last).mean(),
                                                                     include_groups=False)
        return tail.unstack("score")[list(SCORES)].reindex([s for s in self.p.systems if s in tail.index.get_level_values(0)])

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
            table = {name: {label: robust_accuracy(self.system(name, seed)[0], spec, self.x, self.y)
                            for label, spec in self.p.long_attacks.items()} for name in self.p.systems}
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

        return self._cached_tables("figure2c", list(self.p.systems), self.p.steps_curve.model_dump(mode="json"), build)[0]

    def table2(self, name: str = "Ensemble4Adv") -> tuple[pd.DataFrame, pd.DataFrame]:
        """Appendix A.1: each member of `name`, the ensemble and the logit-averaged ensemble under the strongest
        adversary; plus every (steps, accuracy) the step doubling tried."""
        return self._cached_tables("table2", [name], self.p.strongest.model_dump(mode="json"), lambda: self._table2(name))

    def _table2(self, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        ensemble = self.system(name, self.p.seeds[0])[0]
        models = {f"Model {i + 1}": member for i, member in enumerate(ensemble.members)}
        models["Ensemble"] = ensemble
        models["Ensemble (remove softmax)"] = with_mode(ensemble, "logit").eval()
        spec = self.p.strongest.attack.model_dump()
        rows, tried = [], []
        for label, model in models.items():
            clean = 100 * accuracy(model, self.x, self.y)
            adversarial, steps, history = strongest_attack(model, self.x, self.y, spec,
                                                           start_steps=self.p.strongest.start_steps,
                                                           max_steps=self.p.strongest.max_steps)
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
        targets = {"ensemble": ensemble, "mean member loss (transfer)": member_mean_loss(list(ensemble.members)).eval(),
                   "remove softmax": with_mode(ensemble, "logit").eval()}
        base = self.p.strongest.attack.model_dump()
        rows = []
        for steps in self.p.transfer_steps:
            spec = {**base, "steps": steps, "options": {**base.get("options", {}), "loss": "margin"}}
            for label, source in targets.items():
                x_adv = attack(spec, source, self.x, self.y).x_adv
                rows.append({"attack on": label, "steps": steps, "accuracy": 100 * accuracy(ensemble, x_adv, self.y)})
        return pd.DataFrame(rows)
