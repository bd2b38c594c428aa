"""The experiments of "Improved Network Robustness with Adversary Critic" (Matyasko & Chau 2018) as cached runs.

Every (network, defense, seed) is trained once and cached: the reference and the baselines with `train.fit` (FGSM
adversarial training, VAT as a regularizer, margin maximisation with the hinge criterion), the critic defense with
`defenses.critic.train_critic_defense`. Table 1's attacks are cached per model. Table 2's human study is exported as
an MTurk kit; without collected answers its numbers come from a proxy annotator (an ensemble of independently trained,
adversarially trained classifiers), and every table says which.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..cache import Cache, cached_model, make_key
from ..data import dataset_info, load_dataset, to_tensors
from ..defenses.baselines import margin_regularizer, multiclass_hinge, vat_regularizer
from ..defenses.critic import train_critic_defense
from ..evaluate import accuracy, attack, rho_adv
from ..human import (
    StudyItem,
    anonymous_id,
    export_batch,
    import_results,
    label_table,
    make_assignments,
    proxy_answers,
    write_annotation_page,
    write_images,
    write_sheet,
)
from ..inference import probabilities
from ..models import Ensemble, create_model, create_model_for
from ..params import AdversaryCriticParams, AttackSpec
from ..report import Claim, load_references, proportion_gap
from ..runtime import contained_path, project_root
from ..train import fit, train_classifier

STEM = "adversary_critic"
DEFENSE_LABELS = {"reference": "Reference", "at": "AT [7]", "vat": "VAT [16]", "margin": "Margin [19]", "critic": "Our"}


def cw_confidence_margin(confidence: float, num_classes: int) -> float:
    """The C&W logit margin kappa that guarantees softmax confidence >= `confidence`: with z_t - max_k z_k >= kappa,
    p_t >= 1 / (1 + (K - 1) e^-kappa), so kappa = log((K - 1) p / (1 - p))."""
    if not 0 < confidence < 1 or num_classes < 2:
        raise ValueError(
            f"need 0 < confidence < 1 and num_classes >= 2; got confidence={confidence}, num_classes={num_classes}"
        )
    return math.log((num_classes - 1) * confidence / (1 - confidence))


class CriticStudy:
    """One notebook run: every trained model, Table 1, Figures 2 and 4, and the human study (kit and Table 2)."""

    def __init__(
        self, p: AdversaryCriticParams, device: torch.device | str = "cpu", cache: Cache | None = None
    ) -> None:
        self.p, self.device, self.cache = p, torch.device(device), cache or Cache()
        self.info = dataset_info(p.data.name)
        self.train_set = load_dataset(p.data.name, "train", n=p.data.n_train, seed=p.seed, download=p.data.download)
        x, y = to_tensors(load_dataset(p.data.name, "test", n=p.data.n_test, seed=p.seed, download=p.data.download))
        self.x, self.y = x.to(self.device), y.to(self.device)
        self._models: dict[tuple[str, str, int], tuple[nn.Module, dict[str, Any], str]] = {}

    # -- models ----------------------------------------------------------------------------
    def _key(self, network: str, defense: str, seed: int) -> dict[str, Any]:
        p = self.p
        settings_of: dict[str, dict[str, Any]] = {
            "reference": {},
            "at": {"attack": p.baselines.at_attack.model_dump(mode="json"), "weight": p.baselines.at_weight},
            "vat": {"eps": p.baselines.vat_eps, "weight": p.baselines.vat_weight},
            "margin": {"weight": p.baselines.margin_weight},
            "critic": {**p.critic.model_dump(mode="json", exclude={"weight"}), "weight": p.critic.weight.get(network)},
        }
        settings = settings_of[defense]
        train = p.train.model_dump(mode="json", exclude={"model"})
        if defense == "critic":  # the critic's own schedule replaces the baselines' optimizer settings
            train = {"batch_size": p.train.batch_size}
        return {
            "network": network,
            "defense": defense,
            "settings": settings,
            "train": train,
            "seed": seed,
            "data": p.data.model_dump(mode="json", exclude={"download"}),
        }

    def model(self, network: str, defense: str, seed: int) -> tuple[nn.Module, dict[str, Any], str]:
        """A trained classifier (cached), its training metadata and its cache key."""
        if (network, defense, seed) in self._models:
            return self._models[(network, defense, seed)]
        p, key = self.p, self._key(network, defense, seed)
        torch.manual_seed(seed)
        classifier = create_model_for(network, self.info).to(self.device)
        label = f"{network} / {defense} (seed {seed})"
        spec = p.train.model_copy(update={"model": network})
        if defense == "at":
            spec = spec.model_copy(update={"adversary": p.baselines.at_attack, "adv_weight": p.baselines.at_weight})
        extras: dict[str, dict[str, Any]] = {
            "vat": {"regularizer": vat_regularizer(p.baselines.vat_eps, p.baselines.vat_weight)},
            "margin": {"regularizer": margin_regularizer(p.baselines.margin_weight), "criterion": multiclass_hinge},
        }
        extra = extras.get(defense, {})

        def build(module: nn.Module, checkpoint_dir: Path) -> dict[str, Any]:
            if defense != "critic":
                return fit(
                    module,
                    self.train_set,
                    spec,
                    seed=seed,
                    device=self.device,
                    checkpoint_dir=checkpoint_dir,
                    desc=f"train {label}",
                    **extra,
                )
            torch.manual_seed(seed + 1)
            critic = create_model(
                "critic_mlp", in_features=math.prod(self.info.shape), num_classes=self.info.num_classes
            ).to(self.device)
            c = p.critic
            return train_critic_defense(
                module,
                critic,
                self.train_set,
                epochs=c.epochs,
                weight=c.weight[network],
                seed=seed,
                batch_size=p.train.batch_size,
                lr_classifier=c.lr_classifier,
                lr_critic=c.lr_critic,
                halve_every=c.halve_every,
                steps=c.steps,
                overshoot=c.overshoot,
                pretrain_epochs=c.pretrain_epochs,
                num_classes=self.info.num_classes,
                device=self.device,
                checkpoint_dir=checkpoint_dir,
                desc=f"train {label}",
            )

        classifier, meta = cached_model("adversary_critic", key, classifier, build, cache=self.cache, label=label)
        self._models[(network, defense, seed)] = (classifier.eval(), meta, make_key("adversary_critic", key))
        return self._models[(network, defense, seed)]

    def models(self) -> list[tuple[str, str, int]]:
        """Every (network, defense, seed) in the profile's order."""
        return [(n, d, s) for n in self.p.networks for d in self.p.defenses for s in self.p.seeds]

    # -- Table 1 ---------------------------------------------------------------------------
    def table1_runs(self) -> pd.DataFrame:
        """Per run: the epochs trained (the critic's include its pre-training), the test error (%) on the whole test
        split (and its size) and, per attack, rho_adv over the first n_eval test
        images the model classifies correctly and the attack breaks, with that success rate (%)."""
        x, y = self.x[: self.p.n_eval], self.y[: self.p.n_eval]
        rows = []
        for network, defense, seed in tqdm(self.models(), desc="Table 1 runs", leave=False):
            model, meta, key = self.model(network, defense, seed)
            row: dict[str, Any] = {
                "network": network,
                "defense": defense,
                "seed": seed,
                "epochs": len(meta.get("history", [])),
                "test images": len(self.x),
                "error": 100 - 100 * accuracy(model, self.x, self.y),
            }
            correct = probabilities(model, x, batch_size=None).argmax(1) == y
            for name, spec in self.p.eval_attacks.items():
                result = attack(spec, model, x, y, model_key=key, cache=self.cache)
                broken = correct & result.success
                row[f"rho {name}"] = rho_adv(x, result.x_adv, broken)
                row[f"success {name}"] = 100 * float(broken.sum()) / max(int(correct.sum()), 1)
            rows.append(row)
        return pd.DataFrame(rows)

    def table1(self, runs: pd.DataFrame, network: str) -> pd.DataFrame:
        """Table 1a/1b for one network: mean and std over runs of the test error and each attack's rho_adv."""
        return table1(runs, network, list(self.p.eval_attacks))

    # -- Figures 2 and 4 -------------------------------------------------------------------
    def _figure_model(self, figure) -> tuple[nn.Module, str]:
        model, _, key = self.model(figure.network, figure.defense, self.p.seeds[0])
        return model, key

    def _confident_attack(self, spec: AttackSpec, confidence: float, targeted: bool) -> AttackSpec:
        options = {**spec.options, "confidence": cw_confidence_margin(confidence, self.info.num_classes)}
        return spec.model_copy(update={"options": options, "targeted": targeted})

    def figure2(self) -> tuple[Tensor, pd.DataFrame]:
        """The 10x10 grid: row i holds the test image of class i the model is most confident about (diagonal) and
        its C&W adversarials targeted at every class j with the confidence margin for >= `confidence` (the original
        where C&W failed). Returns the images (row-major) and the matrix of the model's confidence in each cell's
        class."""
        f = self.p.figure2
        model, key = self._figure_model(f)
        k = self.info.num_classes
        probs = probabilities(model, self.x, batch_size=None)
        picks = []
        for c in range(k):
            of_class = (self.y == c).nonzero().flatten()
            if len(of_class) == 0:
                raise ValueError(f"the test set has no image of class {c} for figure 2")
            picks.append(int(of_class[probs[of_class, c].argmax()]))
        originals = self.x[picks]
        pairs = [(i, j) for i in range(k) for j in range(k) if i != j]
        source = originals[[i for i, _ in pairs]]
        target = torch.tensor([j for _, j in pairs], device=self.device)
        result = attack(
            self._confident_attack(f.attack, f.confidence, targeted=True),
            model,
            source,
            self.y[picks][[i for i, _ in pairs]],
            model_key=key,
            cache=self.cache,
            target=target,
        )
        grid = originals[:, None].repeat(1, k, 1, 1, 1).clone()
        for n, (i, j) in enumerate(pairs):  # a cell C&W did not solve keeps the original (foolbox returns zeros)
            grid[i, j] = result.x_adv[n] if bool(result.success[n]) else source[n]
        grid = grid.flatten(0, 1)
        cell_probs = probabilities(model, grid, batch_size=None).view(k, k, k)
        confidence = pd.DataFrame(
            [[float(cell_probs[i, j, j]) for j in range(k)] for i in range(k)],
            index=pd.Index(range(k), name="original"),
            columns=pd.Index(range(k), name="target"),
        )
        return grid, confidence

    def figure4(self) -> tuple[dict[str, Tensor], pd.DataFrame]:
        """(a) random test images, (b) C&W adversarials at the decision boundary, (c) high-confidence C&W
        adversarials, each with the model's average confidence in its prediction."""
        f = self.p.figure4
        model, key = self._figure_model(f)
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.p.seed))[: f.n_images]
        x, y = self.x[order.to(self.device)], self.y[order.to(self.device)]
        boundary = attack(f.attack, model, x, y, model_key=key, cache=self.cache)
        confident = attack(
            self._confident_attack(f.attack, f.confidence, targeted=False), model, x, y, model_key=key, cache=self.cache
        )
        panels = {
            "(a) test images": x,
            "(b) at the decision boundary": boundary.x_adv,
            "(c) high confidence": confident.x_adv,
        }
        rows = []
        for name, images in panels.items():
            probs = probabilities(model, images, batch_size=None)
            changed = probs.argmax(1) != y
            rows.append(
                {
                    "panel": name,
                    "average confidence": 100 * float(probs.amax(1).mean()),
                    "label changed": 100 * float(changed.float().mean()),
                }
            )
        return panels, pd.DataFrame(rows).set_index("panel")

    # -- Table 2: the human study ----------------------------------------------------------
    def proxy_annotator(self) -> nn.Module:
        """The stand-in for human annotators: the probability-averaged ensemble of the `study.proxy` classifiers,
        trained independently of every studied model (seeds 10000 + i)."""
        members = [
            train_classifier(spec, self.p.data, seed=10_000 + i, device=self.device, cache=self.cache).model
            for i, spec in enumerate(self.p.study.proxy)
        ]
        return Ensemble(members).eval()

    def study_images(self, secret: bytes) -> tuple[list[StudyItem], Tensor]:
        """For every network and defense (first seed): the paper's attack on the first `study.n_images` test images
        (target = the closest class, confidence = the model's own on the original); the adversarials that reach
        their target are the study's items, with ids keyed by the kit's `secret` (human.study_secret)."""
        s, seed = self.p.study, self.p.seeds[0]
        x, y = self.x[: s.n_images], self.y[: s.n_images]
        items, images = [], []
        for network in self.p.networks:
            for defense in self.p.defenses:
                model, _, key = self.model(network, defense, seed)
                result = attack(s.attack, model, x, y, model_key=key, cache=self.cache)
                probs = probabilities(model, result.x_adv, batch_size=None)
                predicted = probs.argmax(1)
                keep = (probabilities(model, x, batch_size=None).argmax(1) == y) & result.success
                for index in keep.nonzero().flatten().tolist():
                    items.append(
                        StudyItem(
                            anonymous_id(secret, network, defense, seed, index),
                            DEFENSE_LABELS[defense],
                            network,
                            int(y[index]),
                            int(predicted[index]),
                            float(probs[index].max()),
                        )
                    )
                    images.append(result.x_adv[index])
        if not items:
            raise ValueError("the study's attack reached no target; raise study.n_images or the attack's steps")
        return items, torch.stack(images)

    def export_kit(self, items: list[StudyItem], images: Tensor, folder: Path) -> dict[str, Any]:
        """The MTurk kit in `folder`: images/, one numbered sheet per assignment in sheets/, batch.csv, hit.html,
        items.csv (the key) and annotate.html (the offline annotation page). Returns the paths, the assignments and each assignment's images."""
        s = self.p.study
        write_images(images, [item.image_id for item in items], folder / "images")
        assignments = make_assignments(items, s.per_assignment, seed=self.p.seed)
        position = {item.image_id: n for n, item in enumerate(items)}
        sheet_images = [images[[position[i.image_id] for i in assignment]] for assignment in assignments]
        sheets = [
            write_sheet(sheet, folder / "sheets" / f"assignment_{number:04d}.png")
            for number, sheet in enumerate(sheet_images, 1)
        ]
        return {
            **export_batch(assignments, folder, s.url_prefix),
            "page": write_annotation_page(assignments, folder),
            "sheets": sheets,
            "assignments": assignments,
            "sheet_images": sheet_images,
        }

    def table2(self, items: list[StudyItem], images: Tensor) -> tuple[pd.DataFrame, str]:
        """Table 2 from the collected answers (`study.results`) when given, else from the proxy annotator; returns
        the table (per network and defense: % labelled with the target, % with the original) and who answered."""
        key = pd.DataFrame([vars(item) for item in items])
        if self.p.study.results:
            answers, who = (
                import_results(contained_path(self.p.study.results, "study.results")),
                "human annotators (MTurk results file)",
            )
        else:
            answers = proxy_answers(self.proxy_annotator(), images, [item.image_id for item in items])
            who = "proxy annotator (robust classifier ensemble; no human answers in this run)"
        table = label_table(answers, key).reset_index()
        counts = key.groupby(["defense", "network"], sort=False).size().rename("images").reset_index()
        table = table.merge(counts, on=["defense", "network"])
        order = [(n, DEFENSE_LABELS[d]) for n in self.p.networks for d in self.p.defenses]
        table = table.set_index(["network", "defense"])
        return table.reindex([o for o in order if o in table.index]), who

    # -- claims ----------------------------------------------------------------------------
    def tables(self, runs: pd.DataFrame, table2: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
        """The run's tables under the names the notebook saves them: table1_runs, table1a / table1b (the profile's
        first and second network) and table2."""
        out = {
            "table1_runs": runs,
            **{f"table1{letter}": self.table1(runs, network) for letter, network in zip("ab", self.p.networks)},
        }
        return out if table2 is None else {**out, "table2": table2}

    def claims(self, annotator: str) -> list[Claim]:
        """The paper's claims for this profile's networks; `annotator` says who labelled Table 2."""
        return claims(self.p.networks, annotator)


def table1(runs: pd.DataFrame, network: str, attacks: Sequence[str]) -> pd.DataFrame:
    """Table 1a/1b for one network from table1_runs: mean and std over runs of the test error and each attack's
    rho_adv, one row per defense in the paper's labels."""
    columns = ["error"] + [f"rho {name}" for name in attacks]
    part = runs[runs.network == network]
    if part.empty:
        raise ValueError(
            f"no run of network {network!r} in table1_runs; present: {', '.join(map(str, runs.network.unique()))}"
        )
    stats = part.groupby("defense", sort=False)[columns].agg(["mean", "std"])
    stats.index = [DEFENSE_LABELS[d] for d in stats.index]
    stats.index.name = "defense"
    return stats


def kit_folder(profile: str) -> Path:
    """Where the human-study kit goes: runs/adversary_critic/<profile>/human_study/ (not versioned: it is rebuilt)."""
    return project_root() / "runs" / "adversary_critic" / Path(profile).stem / "human_study"


def rho_by_defense(runs: pd.DataFrame, network: str, attacks: list[str]) -> pd.DataFrame:
    """Run means of error and rho per defense for one network, in the paper's row labels (for paper-vs-run)."""
    part = (
        runs[runs.network == network].groupby("defense", sort=False)[["error"] + [f"rho {a}" for a in attacks]].mean()
    )
    part.index = [DEFENSE_LABELS[d] for d in part.index]
    return part


# -- paper vs run -----------------------------------------------------------------------------
def paper_vs_run_table(parts: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The paper-vs-run tables of `parts` ({artifact: report.paper_vs_run(...)}) stacked, with a `note` column that
    marks the published numbers the references file flags as doubtful (`doubtful: {key: why}` under an artifact)."""
    refs = load_references(STEM)
    notes: dict[tuple[str, str], str] = {}
    for artifact in parts:
        doubtful = refs.get(artifact, {}).get("doubtful", {}) or {}
        if not isinstance(doubtful, Mapping):
            raise ValueError(
                f"references {artifact!r}: 'doubtful' must map a key (e.g. 'Reference / error') to why; got {doubtful!r}"
            )
        unknown = sorted(set(doubtful) - set(parts[artifact].index))
        if unknown:
            raise ValueError(
                f"references {artifact!r}: doubtful keys {unknown} are not among its values "
                f"({', '.join(map(str, parts[artifact].index))})"
            )
        notes.update({(artifact, key): f"doubtful: {why}" for key, why in doubtful.items()})
    table = pd.concat(dict(parts), names=["artifact", "row"])
    table["note"] = [notes.get(key, "") for key in table.index]
    return table


# -- claims -----------------------------------------------------------------------------------
PAPER_EPOCHS = 100
PAPER_RUNS = 10
OUR, REFERENCE, AT = DEFENSE_LABELS["critic"], DEFENSE_LABELS["reference"], DEFENSE_LABELS["at"]
TABLE1 = ("table1a", "table1b")


def _runs_per_model(runs: pd.DataFrame) -> int:
    """The fewest runs (seeds) any (network, defense) has in table1_runs."""
    return int(runs.groupby(["network", "defense"]).size().min()) if len(runs) else 0


def _budget(runs: pd.DataFrame) -> str:
    """Epochs and runs of this profile read from table1_runs, against the paper's 100 epochs and 10 runs."""
    epochs = runs.groupby("defense")["epochs"].max()
    critic = f"critic {int(epochs['critic'])} (with pre-training), " if "critic" in epochs else ""
    others = epochs.drop("critic", errors="ignore")
    base = f"baselines {int(others.max())}" if len(others) else "no baseline"
    return (
        f"epochs trained: {critic}{base} (paper: {PAPER_EPOCHS}); runs per model: {_runs_per_model(runs)} "
        f"(paper: {PAPER_RUNS})"
    )


def _attacks(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns.get_level_values(0).unique() if str(c).startswith("rho ")]


def _rho_misses(t: Mapping[str, Any], networks: Sequence[str], rival: str | None) -> list[str]:
    """Each (network, attack) where the critic's mean rho_adv is not above the rival's (rival None: every other
    defense), with the gap and the run-to-run std of both from the same table. Missing rows raise KeyError."""
    misses = []
    for name, network in zip(TABLE1, networks):
        table = t[name]
        for column in _attacks(table):
            means, stds = table[(column, "mean")], table[(column, "std")]
            others = means.drop(OUR) if rival is None else means[[rival]]
            if others.empty:
                raise KeyError(f"{name}: no defense to compare with")
            leader = others.idxmax() if others.notna().any() else others.index[0]
            ours, best = float(means[OUR]), float(others[leader])
            if ours > best:
                continue
            if math.isnan(ours) or math.isnan(best):
                misses.append(f"{network} {column}: no image broken ({OUR} {ours:.3f}, {leader} {best:.3f})")
                continue
            spread = max(float(stds[OUR]), float(stds[leader]))
            side = "within" if best - ours <= spread else "beyond"
            misses.append(
                f"{network} {column}: {leader} {best:.3f} vs {OUR} {ours:.3f} (gap {best - ours:.3f}, {side} "
                f"the run-to-run std {float(stds[leader]):.3f} / {float(stds[OUR]):.3f})"
            )
    return misses


def _rho_evidence(t: Mapping[str, Any], networks: Sequence[str], rival: str | None) -> str:
    parts = []
    for name, network in zip(TABLE1, networks):
        table = t[name]
        for column in _attacks(table):
            means = table[(column, "mean")]
            shown = means if rival is None else means[[d for d in (rival, OUR) if d in means.index]]
            parts.append(f"{network} {column}: " + ", ".join(f"{d} {v:.3f}" for d, v in shown.items()))
    return "; ".join(parts)


def _proportion_interval(percent: float, n: int) -> tuple[float, float]:
    """The 95% Agresti-Coull interval (percent) of a proportion measured on n images."""
    n_tilde = n + 1.96**2
    p = (percent / 100 * n + 1.96**2 / 2) / n_tilde
    half = 1.96 * math.sqrt(p * (1 - p) / n_tilde)
    return max(0.0, 100 * (p - half)), min(100.0, 100 * (p + half))


def claims(networks: Sequence[str], annotator: str) -> list[Claim]:
    """The paper's claims on Table 1 (table1a/table1b for `networks[0]`/`networks[1]`, table1_runs) and Table 2
    (labelled by `annotator`); each can fail, and each miss says by how much and whether the run can resolve it."""
    networks = list(networks)
    proxy = "proxy" in annotator.lower()
    who = (
        f"labels by {annotator}: a robust classifier stands in for the paper's MTurk workers"
        if proxy
        else f"labels by {annotator}"
    )

    def table1_gap(t: Mapping[str, Any], rows: Sequence[str]) -> str:
        """Why Table 1 cannot be judged here ('' when it can): a missing table or row, or a single run per model."""
        runs = t["table1_runs"]
        missing = [name for name in TABLE1 if name not in t]
        if missing:
            return f"this profile has no {', '.join(missing)} (its networks: {', '.join(networks)})"
        absent = [f"{name} has no {row} row" for name in TABLE1 for row in rows if row not in t[name].index]
        if absent:
            return "; ".join(absent) + " in this profile"
        if _runs_per_model(runs) < 2:  # Table 1 reports means of 10 runs
            return f"only {_runs_per_model(runs)} run per model: the run-to-run spread is unknown; {_budget(runs)}"
        return ""

    def table1_reason(t: Mapping[str, Any], rows: Sequence[str], misses: Callable[[], list[str]]) -> str:
        return table1_gap(t, rows) or "; ".join(misses()) + f"; {_budget(t['table1_runs'])}"

    def largest_rho(t: Mapping[str, Any]) -> bool | None:
        return None if table1_gap(t, (OUR,)) else not _rho_misses(t, networks, None)

    def beats_at(t: Mapping[str, Any]) -> bool | None:
        return None if table1_gap(t, (OUR, AT)) else not _rho_misses(t, networks, AT)

    def error_gaps(t: Mapping[str, Any]) -> list[tuple[str, float, float, int]]:
        runs = t["table1_runs"]
        n_test = int(runs["test images"].min())
        return [
            (
                network,
                float(t[name].loc[REFERENCE, ("error", "mean")]),
                float(t[name].loc[OUR, ("error", "mean")]),
                n_test,
            )
            for name, network in zip(TABLE1, networks)
        ]

    def error_cost(t: Mapping[str, Any]) -> bool | None:
        return None if table1_gap(t, (OUR, REFERENCE)) else all(ours - ref < 1.0 for _, ref, ours, _ in error_gaps(t))

    def error_misses(t: Mapping[str, Any]) -> list[str]:
        return [
            f"{network}: {OUR} {ours:.2f}% vs {REFERENCE} {ref:.2f}%, {proportion_gap(ours, ref, n)} "
            f"(the paper's costs: LeNet-5 0.29 points; MLP 0.72 from a doubtful reference of 0.46%)"
            for network, ref, ours, n in error_gaps(t)
            if ours - ref >= 1.0
        ]

    def table2_rows(t: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
        table = t["table2"]
        return {network: table.loc[network] for network in table.index.get_level_values(0).unique()}

    def changes_most(t: Mapping[str, Any]) -> bool | None:
        rows = table2_rows(t)
        if not rows or any(OUR not in r.index or len(r) < 2 for r in rows.values()):
            return None
        return all(r["target_percent"].drop(OUR).max() < r.loc[OUR, "target_percent"] for r in rows.values())

    def changes_reason(t: Mapping[str, Any]) -> str:
        rows = table2_rows(t)
        if not rows or any(OUR not in r.index or len(r) < 2 for r in rows.values()):
            return "Table 2 has no critic row or a single defense per network (the critic's attack reached no target?)"
        misses = []
        for network, r in rows.items():
            others = r["target_percent"].drop(OUR)
            leader = others.idxmax()
            if others[leader] >= r.loc[OUR, "target_percent"]:
                misses.append(
                    f"{network}: {leader} {others[leader]:.1f}% vs {OUR} {r.loc[OUR, 'target_percent']:.1f}%, "
                    + proportion_gap(
                        others[leader],
                        r.loc[OUR, "target_percent"],
                        int(r.loc[leader, "images"]),
                        int(r.loc[OUR, "images"]),
                    )
                )
        return "; ".join(misses) + f"; {who}"

    def reference_keeps(t: Mapping[str, Any]) -> bool | None:
        rows = table2_rows(t)
        if not rows or any(REFERENCE not in r.index for r in rows.values()):
            return None
        return all(r.loc[REFERENCE, "target_percent"] < 10 for r in rows.values())

    def reference_reason(t: Mapping[str, Any]) -> str:
        rows = table2_rows(t)
        if not rows or any(REFERENCE not in r.index for r in rows.values()):
            return "Table 2 has no reference row (no defense-free model, or its attack reached no target)"
        parts = []
        for network, r in rows.items():
            value, n = float(r.loc[REFERENCE, "target_percent"]), int(r.loc[REFERENCE, "images"])
            low, high = _proportion_interval(value, n)
            if value >= 10:
                side = "entirely above 10%" if low >= 10 else "reaching below 10%: this sample size does not resolve it"
                parts.append(
                    f"{network}: {value:.1f}% of {n} images labelled as the target, 95% interval "
                    f"{low:.1f}-{high:.1f}% ({side})"
                )
        return "; ".join(parts) + f"; {who}"

    def table2_evidence(column: str, only: str | None = None) -> Callable[[Mapping[str, Any]], str]:
        def evidence(t: Mapping[str, Any]) -> str:
            return "; ".join(
                f"{network}: "
                + ", ".join(
                    f"{d} {v:.1f}% of {int(r.loc[d, 'images'])}" for d, v in r[column].items() if only in (None, d)
                )
                for network, r in table2_rows(t).items()
            )

        return evidence

    def error_evidence(t: Mapping[str, Any]) -> str:
        return "; ".join(
            f"{network}: {REFERENCE} {ref:.2f}% -> {OUR} {ours:.2f}% (on {n} images)"
            for network, ref, ours, n in error_gaps(t)
        )

    return [
        Claim(
            "critic_largest_rho",
            "Our defense significantly increases the robustness: the critic defense has the largest mean rho_adv "
            "under DeepFool, C&W and the paper's attack, on both networks (Tables 1a, 1b).",
            ("table1a", "table1b", "table1_runs"),
            largest_rho,
            lambda t: _rho_evidence(t, networks, None),
            lambda t: table1_reason(t, (OUR,), lambda: _rho_misses(t, networks, None)),
        ),
        Claim(
            "critic_beats_at",
            "Our method surpasses in terms of robustness networks trained with adversarial training: a larger mean "
            "rho_adv than FGSM adversarial training under every attack, on both networks (Tables 1a, 1b).",
            ("table1a", "table1b", "table1_runs"),
            beats_at,
            lambda t: _rho_evidence(t, networks, AT),
            lambda t: table1_reason(t, (OUR, AT), lambda: _rho_misses(t, networks, AT)),
        ),
        Claim(
            "small_error_cost",
            "The critic defense costs under 1 point of clean test error over the reference (Tables 1a, 1b: "
            "LeNet-5 0.64% -> 0.93%; MLP 0.46% -> 1.18%, the 0.46% doubtful).",
            ("table1a", "table1b", "table1_runs"),
            error_cost,
            error_evidence,
            lambda t: table1_reason(t, (OUR, REFERENCE), lambda: error_misses(t)),
        ),
        Claim(
            "critic_changes_label",
            "When the model is trained with our defense, the high-confidence adversarial noise actually changes "
            "the label: its adversarials are labelled with the adversarial target more often than any other "
            "defense's, on both networks (Table 2).",
            ("table2",),
            changes_most,
            table2_evidence("target_percent"),
            changes_reason,
        ),
        Claim(
            "reference_keeps_label",
            "For the model trained without any defense, adversarial noise does not change the label of the input "
            "(Table 2: 0.57% and 2.54% labelled as the target; here: under 10%).",
            ("table2",),
            reference_keeps,
            table2_evidence("target_percent", REFERENCE),
            reference_reason,
        ),
    ]
