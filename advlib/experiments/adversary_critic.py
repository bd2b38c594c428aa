"""The experiments of "Improved Network Robustness with Adversary Critic" (Matyasko & Chau 2018) as cached runs.

Every (network, defense, seed) is trained once and cached: the reference and the baselines with `train.fit` (FGSM
adversarial training, VAT as a regularizer, margin maximisation with the hinge criterion), the critic defense with
`defenses.critic.train_critic_defense`. Table 1's attacks are cached per model. Table 2's human study is exported as
an MTurk kit; without collected answers its numbers come from a proxy annotator (an ensemble of independently trained,
adversarially trained classifiers), and every table says which.
"""
from __future__ import annotations

import math
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
from ..human import StudyItem, anonymous_id, export_batch, import_results, label_table, make_assignments, proxy_answers, write_images, write_sheet
from ..models import Ensemble, create_model, create_model_for
from ..params import AdversaryCriticParams, AttackSpec
from ..report import Claim
from ..runtime import contained_path, project_root
from ..train import fit, train_classifier

DEFENSE_LABELS = {"reference": "Reference", "at": "AT [7]", "vat": "VAT [16]", "margin": "Margin [19]", "critic": "Our"}


def cw_confidence_margin(confidence: float, num_classes: int) -> float:
    """The C&W logit margin kappa that guarantees softmax confidence >= `confidence`: with z_t - max_k z_k >= kappa,
    p_t >= 1 / (1 + (K - 1) e^-kappa), so kappa = log((K - 1) p / (1 - p))."""
    if not 0 < confidence < 1 or num_classes < 2:
        raise ValueError(f"need 0 < confidence < 1 and num_classes >= 2; got confidence={confidence}, num_classes={num_classes}")
    return math.log((num_classes - 1) * confidence / (1 - confidence))


def _softmax(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.softmax(model(x), dim=1)


class CriticStudy:
    """One notebook run: every trained model, Table 1, Figures 2 and 4, and the human study (kit and Table 2)."""

    def __init__(self, p: AdversaryCriticParams, device: torch.device | str = "cpu", cache: Cache | None = None) -> None:
        self.p, self.device, self.cache = p, torch.device(device), cache or Cache()
        self.info = dataset_info(p.data.name)
        self.train_set = load_dataset(p.data.name, "train", n=p.data.n_train, seed=p.seed, download=p.data.download)
        x, y = to_tensors(load_dataset(p.data.name, "test", n=p.data.n_test, seed=p.seed, download=p.data.download))
        self.x, self.y = x.to(self.device), y.to(self.device)
        self._models: dict[tuple[str, str, int], tuple[nn.Module, dict[str, Any], str]] = {}

    # -- models ----------------------------------------------------------------------------
    def _key(self, network: str, defense: str, seed: int) -> dict[str, Any]:
        p = self.p
        settings: dict[str, Any] = {
            "reference": {},
            "at": {"attack": p.baselines.at_attack.model_dump(mode="json"), "weight": p.baselines.at_weight},
            "vat": {"eps": p.baselines.vat_eps, "weight": p.baselines.vat_weight},
            "margin": {"weight": p.baselines.margin_weight},
            "critic": {**p.critic.model_dump(mode="json", exclude={"weight"}), "weight": p.critic.weight.get(network)},
        }[defense]
        train = p.train.model_dump(mode="json", exclude={"model"})
        if defense == "critic":  # the critic's own schedule replaces the baselines' optimizer settings
            train = {"batch_size": p.train.batch_size}
        return {"network": network, "defense": defense, "settings": settings, "train": train, "seed": seed,
                "data": p.data.model_dump(mode="json", exclude={"download"})}

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
        extra: dict[str, Any] = {
            "vat": {"regularizer": vat_regularizer(p.baselines.vat_eps, p.baselines.vat_weight)},
            "margin": {"regularizer": margin_regularizer(p.baselines.margin_weight), "criterion": multiclass_hinge},
        }.get(defense, {})

        def build(module: nn.Module, checkpoint_dir: Path) -> dict[str, Any]:
            if defense != "critic":
                return fit(module, self.train_set, spec, seed=seed, device=self.device, checkpoint_dir=checkpoint_dir,
                           desc=f"train {label}", **extra)
            torch.manual_seed(seed + 1)
            critic = create_model("critic_mlp", in_features=math.prod(self.info.shape),
                                  num_classes=self.info.num_classes).to(self.device)
            c = p.critic
            return train_critic_defense(module, critic, self.train_set, epochs=c.epochs, weight=c.weight[network],
                                        seed=seed, batch_size=p.train.batch_size, lr_classifier=c.lr_classifier,
                                        lr_critic=c.lr_critic, halve_every=c.halve_every, steps=c.steps,
                                        overshoot=c.overshoot, pretrain_epochs=c.pretrain_epochs,
                                        num_classes=self.info.num_classes, device=self.device,
                                        checkpoint_dir=checkpoint_dir, desc=f"train {label}")

        classifier, meta = cached_model("adversary_critic", key, classifier, build, cache=self.cache, label=label)
        self._models[(network, defense, seed)] = (classifier.eval(), meta, make_key("adversary_critic", key))
        return self._models[(network, defense, seed)]

    def models(self) -> list[tuple[str, str, int]]:
        """Every (network, defense, seed) in the profile's order."""
        return [(n, d, s) for n in self.p.networks for d in self.p.defenses for s in self.p.seeds]

    # -- Table 1 ---------------------------------------------------------------------------
    def table1_runs(self) -> pd.DataFrame:
        """Per run: test error (%) on the whole test split and, per attack, rho_adv over the first n_eval test
        images the model classifies correctly and the attack breaks, with that success rate (%)."""
        x, y = self.x[:self.p.n_eval], self.y[:self.p.n_eval]
        rows = []
        for network, defense, seed in tqdm(self.models(), desc="Table 1 runs", leave=False):
            model, _, key = self.model(network, defense, seed)
            row: dict[str, Any] = {"network": network, "defense": defense, "seed": seed,
                                   "error": 100 - 100 * accuracy(model, self.x, self.y)}
            correct = _softmax(model, x).argmax(1) == y
            for name, spec in self.p.eval_attacks.items():
                result = attack(spec, model, x, y, model_key=key, cache=self.cache)
                broken = correct & result.success
                row[f"rho {name}"] = rho_adv(x, result.x_adv, broken)
                row[f"success {name}"] = 100 * float(broken.sum()) / max(int(correct.sum()), 1)
            rows.append(row)
        return pd.DataFrame(rows)

    def table1(self, runs: pd.DataFrame, network: str) -> pd.DataFrame:
        """Table 1a/1b for one network: mean and std over runs of the test error and each attack's rho_adv."""
        columns = ["error"] + [f"rho {name}" for name in self.p.eval_attacks]
        part = runs[runs.network == network]
        stats = part.groupby("defense", sort=False)[columns].agg(["mean", "std"])
        stats.index = [DEFENSE_LABELS[d] for d in stats.index]
        stats.index.name = "defense"
        return stats

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
        probs = _softmax(model, self.x)
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
        result = attack(self._confident_attack(f.attack, f.confidence, targeted=True), model, source,
                        self.y[picks][[i for i, _ in pairs]], model_key=key, cache=self.cache, target=target)
        grid = originals[:, None].repeat(1, k, 1, 1, 1).clone()
        for n, (i, j) in enumerate(pairs):  # a cell C&W did not solve keeps the original (foolbox returns zeros)
            grid[i, j] = result.x_adv[n] if bool(result.success[n]) else source[n]
        grid = grid.flatten(0, 1)
        cell_probs = _softmax(model, grid).view(k, k, k)
        confidence = pd.DataFrame([[float(cell_probs[i, j, j]) for j in range(k)] for i in range(k)],
                                  index=pd.Index(range(k), name="original"), columns=pd.Index(range(k), name="target"))
        return grid, confidence

    def figure4(self) -> tuple[dict[str, Tensor], pd.DataFrame]:
        """(a) random test images, (b) C&W adversarials at the decision boundary, (c) high-confidence C&W
        adversarials, each with the model's average confidence in its prediction."""
        f = self.p.figure4
        model, key = self._figure_model(f)
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.p.seed))[:f.n_images]
        x, y = self.x[order.to(self.device)], self.y[order.to(self.device)]
        boundary = attack(f.attack, model, x, y, model_key=key, cache=self.cache)
        confident = attack(self._confident_attack(f.attack, f.confidence, targeted=False), model, x, y,
                           model_key=key, cache=self.cache)
        panels = {"(a) test images": x, "(b) at the decision boundary": boundary.x_adv,
                  "(c) high confidence": confident.x_adv}
        rows = []
        for name, images in panels.items():
            probs = _softmax(model, images)
            changed = probs.argmax(1) != y
            rows.append({"panel": name, "average confidence": 100 * float(probs.amax(1).mean()),
                         "label changed": 100 * float(changed.float().mean())})
        return panels, pd.DataFrame(rows).set_index("panel")

    # -- Table 2: the human study ----------------------------------------------------------
    def proxy_annotator(self) -> nn.Module:
        """The stand-in for human annotators: the probability-averaged ensemble of the `study.proxy` classifiers,
        trained independently of every studied model (seeds 10000 + i)."""
        members = [train_classifier(spec, self.p.data, seed=10_000 + i, device=self.device, cache=self.cache).model
                   for i, spec in enumerate(self.p.study.proxy)]
        return Ensemble(members).eval()

    def study_images(self) -> tuple[list[StudyItem], Tensor]:
        """For every network and defense (first seed): the paper's attack on the first `study.n_images` test images
        (target = the closest class, confidence = the model's own on the original); the adversarials that reach
        their target are the study's items, with anonymous ids."""
        s, seed = self.p.study, self.p.seeds[0]
        x, y = self.x[:s.n_images], self.y[:s.n_images]
        items, images = [], []
        for network in self.p.networks:
            for defense in self.p.defenses:
                model, _, key = self.model(network, defense, seed)
                result = attack(s.attack, model, x, y, model_key=key, cache=self.cache)
                probs = _softmax(model, result.x_adv)
                predicted = probs.argmax(1)
                keep = (_softmax(model, x).argmax(1) == y) & result.success
                for index in keep.nonzero().flatten().tolist():
                    items.append(StudyItem(anonymous_id(network, defense, seed, index), DEFENSE_LABELS[defense], network,
                                           int(y[index]), int(predicted[index]), float(probs[index].max())))
                    images.append(result.x_adv[index])
        if not items:
            raise ValueError("the study's attack reached no target; raise study.n_images or the attack's steps")
        return items, torch.stack(images)

    def export_kit(self, items: list[StudyItem], images: Tensor, folder: Path) -> dict[str, Any]:
        """The MTurk kit in `folder`: images/, one numbered sheet per assignment in sheets/, batch.csv, hit.html and
        items.csv (the key). Returns the paths, the assignments and each assignment's images."""
        s = self.p.study
        write_images(images, [item.image_id for item in items], folder / "images")
        assignments = make_assignments(items, s.per_assignment, seed=self.p.seed)
        position = {item.image_id: n for n, item in enumerate(items)}
        sheet_images = [images[[position[i.image_id] for i in assignment]] for assignment in assignments]
        sheets = [write_sheet(sheet, folder / "sheets" / f"assignment_{number:04d}.png")
                  for number, sheet in enumerate(sheet_images, 1)]
        return {**export_batch(assignments, folder, s.url_prefix), "sheets": sheets, "assignments": assignments,
                "sheet_images": sheet_images}

    def table2(self, items: list[StudyItem], images: Tensor) -> tuple[pd.DataFrame, str]:
        """Table 2 from the collected answers (`study.results`) when given, else from the proxy annotator; returns
        the table (per network and defense: % labelled with the target, % with the original) and who answered."""
        key = pd.DataFrame([vars(item) for item in items])
        if self.p.study.results:
            answers, who = import_results(contained_path(self.p.study.results, "study.results")), "human annotators (MTurk results file)"
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
    def claims(self, runs: pd.DataFrame, table2: pd.DataFrame) -> list[Claim]:
        """The paper's qualitative claims, checked on this run's tables."""
        attacks = list(self.p.eval_attacks)
        means = runs.groupby(["network", "defense"], sort=False).mean(numeric_only=True)
        networks = self.p.networks

        def largest_rho(_: Any) -> bool | None:
            if "critic" not in self.p.defenses or len(self.p.defenses) < 2:
                return None
            return all(means.loc[n][f"rho {a}"].idxmax() == "critic" for n in networks for a in attacks)

        def rho_evidence(_: Any) -> str:
            return "; ".join(f"{n} {a}: best {DEFENSE_LABELS[means.loc[n][f'rho {a}'].idxmax()]} "
                             f"{means.loc[n][f'rho {a}'].max():.3f}" for n in networks for a in attacks)

        def by_defense(column: str) -> dict[str, pd.Series]:
            return {n: table2.loc[n][column] for n in networks}

        def critic_changes_most(_: Any) -> bool | None:
            if "Our" not in table2.index.get_level_values(1) or len(self.p.defenses) < 2:
                return None
            return all(s.idxmax() == "Our" for s in by_defense("target_percent").values())

        def reference_keeps(_: Any) -> bool | None:
            if "Reference" not in table2.index.get_level_values(1):
                return None
            return all(s["Reference"] < 10 for s in by_defense("target_percent").values())

        def error_cost(_: Any) -> bool | None:
            if not {"critic", "reference"} <= set(self.p.defenses):
                return None
            return all(means.loc[(n, "critic"), "error"] - means.loc[(n, "reference"), "error"] < 1.0 for n in networks)

        return [
            Claim("critic_largest_rho", "The critic defense has the largest rho_adv under every attack, on both networks (Table 1).",
                  largest_rho, rho_evidence),
            Claim("critic_changes_label", "The critic defense's adversarials are labelled with the adversarial target most often (Table 2).",
                  critic_changes_most, lambda _: "; ".join(f"{n}: " + ", ".join(f"{d} {v:.1f}%" for d, v in s.items())
                                                           for n, s in by_defense("target_percent").items())),
            Claim("reference_keeps_label", "The reference model's adversarials almost never change the label (Table 2: under 10% labelled as the target).",
                  reference_keeps, lambda _: "; ".join(f"{n}: {s.get('Reference', float('nan')):.1f}%"
                                                       for n, s in by_defense("target_percent").items())),
            Claim("small_error_cost", "The critic defense costs under 1 point of test error (Table 1: 0.46 -> 1.18 and 0.64 -> 0.93).",
                  error_cost, lambda _: "; ".join(f"{n}: reference {means.loc[(n, 'reference'), 'error']:.2f}% vs critic "
                                                  f"{means.loc[(n, 'critic'), 'error']:.2f}%" for n in networks
                                                  if {(n, 'critic'), (n, 'reference')} <= set(means.index))),
        ]


def kit_folder(profile: str) -> Path:
    """Where the human-study kit goes: runs/adversary_critic/<profile>/human_study/ (not versioned: it is rebuilt)."""
    return project_root() / "runs" / "adversary_critic" / Path(profile).stem / "human_study"


def rho_by_defense(runs: pd.DataFrame, network: str, attacks: list[str]) -> pd.DataFrame:
    """Run means of error and rho per defense for one network, in the paper's row labels (for paper-vs-run)."""
    part = runs[runs.network == network].groupby("defense", sort=False)[["error"] + [f"rho {a}" for a in attacks]].mean()
    part.index = [DEFENSE_LABELS[d] for d in part.index]
    return part

