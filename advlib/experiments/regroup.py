"""The experiments of "Dissecting Deep Networks into an Ensemble of Generative Classifiers" (REGroup) as cached runs.

Per network: the classifier (trained here or used as published), the class-conditional statistics from the
subset S of correctly classified training images (cached), the paper's k rule on a separate selection set of
correctly classified test images, and REGroup on every adversarial set. Adversarials are crafted on the
network's own softmax output, as in the paper, and cached per attack; REGroup only reads their pre-activations.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..attacks import predict
from ..cache import Artifact, Cache, CacheKey, Trained
from ..claims import FAILS, HOLDS, UNDECIDED, Claim, Comparison, DoesNotTransfer, Note, combine, correct_count
from ..data import dataset_info, load_dataset, to_tensors
from ..defenses.regroup import (
    VOTER_MODES,
    RegroupClassifier,
    RegroupOutcome,
    RegroupStatistics,
    RegroupSurrogate,
    choose_k,
    fit_regroup,
    voter_layers,
)
from ..evaluate import TOLERANCE, attack
from ..models import create_model_for
from ..params import ArchitectureSpec, AttackSpec, PretrainedSpec, RegroupParams
from ..train import train_classifier
from .base import MissingResult, Study, artifact

log = logging.getLogger("advlib")


@dataclass
class Network:
    """One dissected network: the trained classifier (model and cache key), REGroup statistics under their derived
    key, the chosen k and its sample sets.

    Index tensors point into the study's test images: `select` (the k rule), `untargeted` (Table 2),
    `targeted` (Tables 3-4), `spsa` (Table 5), all correctly classified by this network; `clean` (Table 1, every image).
    """

    name: str
    trained: Trained
    stats: RegroupStatistics
    stats_key: CacheKey
    k: int
    selection: RegroupOutcome
    select: Tensor
    untargeted: Tensor
    targeted: Tensor
    spsa: Tensor
    clean: Tensor
    test_accuracy: float

    @property
    def model(self) -> nn.Module:
        return self.trained.model

    @property
    def classifier(self) -> RegroupClassifier:
        return RegroupClassifier(self.model, self.stats, k=self.k)

    @property
    def num_layers(self) -> int:
        return len(self.stats.layer_names)


@dataclass
class AttackedSet:
    """One attack on one sample set: the set size, which samples it broke (#S) and REGroup on those #S."""

    network: str
    table: str
    row: str
    size: int
    hit: Tensor
    outcome: RegroupOutcome
    x_adv: Tensor = field(repr=False)
    eps_found: Tensor | None = field(default=None, repr=False)

    @property
    def mean_eps(self) -> float:
        """The mean smallest eps over the #S broken samples (Table 7's binary search); NaN without a search."""
        if self.eps_found is None or not bool(self.hit.any()):
            return float("nan")
        return float(self.eps_found[self.hit].mean())

    @property
    def attacked(self) -> int:
        """#S, the number of samples the attack broke."""
        return int(self.hit.sum())


def smallest_eps(
    run: Callable[[float, Tensor], tuple[Tensor, Tensor]], n: int, eps_max: float, steps: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per image, the smallest eps in (0, eps_max] at which the attack succeeds, by `steps` bisections (foolbox 2's
    binary_search=True, which the paper's Table 7 sets for Tables 3-4's PGD).

    `run(eps, index)` attacks the images `index` at budget eps and returns their adversarials and success mask.
    Returns the eps found (NaN where eps_max fails; otherwise within eps_max / 2**steps above the smallest), the
    adversarial at that eps, and the success mask at eps_max.
    """
    found, curve = smallest_eps_grid(run, n, [eps_max], steps)
    x_adv, hit = curve[0]
    return found, x_adv, hit


def smallest_eps_grid(
    run: Callable[[float, Tensor], tuple[Tensor, Tensor]], n: int, grid: Sequence[float], steps: int
) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """Per image, the smallest eps that fools: the first eps of the ascending `grid` that succeeds, refined by
    `steps` bisections between it and the grid eps below (or 0), each image attacked at a larger grid eps only
    while no smaller one fooled it (an accuracy-vs-eps curve with foolbox 2's per-image smallest adversarial).

    Returns the eps found (NaN where no grid eps fools) and, per grid eps, the adversarials (the one at the eps
    found where it is at most that grid eps, else that grid run's own) and which images are fooled within it.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0 bisections; got steps={steps}")
    if not grid or not all(e > 0 for e in grid) or list(grid) != sorted(set(grid)):
        raise ValueError(f"the eps grid must be positive and strictly ascending; got {list(grid)}")
    everything = torch.arange(n)
    first = torch.full((n,), -1, dtype=torch.long)  # index of the first grid eps that fools, -1: none
    best: Tensor | None = None  # per image, the adversarial at the smallest eps found so far
    runs: list[tuple[Tensor, Tensor]] = []  # per grid eps: the images attacked there and their adversarials
    for i, eps in enumerate(grid):
        todo = everything[first < 0]
        if best is not None and len(todo) == 0:  # every image fooled at a smaller eps
            runs.append((todo, best[:0].clone()))
            continue
        adv, ok = run(float(eps), todo)
        adv, ok = adv.clone(), ok.cpu().bool()
        if best is None:
            best = torch.empty((n, *adv.shape[1:]), dtype=adv.dtype)
        runs.append((todo, adv))
        best[todo[ok]] = adv[ok]
        first[todo[ok]] = i
    assert best is not None  # the grid is not empty
    hit = first >= 0
    edges = torch.tensor([0.0, *grid], dtype=torch.float64)
    lo, hi = edges[first.clamp(min=0)], edges[first.clamp(min=0) + 1]
    for _ in range(steps):
        mid = (lo + hi) / 2
        for value in torch.unique(mid[hit]).tolist():
            index = everything[hit & (mid == value)]
            adv, ok = run(value, index)
            ok = ok.cpu().bool()
            best[index[ok]] = adv[ok.to(adv.device)].to(best.device)
            hi[index[ok]] = value
            lo[index[~ok]] = value
    curve = []
    for i, (todo, adv) in enumerate(runs):
        x_adv = best.clone()
        failed = first[todo] != i
        x_adv[todo[failed]] = adv[failed]
        curve.append((x_adv, hit & (first <= i)))
    return torch.where(hit, hi, torch.full_like(hi, float("nan"))), curve


def _first(indices: Tensor, n: int, what: str, network: str) -> Tensor:
    """The first n of `indices`, with a warning when fewer are available."""
    if len(indices) < n:
        log.warning("%s: only %d correctly classified images for %s (asked for %d)", network, len(indices), what, n)
    return indices[:n]


class RegroupStudy(Study):
    """One notebook run: networks, statistics, adversarial sets and REGroup outcomes, each cached or memoised, and
    the paper's tables and figures declared as artifacts."""

    stem = "regroup"
    p: RegroupParams
    TIMINGS = ("table6",)  # paired with the paper on their own: wall-clock times differ from run to run
    # the training budget: each network's epochs and the S images per class behind REGroup's class-conditional
    # statistics (the training images of its generative classifiers); the evaluation attacks stay fixed
    budget = ("architectures.VGG.train.epochs", "architectures.ResNet.train.epochs", "stats.per_class")

    def __init__(self, p: RegroupParams, device: torch.device | str = "cpu", cache: Cache | None = None) -> None:
        super().__init__(p, device, cache)
        self.info = dataset_info(p.data.name)
        self.x, self.y = self.evaluation_set
        self._networks: dict[str, Network] = {}
        self.sets: dict[tuple[str, str, str], AttackedSet] = {}
        self._check_k()

    @cached_property
    def evaluation_set(self) -> tuple[Tensor, Tensor]:
        """The first `p.n_test` test images (drawn with `p.seed`), on the CPU: every sample set indexes into them."""
        p = self.p
        return to_tensors(load_dataset(p.data.name, "test", n=p.n_test, seed=p.seed, download=p.data.download))

    def _check_k(self) -> None:
        """Refuse a fixed k above an architecture's number of voting layers before anything is trained (the layers
        are counted on an untrained copy of each network)."""
        if self.p.k is None:
            return
        for name, spec in self.p.architectures.items():
            source = spec.train or cast(PretrainedSpec, spec.pretrained)  # ArchitectureSpec holds one of the two
            options = {k: v for k, v in source.model_options.items() if k not in ("weights", "download")}
            with torch.random.fork_rng():  # counting layers must not move the global RNG the runs draw from
                layers = spec.layers or voter_layers(create_model_for(source.model, self.info, **options))
            if self.p.k > len(layers):
                raise ValueError(
                    f"k={self.p.k} is larger than the number of layers {len(layers)} of {name!r} "
                    f"(allowed 1..{len(layers)}, or null for the paper's rule)"
                )

    # -- networks --------------------------------------------------------------------------
    def network(self, name: str) -> Network:
        """The network `name` of p.architectures with its statistics, k and sample sets (built once)."""
        if name not in self.p.architectures:
            raise ValueError(f"unknown network {name!r}; allowed: {', '.join(self.p.architectures)}")
        if name not in self._networks:
            self._networks[name] = self._build_network(name, self.p.architectures[name])
        return self._networks[name]

    def networks(self) -> list[Network]:
        return [self.network(name) for name in self.p.architectures]

    def _model(self, spec: ArchitectureSpec) -> Trained:
        """The classifier: trained here (cached), or created with its published weights."""
        if spec.train is not None:
            return train_classifier(spec.train, self.p.data, seed=self.p.seed, device=self.device, cache=self.cache)
        torch.manual_seed(self.p.seed)  # only matters for weights=None (dry runs)
        pretrained = cast(PretrainedSpec, spec.pretrained)  # ArchitectureSpec holds train or pretrained
        model = create_model_for(pretrained.model, self.info, **pretrained.model_options).to(self.device).eval()
        key = self.key("pretrained", model=pretrained, data=self.p.data, seed=self.p.seed)
        return Trained(model=model, history=[], key=key.key)

    def _statistics(self, trained: Trained, spec: ArchitectureSpec) -> tuple[RegroupStatistics, CacheKey]:
        """The class-conditional PMFs from S (cached) and their cache key."""
        stats_spec = self.p.stats
        key = self.key(
            "regroup_stats", model=trained, stats=stats_spec, layers=spec.layers, data=self.p.data, seed=self.p.seed
        )

        def build() -> Artifact:
            pool = load_dataset(
                self.p.data.name, "train", n=stats_spec.n_pool, seed=self.p.seed, download=self.p.data.download
            )
            stats = fit_regroup(
                trained.model,
                DataLoader(pool, batch_size=256),
                layers=spec.layers,
                per_class=stats_spec.per_class,
                weights=stats_spec.weights,
                on_empty_class=stats_spec.on_empty_class,
                voter_point=stats_spec.voter_point,
            )
            return Artifact(stats.to_tensors(), {"layer_names": stats.layer_names})

        artifact = self.cache.get_or_build(key, build, label="REGroup statistics")
        stats = RegroupStatistics.from_tensors(artifact.tensors, artifact.meta["layer_names"], stats_spec.voter_point)
        return stats, key

    def _build_network(self, name: str, spec: ArchitectureSpec) -> Network:
        trained = self._model(spec)
        model = trained.model
        stats, stats_key = self._statistics(trained, spec)
        correct = predict(model, self.x.to(self.device)).cpu() == self.y
        correct_index = correct.nonzero().flatten()
        select = _first(correct_index, self.p.n_select, "the k rule", name)
        pool = correct_index[len(select) :]
        selection = RegroupClassifier(model, stats).evaluate(self.x[select], self.y[select])
        k = self.p.k or choose_k([a / 100 for a in selection.per_layer_accuracy()], self.p.k_threshold)
        log.info("%s: %d voting layers, k = %d", name, len(stats.layer_names), k)
        return Network(
            name=name,
            trained=trained,
            stats=stats,
            stats_key=stats_key,
            k=k,
            selection=selection,
            select=select,
            untargeted=_first(pool, self.p.n_untargeted, "Table 2", name),
            targeted=_first(pool, self.p.n_targeted, "Tables 3-4", name),
            spsa=_first(pool, min(self.p.n_spsa, self.p.n_targeted), "Table 5", name),
            clean=torch.arange(min(self.p.n_clean, len(self.y))),
            test_accuracy=100 * float(correct.float().mean()),
        )

    # -- attacked sets ---------------------------------------------------------------------
    def targets(self, y: Tensor) -> Tensor:
        """A target class for each label, uniform over the other classes (seeded), as in Section 4.5."""
        m = self.info.num_classes
        offset = torch.randint(1, m, (len(y),), generator=torch.Generator().manual_seed(self.p.seed))
        return (y + offset) % m

    def attacked(
        self,
        name: str,
        table: str,
        row: str,
        spec: AttackSpec,
        which: str = "untargeted",
        *,
        model: nn.Module | None = None,
        model_key: CacheKey | None = None,
        min_confidence: float | None = None,
        only_hits: bool = True,
        search: bool = False,
    ) -> AttackedSet:
        """Attack the `which` sample set of network `name` with `spec` (on its softmax, or on `model`, whose cache key
        is `model_key`), then REGroup on the samples it broke (all samples when only_hits=False); memoised under
        (name, table, row).
        With `search` (and p.eps_search_steps > 0) each image gets the smallest eps <= spec.eps that succeeds."""
        memo = (name, table, row)
        if memo in self.sets:
            return self.sets[memo]
        net = self.network(name)
        index = getattr(net, which)
        if len(index) == 0:  # nothing to attack (a dry run of an untrained network)
            empty = torch.zeros(0, dtype=torch.bool)
            self.sets[memo] = AttackedSet(
                name, table, row, 0, empty, net.classifier.evaluate(self.x[index], self.y[index]), self.x[index]
            )
            return self.sets[memo]
        if (model is None) != (model_key is None):
            raise ValueError("attacked: pass model and model_key together (a victim other than the network's softmax)")
        victim, victim_key = (net.model, net.trained.key) if model is None else (model, cast(CacheKey, model_key).key)
        run = self._runner(net, index, spec, victim, victim_key, min_confidence)
        eps_found = None
        if search and self.p.eps_search_steps > 0 and spec.eps is not None:
            eps_found, x_adv, hit = smallest_eps(run, len(index), spec.eps, self.p.eps_search_steps)
        else:
            x_adv, hit = run(None, torch.arange(len(index)))
        keep = hit if only_hits else torch.ones_like(hit)
        outcome = net.classifier.evaluate(x_adv[keep], self.y[index][keep])
        self.sets[memo] = AttackedSet(name, table, row, len(index), hit, outcome, x_adv, eps_found)
        return self.sets[memo]

    def _runner(
        self,
        net: Network,
        index: Tensor,
        spec: AttackSpec,
        victim: nn.Module,
        victim_key: str,
        min_confidence: float | None = None,
    ) -> Callable[[float | None, Tensor], tuple[Tensor, Tensor]]:
        """`run(eps, part)`: `spec` at budget eps (None: the spec's) on the images `part` of the sample set `index`,
        returning their adversarials and which succeeded (on the CPU)."""
        x, y = self.x[index].to(self.device), self.y[index].to(self.device)
        target = self.targets(self.y[index]).to(self.device) if spec.targeted else None

        def run(eps: float | None, part: Tensor) -> tuple[Tensor, Tensor]:
            part_spec = spec if eps is None else spec.model_copy(update={"eps": float(eps)})
            tgt = None if target is None else target[part]
            result = attack(part_spec, victim, x[part], y[part], model_key=victim_key, cache=self.cache, target=tgt)
            hit = result.broken(tol=TOLERANCE)
            if min_confidence is not None:
                with torch.no_grad():
                    probs = torch.cat(
                        [net.model(result.x_adv[i : i + 256]).softmax(1) for i in range(0, len(part), 256)]
                    )
                confidence = probs.gather(1, tgt[:, None]).squeeze(1) if tgt is not None else probs.amax(1)
                hit &= confidence >= min_confidence
            return result.x_adv.cpu(), hit.cpu()

        return run

    @property
    def minimal(self) -> bool:
        """Whether Table 1, Figure 2 and Table 2's PGD follow foolbox 2's protocol (p.pgd_protocol = 'minimal')."""
        return self.p.pgd_protocol == "minimal"

    def protocol_spec(self, spec: AttackSpec) -> AttackSpec:
        """`spec` as p.pgd_protocol runs it: a PGD stops each image at its first fooling iterate under 'minimal'
        (foolbox 2's return_early=True), as given under 'fixed'."""
        if not (self.minimal and spec.name.startswith("pgd")):
            return spec
        return spec.model_copy(update={"options": {**spec.options, "early_stop": True}})

    def curve_sets(self, name: str) -> list[AttackedSet]:
        """Figure 2's attacked clean sets of network `name`, one per eps of the curve (every image counts). Under
        'minimal' one search over the curve's eps as a grid (bisected below the first eps that fools) gives each
        image its smallest adversarial, shared by every larger eps; under 'fixed' one run per eps."""
        net, curve = self.network(name), self.p.eps_curve
        rows = [f"eps={eps:g}" for eps in curve.eps]
        spec = self.protocol_spec(curve.attack)
        missing = [r for r in rows if (name, "figure2", r) not in self.sets]
        if missing and self.minimal and len(net.clean):
            grid = sorted({float(e) for e in curve.eps})
            run = self._runner(net, net.clean, spec, net.model, net.trained.key)
            found, results = smallest_eps_grid(run, len(net.clean), grid, self.p.eps_search_steps)
            y = self.y[net.clean]
            for eps, row in zip(curve.eps, rows):
                x_adv, hit = results[grid.index(float(eps))]
                eps_found = torch.where(hit, found, torch.full_like(found, float("nan")))
                outcome = net.classifier.evaluate(x_adv, y)
                self.sets[(name, "figure2", row)] = AttackedSet(
                    name, "figure2", row, len(y), hit, outcome, x_adv, eps_found
                )
        return [
            self.attacked(name, "figure2", row, spec.model_copy(update={"eps": float(eps)}), "clean", only_hits=False)
            for eps, row in zip(curve.eps, rows)
        ]

    def table1_set(self, name: str) -> AttackedSet:
        """Table 1's PGD on the clean set of network `name` (every image counts): Figure 2's set at the same eps
        when the two attacks agree but for eps (as in the paper, where eps 16 is a point of the curve)."""
        memo = (name, "table1", "PGD")
        spec, curve = self.p.table1_attack, self.p.eps_curve
        if (
            memo not in self.sets
            and spec.eps in curve.eps
            and spec.model_copy(update={"eps": curve.attack.eps}) == (curve.attack)
        ):
            shared = self.curve_sets(name)[curve.eps.index(spec.eps)]
            self.sets[memo] = dataclasses.replace(shared, table="table1", row="PGD")
        return self.attacked(
            name, "table1", "PGD", self.protocol_spec(spec), "clean", only_hits=False, search=self.minimal
        )

    def table2_set(self, name: str, row: str) -> AttackedSet:
        """Table 2's attack `row` on network `name` (PGD under p.pgd_protocol, each image at its smallest eps)."""
        spec = self.p.untargeted[row]
        search = self.minimal and spec.name.startswith("pgd")
        return self.attacked(name, "table2", row, self.protocol_spec(spec), "untargeted", search=search)

    def clean_set(self, name: str, table: str, which: str) -> AttackedSet:
        """The clean images of a sample set as an 'attack' that changes nothing (every sample counts)."""
        memo = (name, table, "Clean Images")
        if memo not in self.sets:
            net = self.network(name)
            index = getattr(net, which)
            outcome = net.classifier.evaluate(self.x[index], self.y[index])
            self.sets[memo] = AttackedSet(
                name,
                table,
                "Clean Images",
                len(index),
                torch.ones(len(index), dtype=torch.bool),
                outcome,
                self.x[index],
            )
        return self.sets[memo]

    # -- the paper's artifacts -------------------------------------------------------------
    @artifact("networks", "Per network: test accuracy (%), voting layers, the chosen k and the sizes of its sets.")
    def network_table(self) -> pd.DataFrame:
        return network_summary(self.networks())

    @artifact(
        "table1",
        "Top-1/top-5 (%) of SoftMax and REGroup on the clean images and on PGD adversarials (every image counts).",
        pair=lambda t: t,
    )
    def table1(self) -> pd.DataFrame:
        """Clean and PGD-attacked top-1/top-5 of SoftMax and REGroup on the clean set (every image counts)."""
        rows = []
        for net in self.networks():
            clean = self.clean_set(net.name, "table1", "clean").outcome
            attacked = self.table1_set(net.name).outcome
            rows.append(
                {
                    "row": f"{net.name} SoftMax",
                    "clean_top1": clean.softmax_accuracy(1),
                    "clean_top5": clean.softmax_accuracy(5),
                    "attacked_top1": attacked.softmax_accuracy(1),
                    "attacked_top5": attacked.softmax_accuracy(5),
                }
            )
            rows.append(
                {
                    "row": f"{net.name} REGroup",
                    "clean_top1": clean.accuracy(net.k),
                    "clean_top5": clean.accuracy(net.k, top=5),
                    "attacked_top1": attacked.accuracy(net.k),
                    "attacked_top5": attacked.accuracy(net.k, top=5),
                }
            )
        return pd.DataFrame(rows).set_index("row")

    @artifact(
        "figure2",
        "Top-1/top-5 (%) of SoftMax and REGroup against PGD at each eps (every image counts); wins: images only this "
        "method gets right (top-1), for a paired comparison.",
    )
    def figure2(self) -> pd.DataFrame:
        """Top-1/top-5 of SoftMax and REGroup against PGD at every eps of the curve (every image counts)."""
        rows = []
        for net in self.networks():
            for eps, paper_eps, s in zip(self.p.eps_curve.eps, self.p.paper_eps, self.curve_sets(net.name)):
                outcome = s.outcome
                softmax, regroup = outcome.softmax_top1, _per_sample(net, s)
                for method, top1, top5, wins in (
                    ("SoftMax", outcome.softmax_accuracy(1), outcome.softmax_accuracy(5), softmax & ~regroup),
                    ("REGroup", outcome.accuracy(net.k), outcome.accuracy(net.k, top=5), regroup & ~softmax),
                ):
                    rows.append(
                        {
                            "network": net.name,
                            "eps": float(eps),
                            "paper_eps": float(paper_eps),
                            "method": method,
                            "top1": top1,
                            "top5": top5,
                            "n": len(outcome),
                            "wins": int(wins.sum()),  # images this method gets right at top-1 and the other not
                        }
                    )
        return pd.DataFrame(rows)

    def _attack_table(
        self,
        table: str,
        specs: dict[str, AttackSpec],
        which: str,
        *,
        min_confidence: float | None = None,
        clean_row: bool = True,
        search: bool = False,
    ) -> pd.DataFrame:
        rows = []
        for net in self.networks():
            sets = [
                self.table2_set(net.name, row)
                if table == "table2"
                else self.attacked(
                    net.name,
                    table,
                    row,
                    spec,
                    which,
                    min_confidence=min_confidence,
                    search=search and spec.name.startswith("pgd"),
                )
                for row, spec in specs.items()
            ]
            if clean_row:
                sets.append(self.clean_set(net.name, table, which))
            for s in sets:
                rows.append(
                    {
                        "network": net.name,
                        "attack": s.row,
                        "n": s.size,
                        "attacked": s.attacked,
                        "attacked_percent": 100 * s.attacked / s.size if s.size else float("nan"),
                        "softmax": s.outcome.softmax_accuracy(),
                        "regroup": s.outcome.accuracy(net.k),
                        **({"mean_eps": s.mean_eps} if search else {}),
                    }
                )
        return pd.DataFrame(rows)

    @artifact(
        "table2",
        "Untargeted attacks: #S broken of n correctly classified images, top-1 (%) of SoftMax and REGroup over #S.",
        pair=lambda t: _rows_by_attack(t)[["attacked_percent", "softmax", "regroup"]],
    )
    def table2(self) -> pd.DataFrame:
        """Untargeted attacks: #S and the top-1 of SoftMax and REGroup over the #S broken samples."""
        return self._attack_table("table2", self.p.untargeted, "untargeted", search=self.minimal)

    @artifact(
        "table3",
        "Targeted attacks: #S and top-1 (%) over #S; PGD at each image's smallest eps found (mean_eps).",
        pair=lambda t: _rows_by_attack(t)[["softmax", "regroup"]],
    )
    def table3(self) -> pd.DataFrame:
        """Targeted attacks (random target class) on the Tables 3-4 set; PGD per image at the smallest eps found."""
        return self._attack_table("table3", self.p.targeted, "targeted", search=True)

    @artifact(
        "table4",
        "PGD adversarials the softmax holds with high confidence: #S and top-1 (%) over #S.",
        pair=lambda t: _rows_by_attack(t)[["attacked_percent", "softmax", "regroup"]],
    )
    def table4(self) -> pd.DataFrame:
        """PGD adversarials the softmax holds with at least min_confidence (untargeted and targeted)."""
        return self._attack_table(
            "table4",
            self.p.high_confidence,
            "targeted",
            min_confidence=self.p.min_confidence,
            clean_row=False,
            search=True,
        )

    @artifact(
        "table5",
        "SPSA (gradient-free) at two eps: #S and top-1 (%) over #S.",
        pair=lambda t: _rows_by_attack(t)[["attacked_percent", "softmax", "regroup"]],
    )
    def table5(self) -> pd.DataFrame:
        """SPSA, gradient-free, at two eps: does REGroup mask gradients?"""
        return self._attack_table("table5", self.p.spsa, "spsa", clean_row=False)

    @artifact(
        "figure3",
        "REGroup top-1 (%) with Pos, Neg and Pos+Neg voters on every experiment, at each network's k; n images, and "
        "gain_vs_pos / loss_vs_pos (_neg): images only Pos+Neg / only Pos (Neg) gets right, for a paired comparison.",
    )
    def figure3(self) -> pd.DataFrame:
        """Top-1 of REGroup with Pos, Neg and Pos+Neg voters for every set evaluated so far (at each network's k),
        with the images Pos+Neg alone and Pos (Neg) alone gets right."""
        rows: list[dict[str, Any]] = []
        for (name, table, row), s in self.sets.items():
            if table in ("figure2", "adaptive"):
                continue
            k = self.network(name).k
            right = {voters: s.outcome.top1[VOTER_MODES.index(voters), k - 1] for voters in VOTER_MODES}
            rows.append(
                {
                    "network": name,
                    "experiment": f"{table} {row}",
                    **{voters: s.outcome.accuracy(k, voters) for voters in VOTER_MODES},
                    "n": len(s.outcome),
                    **{
                        f"{word}_vs_{voters}": int(only.sum())
                        for voters in ("pos", "neg")
                        for word, only in (
                            ("gain", right["pos+neg"] & ~right[voters]),
                            ("loss", right[voters] & ~right["pos+neg"]),
                        )
                    },
                }
            )
        return pd.DataFrame(rows)

    def figure4(self, name: str) -> pd.DataFrame:
        """Top-1 vs k (rows k = 1..L) for clean images and every Table 2 attack, plus each layer alone
        ('per_layer', the selection set), for network `name`."""
        net = self.network(name)
        columns = {"Clean Images": self.clean_set(name, "table2", "untargeted").outcome.accuracy_vs_k()}
        for row in self.p.untargeted:
            columns[row] = self.table2_set(name, row).outcome.accuracy_vs_k()
        # per-layer accuracy of layer L - k + 1 (the lowest layer the aggregate of k adds), as the paper plots it
        columns["per_layer"] = net.selection.per_layer_accuracy()[::-1]
        frame = pd.DataFrame(columns, index=pd.RangeIndex(1, net.num_layers + 1, name="k"))
        frame["layer"] = net.stats.layer_names[::-1]
        return frame

    @artifact("figure4_VGG", "VGG: top-1 (%) vs k on the Table 2 sets, and each layer alone on the selection set.")
    def figure4_vgg(self) -> pd.DataFrame:
        return self.figure4("VGG")

    @artifact(
        "figure4_ResNet", "ResNet: top-1 (%) vs k on the Table 2 sets, and each layer alone on the selection set."
    )
    def figure4_resnet(self) -> pd.DataFrame:
        return self.figure4("ResNet")

    @artifact(
        "adaptive",
        "REGroup top-1 (%) on the Table 2 images against PGD crafted on the softmax (transfer) and on its surrogate.",
    )
    def adaptive(self) -> pd.DataFrame:
        """An adaptive check the paper does not make: REGroup's accuracy on the Table 2 set when PGD is
        crafted on the softmax (the paper's transfer protocol) vs on REGroup's differentiable KL surrogate."""
        rows = []
        for net in self.networks():
            surrogate = RegroupSurrogate(net.model, net.stats, k=net.k).eval()
            clean = self.clean_set(net.name, "table2", "untargeted")
            transfer = self.attacked(net.name, "adaptive", "transfer", self.p.adaptive, only_hits=False)
            adaptive = self.attacked(
                net.name,
                "adaptive",
                "surrogate",
                self.p.adaptive,
                model=surrogate,
                model_key=self.key("regroup_surrogate", model=net.trained, stats=net.stats_key, k=net.k),
                only_hits=False,
            )
            worst = _per_sample(net, transfer) & _per_sample(net, adaptive)
            rows.append(
                {
                    "network": net.name,
                    "k": net.k,
                    "clean": clean.outcome.accuracy(net.k),
                    "transfer_softmax": transfer.outcome.softmax_accuracy(),
                    "transfer_regroup": transfer.outcome.accuracy(net.k),
                    "adaptive_softmax": adaptive.outcome.softmax_accuracy(),
                    "adaptive_regroup": adaptive.outcome.accuracy(net.k),
                    "worst_of_both_regroup": 100 * float(worst.float().mean()) if len(worst) else float("nan"),
                }
            )
        return pd.DataFrame(rows)

    @artifact(
        "table6",
        "Seconds per batch of SoftMax and REGroup (median after a warm-up) and their ratio, per device.",
        pair=lambda t: t.pivot(index="network", columns="device", values="ratio"),
        floatfmt=4,
    )
    def table6(self) -> pd.DataFrame:
        """Inference time of SoftMax and REGroup per batch (median of repeats after a warm-up), CPU and GPU."""
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
        rows = []
        x = self.x[: self.p.timing.batch_size]
        for net in self.networks():
            for device in devices:
                model = net.model if device == self.device else copy.deepcopy(net.model).to(device)
                softmax, regroup = inference_times(
                    model, RegroupClassifier(model, net.stats, k=net.k), x.to(device), self.p.timing.repeats
                )
                rows.append(
                    {
                        "network": net.name,
                        "device": device.type,
                        "batch": len(x),
                        "softmax_s": softmax,
                        "regroup_s": regroup,
                        "ratio": regroup / softmax,
                    }
                )
        return pd.DataFrame(rows)

    @artifact("paper_vs_run", "Every published number beside this run's, per artifact (Table 6's timings aside).")
    def paper_vs_run(self) -> pd.DataFrame:
        """The pairings with the paper in the order the run produced them, without the timings of `TIMINGS`: they
        differ from run to run, so they stay in their own section (`references`) and out of this reproducible table."""
        reproducible = {name: table for name, table in self.references.items() if name not in self.TIMINGS}
        if not reproducible:
            raise MissingResult("no artifact paired with the paper (other than timings) has been produced in this run")
        return pd.concat(reproducible, names=["artifact", "row"])

    def claims(self) -> list[Claim]:
        """The paper's claims for this run's networks, Table 2 attacks, chosen k and Table 1 images."""
        nets = self.networks()
        return claims(
            [n.name for n in nets],
            list(self.p.untargeted),
            {n.name: n.k for n in nets},
            len(nets[0].clean),
            self.info.num_classes,
        )


def _rows_by_attack(t: pd.DataFrame) -> pd.DataFrame:
    """A Tables 2-5 table indexed by 'network / attack', the row names of the paper's numbers."""
    return t.assign(row=t.network + " / " + t.attack).set_index("row")


def _per_sample(net: Network, s: AttackedSet) -> Tensor:
    """Per sample of an all-samples set: is REGroup (at the network's k, Pos+Neg) still correct?"""
    return s.outcome.top1[VOTER_MODES.index("pos+neg"), net.k - 1]


def _median_time(call: Callable[[], Any], repeats: int, device: torch.device) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def inference_times(model: nn.Module, classifier: RegroupClassifier, x: Tensor, repeats: int) -> tuple[float, float]:
    """Seconds for one batch: the softmax prediction and the REGroup prediction (same model, device and batch)."""
    model.eval()

    def softmax() -> Tensor:
        with torch.no_grad():
            return model(x).softmax(1).argmax(1)

    return _median_time(softmax, repeats, x.device), _median_time(lambda: classifier.predict(x), repeats, x.device)


def network_summary(networks: Sequence[Network]) -> pd.DataFrame:
    """Per network: test accuracy, number of voting layers, per-layer selection accuracies and the chosen k."""
    return pd.DataFrame(
        [
            {
                "network": n.name,
                "test_accuracy": n.test_accuracy,
                "layers": n.num_layers,
                "k": n.k,
                "selection_images": len(n.select),
                "S_images": int(n.stats.counts.sum()),
            }
            for n in networks
        ]
    )


# -- claims ------------------------------------------------------------------------------------
Tables = Mapping[str, Any]

SOFTMAX_BROKEN = 50.0  # Figure 2's comparison judges only the eps where the softmax's top-1 is below this (%)
PAPER_VOTERS = {"VGG-19": 19, "ResNet-50": 54}  # the paper's voting layers (Figures 4 and 6)
PAPER_K = 5  # the paper's k for both networks, moved by +- 1 in its ablation
_PREFERENCE = {HOLDS: 0, UNDECIDED: 1, FAILS: 2}
FIGURE3_COUNTS = ("n", "gain_vs_pos", "loss_vs_pos", "gain_vs_neg", "loss_vs_neg")


def _rows(t: Tables, name: str) -> pd.DataFrame:
    """A Tables 2-5 table indexed by (network, attack)."""
    return t[name].set_index(["network", "attack"])


def _broken(t: Tables, name: str, rows: Sequence[tuple[str, str]] | None = None) -> pd.DataFrame:
    """The attack rows of a Tables 2-5 table (only `rows`, if given) whose attack broke at least one image (#S > 0);
    KeyError (the claim is not measured) when no attack broke any image."""
    table = _rows(t, name)
    table = table[table.index.get_level_values("attack") != "Clean Images"]
    if rows is not None:
        table = table.loc[list(rows)]
    broken = table[table["attacked"] > 0]
    if broken.empty:
        size = int(table["n"].max()) if len(table) else 0
        raise KeyError(f"no attack of {name} broke any of its {size} images at this profile (#S = 0 everywhere)")
    return broken


def some(comparisons: Sequence[Comparison]) -> Comparison:
    """The comparison that decides an existential claim ('on some experiments'): one that holds if any does, else
    one that is undecided, else the failing one closest to holding; the largest margin within a verdict. Picking
    the best of many comparisons makes one holding by chance likelier than the 5% of a single one."""
    if not comparisons:
        raise KeyError("no experiment to compare")
    return min(comparisons, key=lambda c: (_PREFERENCE[c.verdict], -c.margin[0]))


def k_window(layers: int) -> int:
    """How far k may move within the paper's relative range: its k +- 1 moves 1 of VGG-19's 19 voting layers (the
    largest share of the paper's two networks), so a network of `layers` voting layers may move k by
    floor(layers / 19) (0: not even one layer is within that share)."""
    return layers // PAPER_VOTERS["VGG-19"]


@dataclass(frozen=True)
class RegroupMeasures:
    """The measures of the paper's claims on one run: its networks, Table 2's attacks, each network's chosen k,
    Table 1's images and the chance level (%). Each measure reads only the tables its claim cites."""

    networks: tuple[str, ...]
    attacks: tuple[str, ...]
    k: Mapping[str, int]
    n_clean: int
    chance: float

    def _table1(self, t: Tables, net: str, method: str, column: str) -> float:
        return float(t["table1"].loc[f"{net} {method}", column])

    def keeps_clean(self, t: Tables) -> list[Comparison]:
        """Per network, REGroup's clean top-1 minus the softmax's against -15% of the softmax's (REGroup at least 85%
        of it). Both are scored on the same Table 1 images, which keep no discordant counts: the unpaired interval,
        the conservative one for same-image outcomes."""
        comparisons = []
        for net in self.networks:
            softmax = self._table1(t, net, "SoftMax", "clean_top1")
            counted = 100 * correct_count(softmax, self.n_clean) / self.n_clean
            regroup = self._table1(t, net, "REGroup", "clean_top1")
            comparisons.append(
                Comparison.accuracies(
                    (f"{net} REGroup", regroup),
                    (f"{net} softmax", softmax),
                    ">=",
                    self.n_clean,
                    threshold=-0.15 * counted,
                )
            )
        return comparisons

    def pgd_above_chance(self, t: Tables) -> list[Comparison]:
        """Per network, REGroup's top-1 on Table 1's PGD adversarials (every image counts) against chance (Wilson)."""
        return [
            Comparison.against(
                (f"{net} REGroup on PGD", self._table1(t, net, "REGroup", "attacked_top1")),
                self.chance,
                ">",
                self.n_clean,
            )
            for net in self.networks
        ]

    @staticmethod
    def beats_softmax_eps(t: Tables) -> list[Comparison]:
        """Per (network, eps) of Figure 2 where the softmax's top-1 is below SOFTMAX_BROKEN: REGroup against the
        softmax on the same images, paired on the images only one of them gets right (Figure 2's `wins`)."""
        f2 = t["figure2"]
        regroup = f2[f2["method"] == "REGroup"].set_index(["network", "paper_eps"])
        softmax = f2[f2["method"] == "SoftMax"].set_index(["network", "paper_eps"])
        broken = softmax.index[softmax["top1"] < SOFTMAX_BROKEN]
        if broken.empty:
            raise KeyError(
                f"the softmax is at or above {SOFTMAX_BROKEN:g}% top-1 at every eps of this run: no eps to judge"
            )
        comparisons = []
        for net, eps in broken:
            ours, theirs = regroup.loc[(net, eps)], softmax.loc[(net, eps)]
            n, wins = int(ours["n"]), int(ours["wins"])
            comparisons.append(
                Comparison.paired(
                    f"{net} REGroup eps {eps:g}",
                    "softmax",
                    wins,
                    int(theirs["wins"]),
                    n,
                    ">",
                    both=correct_count(float(ours["top1"]), n) - wins,
                )
            )
        return comparisons

    @staticmethod
    def _recovered(
        t: Tables, name: str, floor: float, rows: Sequence[tuple[str, str]] | None = None
    ) -> list[Comparison]:
        """REGroup's top-1 on each attack's #S adversarials against `floor`, the paper's lowest value (Wilson)."""
        return [
            Comparison.against((f"{net} {attack}", float(row["regroup"])), floor, ">=", int(row["attacked"]))
            for (net, attack), row in _broken(t, name, rows).iterrows()
        ]

    def recovers_attacks(self, t: Tables) -> list[Comparison]:
        return self._recovered(t, "table2", 30, [(net, a) for net in self.networks for a in self.attacks])

    def recovers_targeted(self, t: Tables) -> list[Comparison]:
        return self._recovered(t, "table3", 30)

    def recovers_high_confidence(self, t: Tables) -> list[Comparison]:
        return self._recovered(t, "table4", 17)

    @staticmethod
    def monotone_eps(t: Tables) -> list[Comparison]:
        """Per network and pair of consecutive eps of Figure 2: REGroup's top-1 at the larger eps against the smaller
        (not above it; a tie holds). The same images under two attacks, without counts of the images either alone
        gets right: the unpaired interval, the conservative one."""
        f2 = t["figure2"]
        comparisons = []
        for net, curve in f2[f2["method"] == "REGroup"].groupby("network", sort=False):
            curve = curve.sort_values("paper_eps")
            steps = list(zip(curve["paper_eps"], curve["top1"], curve["n"]))
            comparisons += [
                Comparison.accuracies((f"{net} eps {e1:g}", a1), (f"{net} eps {e0:g}", a0), "<=", int(n1), int(n0))
                for (e0, a0, n0), (e1, a1, n1) in zip(steps, steps[1:])
            ]
        return comparisons

    @staticmethod
    def pos_neg_helps(t: Tables) -> Comparison:
        """Per experiment of Figure 3 (with images), Pos+Neg against Pos and against Neg on the same images, paired on
        the images only one of the two gets right; an experiment counts where both hold, and the experiment where it
        is clearest decides (`some`)."""
        f3 = t["figure3"]
        missing = [c for c in FIGURE3_COUNTS if c not in f3.columns]
        if missing:
            raise KeyError(f"Figure 3 has no per-image counts ({', '.join(missing)}): made before they were added")
        per_experiment = []
        for _, row in f3[f3["n"] > 0].iterrows():
            n = int(row["n"])
            correct = correct_count(float(row["pos+neg"]), n)
            pair = [
                Comparison.paired(
                    f"{row['network']} {row['experiment']} Pos+Neg",
                    voters.capitalize(),
                    int(row[f"gain_vs_{voters}"]),
                    int(row[f"loss_vs_{voters}"]),
                    n,
                    ">",
                    both=correct - int(row[f"gain_vs_{voters}"]),
                )
                for voters in ("pos", "neg")
            ]
            per_experiment.append(combine(pair, "all")[1])
        return some(per_experiment)

    def flat_in_k(self, t: Tables) -> list[Comparison]:
        """Per network whose k may move within the paper's relative range (`k_window`) and Table 2 attack with
        adversarials: every pair of k in that window within 10 points, on the attack's #S images. Figure 4 keeps no
        per-image outcomes across k: the unpaired interval, the conservative one. DoesNotTransfer when no network's
        window holds a k other than the chosen one."""
        t2 = _rows(t, "table2")
        frames = {net: t[f"figure4_{net}"] for net in self.networks}
        windows = {net: k_window(len(frame)) for net, frame in frames.items()}
        if not any(windows.values()):
            voters = ", ".join(f"{100 / len(frames[net]):.1f}% of {net}'s {len(frames[net])}" for net in self.networks)
            changes = ", ".join(f"{100 / self.k[net]:.0f}% of {net}'s k = {self.k[net]}" for net in self.networks)
            vgg, resnet = PAPER_VOTERS["VGG-19"], PAPER_VOTERS["ResNet-50"]
            raise DoesNotTransfer(
                f"the paper's k +- 1 moves one of VGG-19's {vgg} (ResNet-50's {resnet}) voting layers, at most "
                f"{100 / vgg:.1f}% of them, and {100 / PAPER_K:.0f}% of its k = {PAPER_K}; here one layer is {voters} "
                f"voting layers ({changes}): no k other than the chosen one lies within the paper's relative range"
            )
        comparisons = []
        for net, width in windows.items():
            if not width:
                continue
            frame, k = frames[net], self.k[net]
            for a in self.attacks:
                size = int(t2.loc[(net, a), "attacked"])
                if size == 0:
                    continue
                window = frame.loc[max(1, k - width) : min(len(frame), k + width), a]
                comparisons += [
                    Comparison.accuracies((f"{net} {a} k = {k2}", a2), (f"k = {k1}", a1), "within", size, threshold=10)
                    for i, (k1, a1) in enumerate(window.items())
                    for k2, a2 in list(window.items())[i + 1 :]
                ]
        return comparisons

    def spsa_not_lower(self, t: Tables) -> list[Comparison]:
        """Per network and SPSA row of Table 5 with adversarials: REGroup's top-1 against its top-1 on Table 2's PGD
        adversarials (at least as high; a tie holds). Separate images (Table 5's set and Table 2's): Agresti-Caffo."""
        if "PGD" not in self.attacks:
            raise KeyError("Table 2 has no PGD row at this profile")
        pgd = _broken(t, "table2", [(net, "PGD") for net in self.networks])
        return [
            Comparison.accuracies(
                (f"{net} {attack}", float(row["regroup"])),
                (f"{net} PGD", float(pgd.loc[(net, "PGD"), "regroup"])),
                ">=",
                int(row["attacked"]),
                int(pgd.loc[(net, "PGD"), "attacked"]),
            )
            for (net, attack), row in _broken(t, "table5").iterrows()
            if net in pgd.index.get_level_values("network")
        ]

    def architectures_alike(self, t: Tables) -> list[Comparison]:
        """Per Table 2 attack that broke images of both networks: the first network's REGroup top-1 minus the last's,
        within 10 points. Each network is scored on its own #S adversarials of its own images: Agresti-Caffo."""
        if len(self.networks) < 2:
            raise KeyError("one network at this profile: nothing to compare")
        first, last = self.networks[0], self.networks[-1]
        t2 = _broken(t, "table2", [(net, a) for net in (first, last) for a in self.attacks])
        both = [a for a in self.attacks if (first, a) in t2.index and (last, a) in t2.index]
        return [
            Comparison.accuracies(
                (f"{first} {a}", float(t2.loc[(first, a), "regroup"])),
                (f"{last} {a}", float(t2.loc[(last, a), "regroup"])),
                "within",
                int(t2.loc[(first, a), "attacked"]),
                int(t2.loc[(last, a), "attacked"]),
                threshold=10,
            )
            for a in both
        ]


# -- notes: the measured context of a claim that does not hold ---------------------------------------
def _below(name: str, floor: float) -> Note:
    def note(t: Tables) -> str:
        rows = _broken(t, name)
        low = rows[rows["regroup"] < floor].sort_values("regroup")
        parts = [
            f"{net} {attack} {row['regroup']:.1f}% of #S = {int(row['attacked'])}"
            + (f" (mean eps found {row['mean_eps']:.3g})" if pd.notna(row.get("mean_eps", np.nan)) else "")
            for (net, attack), row in low.iterrows()
        ]
        return f"{len(low)} of {len(rows)} rows below {floor:g}%" + (": " + ", ".join(parts) if parts else "")

    return note


def _monotone_note(t: Tables) -> str:
    """Where REGroup rises most between consecutive eps, whether the softmax rises there too (then the attack, not
    REGroup, is weaker at the larger eps: both are scored on the same attacked images)."""
    curves = t["figure2"].pivot_table(index=["network", "paper_eps"], columns="method", values="top1")
    rises = curves.groupby(level="network", sort=False).diff().dropna()
    if rises.empty or rises["REGroup"].max() <= 0:
        return "REGroup never rises between consecutive eps"
    net, eps = rises["REGroup"].idxmax()
    at = curves.index.get_loc((net, eps))
    before, after = curves.iloc[at - 1], curves.iloc[at]
    softmax = f"{before['SoftMax']:.1f}% -> {after['SoftMax']:.1f}%"
    if after["SoftMax"] > before["SoftMax"]:
        return (
            f"at {net} eps {eps:g} the softmax rises too ({softmax}) on the same attacked images, so the attack, not "
            "REGroup, is weaker at the larger eps"
        )
    return f"at {net} eps {eps:g} the softmax does not rise ({softmax}): the rise is REGroup's own"


def _pos_neg_note(t: Tables) -> str:
    f3 = t["figure3"]
    above = (f3["pos+neg"] > f3[["pos", "neg"]].max(axis=1)).sum()
    return f"Pos+Neg is above both Pos and Neg on {above} of {len(f3)} experiments by the point estimate"


def _spsa_note(t: Tables) -> str:
    """Table 2's PGD adversarials are each image's smallest found (minimal protocol: mean_eps), Table 5's SPSA
    adversarials are not searched for a smallest eps."""
    pgd = _rows(t, "table2").xs("PGD", level="attack")
    t5 = _rows(t, "table5")
    sizes = "Table 5's #S: " + ", ".join(
        f"{net} {attack} {int(row['attacked'])} of {int(row['n'])}" for (net, attack), row in t5.iterrows()
    )
    if "mean_eps" not in pgd or pgd["mean_eps"].isna().all():
        return sizes
    found = ", ".join(f"{net} {eps:.3g}" for net, eps in pgd["mean_eps"].items())
    return (
        f"Table 2's PGD stops at each image's smallest eps found (mean: {found}), Table 5's SPSA attacks at its row's "
        f"eps; {sizes}"
    )


def _alike_note(t: Tables) -> str:
    """The two networks' #S per attack: each accuracy is over the images its own attack broke."""
    t2 = _rows(t, "table2")
    t2 = t2[t2.index.get_level_values("attack") != "Clean Images"]
    sizes = t2["attacked"].unstack("network")
    return (
        "#S per attack ("
        + " vs ".join(sizes.columns)
        + "): "
        + ", ".join(f"{a} " + " vs ".join(str(int(v)) for v in row) for a, row in sizes.iterrows())
    )


def claims(
    networks: Sequence[str], attacks: Sequence[str], k: Mapping[str, int], n_clean: int, num_classes: int
) -> list[Claim]:
    """The paper's qualitative claims on the tables they cite (table1..table5, figure2, figure3, figure4_<network>).
    `attacks` are Table 2's rows, `k` each network's chosen k, `n_clean` Table 1's images."""
    m = RegroupMeasures(tuple(networks), tuple(attacks), dict(k), n_clean, 100 / num_classes)
    figure4 = tuple(f"figure4_{net}" for net in networks)
    window = PAPER_VOTERS["VGG-19"]
    return [
        Claim(
            "keeps_clean",
            "REGroup keeps most of the clean accuracy (Table 1: 66% vs 76% top-1): at least 85% of the softmax's.",
            ("table1",),
            m.keeps_clean,
        ),
        Claim(
            "pgd_above_chance",
            "On PGD-attacked images (eps 16) REGroup recovers a share of the labels the softmax loses (Table 1: 22% "
            f"top-1 vs 0%): its top-1 is above chance ({m.chance:.0f}%) beyond the 95% sampling interval.",
            ("table1",),
            m.pgd_above_chance,
        ),
        Claim(
            "beats_softmax_eps",
            f"At every PGD eps of Figure 2 where the softmax is broken (top-1 below {SOFTMAX_BROKEN:g}%; every image "
            "counts), REGroup's top-1 is above the softmax's: on the same images, REGroup alone is right more often "
            "than the softmax alone (paired 95% interval on the discordant images).",
            ("figure2",),
            m.beats_softmax_eps,
        ),
        Claim(
            "recovers_attacks",
            "REGroup recovers a large share of the adversarials of every untargeted attack (Table 2: 30-61%): at "
            "least 30%.",
            ("table2",),
            m.recovers_attacks,
            note=_below("table2", 30),
        ),
        Claim(
            "recovers_targeted",
            "REGroup recovers a large share of the targeted PGD and C&W adversarials (Table 3: 31-47%): at least 30% "
            "for every targeted attack.",
            ("table3",),
            m.recovers_targeted,
            note=_below("table3", 30),
        ),
        Claim(
            "recovers_high_confidence",
            "Even on PGD adversarials the softmax holds with >= 90% confidence REGroup recovers some labels (Table 4: "
            "17-23%): at least 17% for every row with adversarials.",
            ("table4",),
            m.recovers_high_confidence,
            note=_below("table4", 17),
        ),
        Claim(
            "monotone_eps",
            "REGroup's accuracy decreases monotonically as the PGD eps grows (Figure 2): it never rises from one eps "
            "to the next.",
            ("figure2",),
            m.monotone_eps,
            note=_monotone_note,
        ),
        Claim(
            "pos_neg_helps",
            "Pos+Neg is better than either Pos or Neg alone on some experiments (Figure 3).",
            ("figure3",),
            m.pos_neg_helps,
            note=_pos_neg_note,
        ),
        Claim(
            "flat_in_k",
            f"A reasonable change of k changes the accuracy on the attacks of Table 2 little (Figure 4): within the "
            f"paper's relative range (its k +- 1 of VGG-19's {window} voting layers, so k +- floor(L / {window}) for "
            "L voting layers), every two k differ by at most 10 points.",
            ("table2", *figure4),
            m.flat_in_k,
        ),
        Claim(
            "spsa_not_lower",
            "Against gradient-free SPSA REGroup is at least as accurate as against PGD (Table 5 vs Table 2): no "
            "gradient masking.",
            ("table2", "table5"),
            m.spsa_not_lower,
            note=_spsa_note,
        ),
        Claim(
            "architectures_alike",
            "REGroup performs similarly on both architectures (Table 2): on every attack their accuracies are within "
            "10 points (the paper's gaps: 0-6 points).",
            ("table2",),
            m.architectures_alike,
            note=_alike_note,
        ),
    ]
