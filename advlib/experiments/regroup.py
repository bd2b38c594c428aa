"""The experiments of "Dissecting Deep Networks into an Ensemble of Generative Classifiers" (REGroup) as cached runs.

Per network: the classifier (trained here or used as published), the class-conditional statistics from the
subset S of correctly classified training images (cached), the paper's k rule on a separate selection set of
correctly classified test images, and REGroup on every adversarial set. Adversarials are crafted on the
network's own softmax output, as in the paper, and cached per attack; REGroup only reads their pre-activations.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..attacks import predict
from ..cache import Artifact, Cache, make_key
from ..data import dataset_info, load_dataset, to_tensors
from ..defenses.regroup import (VOTER_MODES, RegroupClassifier, RegroupOutcome, RegroupStatistics, RegroupSurrogate,
                                choose_k, fit_regroup, voter_layers)
from ..evaluate import TOLERANCE, attack
from ..models import create_model_for
from ..params import ArchitectureSpec, AttackSpec, RegroupParams
from ..train import train_classifier

log = logging.getLogger("advlib")


@dataclass
class Network:
    """One dissected network: the model, its cache key, REGroup statistics, the chosen k and its sample sets.

    Index tensors point into the study's test images: `select` (the k rule), `untargeted` (Table 2),
    `targeted` (Tables 3-4), `spsa` (Table 5), all correctly classified by this network; `clean` (Table 1, every image).
    """

    name: str
    model: nn.Module
    key: str
    stats: RegroupStatistics
    stats_key: str
    k: int
    selection: RegroupOutcome
    select: Tensor
    untargeted: Tensor
    targeted: Tensor
    spsa: Tensor
    clean: Tensor
    test_accuracy: float

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

    @property
    def attacked(self) -> int:
        """#S, the number of samples the attack broke."""
        return int(self.hit.sum())


def _first(indices: Tensor, n: int, what: str, network: str) -> Tensor:
    """The first n of `indices`, with a warning when fewer are available."""
    if len(indices) < n:
        log.warning("%s: only %d correctly classified images for %s (asked for %d)", network, len(indices), what, n)
    return indices[:n]


class RegroupStudy:
    """One notebook run: networks, statistics, adversarial sets and REGroup outcomes, each cached or memoised."""

    def __init__(self, p: RegroupParams, device: torch.device | str = "cpu", cache: Cache | None = None) -> None:
        self.p, self.device, self.cache = p, torch.device(device), cache or Cache()
        self.info = dataset_info(p.data.name)
        self.x, self.y = to_tensors(load_dataset(p.data.name, "test", n=p.n_test, seed=p.seed, download=p.data.download))
        self._networks: dict[str, Network] = {}
        self.sets: dict[tuple[str, str, str], AttackedSet] = {}
        self._check_k()

    def _check_k(self) -> None:
        """Refuse a fixed k above an architecture's number of voting layers before anything is trained (the layers
        are counted on an untrained copy of each network)."""
        if self.p.k is None:
            return
        for name, spec in self.p.architectures.items():
            source = spec.train or spec.pretrained
            options = {k: v for k, v in source.model_options.items() if k not in ("weights", "download")}
            with torch.random.fork_rng():  # counting layers must not move the global RNG the runs draw from
                layers = spec.layers or voter_layers(create_model_for(source.model, self.info, **options))
            if self.p.k > len(layers):
                raise ValueError(f"k={self.p.k} is larger than the number of layers {len(layers)} of {name!r} "
                                 f"(allowed 1..{len(layers)}, or null for the paper's rule)")

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

    def _model(self, spec: ArchitectureSpec) -> tuple[nn.Module, str]:
        """The classifier (trained here, or created with its published weights) and its cache key."""
        if spec.train is not None:
            trained = train_classifier(spec.train, self.p.data, seed=self.p.seed, device=self.device, cache=self.cache)
            return trained.model, trained.key
        torch.manual_seed(self.p.seed)  # only matters for weights=None (dry runs)
        pretrained = spec.pretrained
        model = create_model_for(pretrained.model, self.info, **pretrained.model_options).to(self.device).eval()
        key = make_key("pretrained", {"model": pretrained.model_dump(mode="json"), "data": self.p.data.name,
                                      "seed": self.p.seed})
        return model, key

    def _statistics(self, model: nn.Module, model_key: str, spec: ArchitectureSpec) -> tuple[RegroupStatistics, str]:
        """The class-conditional PMFs from S (cached) and their cache key."""
        stats_spec = self.p.stats
        key = {"model": model_key, "stats": stats_spec.model_dump(mode="json"), "layers": spec.layers,
               "data": self.p.data.name, "seed": self.p.seed}

        def build() -> Artifact:
            pool = load_dataset(self.p.data.name, "train", n=stats_spec.n_pool, seed=self.p.seed,
                                download=self.p.data.download)
            stats = fit_regroup(model, DataLoader(pool, batch_size=256), layers=spec.layers,
                                per_class=stats_spec.per_class, weights=stats_spec.weights,
                                on_empty_class=stats_spec.on_empty_class)
            return Artifact(stats.to_tensors(), {"layer_names": stats.layer_names})

        artifact = self.cache.get_or_build("regroup_stats", key, build, label="REGroup statistics")
        stats = RegroupStatistics.from_tensors(artifact.tensors, artifact.meta["layer_names"])
        return stats, make_key("regroup_stats", key)

    def _build_network(self, name: str, spec: ArchitectureSpec) -> Network:
        model, key = self._model(spec)
        stats, stats_key = self._statistics(model, key, spec)
        correct = predict(model, self.x.to(self.device)).cpu() == self.y
        correct_index = correct.nonzero().flatten()
        select = _first(correct_index, self.p.n_select, "the k rule", name)
        pool = correct_index[len(select):]
        selection = RegroupClassifier(model, stats).evaluate(self.x[select], self.y[select])
        k = self.p.k or choose_k([a / 100 for a in selection.per_layer_accuracy()], self.p.k_threshold)
        log.info("%s: %d voting layers, k = %d", name, len(stats.layer_names), k)
        return Network(name=name, model=model, key=key, stats=stats, stats_key=stats_key, k=k, selection=selection, select=select,
                       untargeted=_first(pool, self.p.n_untargeted, "Table 2", name),
                       targeted=_first(pool, self.p.n_targeted, "Tables 3-4", name),
                       spsa=_first(pool, min(self.p.n_spsa, self.p.n_targeted), "Table 5", name),
                       clean=torch.arange(min(self.p.n_clean, len(self.y))),
                       test_accuracy=100 * float(correct.float().mean()))

    # -- attacked sets ---------------------------------------------------------------------
    def targets(self, y: Tensor) -> Tensor:
        """A target class for each label, uniform over the other classes (seeded), as in Section 4.5."""
        m = self.info.num_classes
        offset = torch.randint(1, m, (len(y),), generator=torch.Generator().manual_seed(self.p.seed))
        return (y + offset) % m

    def attacked(self, name: str, table: str, row: str, spec: AttackSpec, which: str = "untargeted", *,
                 model: nn.Module | None = None, key_suffix: str = "", min_confidence: float | None = None,
                 only_hits: bool = True) -> AttackedSet:
        """Attack the `which` sample set of network `name` with `spec` (on its softmax, or on `model`), then
        REGroup on the samples it broke (all samples when only_hits=False); memoised under (name, table, row)."""
        memo = (name, table, row)
        if memo in self.sets:
            return self.sets[memo]
        net = self.network(name)
        index = getattr(net, which)
        if len(index) == 0:  # nothing to attack (a dry run of an untrained network)
            empty = torch.zeros(0, dtype=torch.bool)
            self.sets[memo] = AttackedSet(name, table, row, 0, empty, net.classifier.evaluate(self.x[index], self.y[index]),
                                          self.x[index])
            return self.sets[memo]
        x, y = self.x[index].to(self.device), self.y[index].to(self.device)
        target = self.targets(self.y[index]).to(self.device) if spec.targeted else None
        victim = net.model if model is None else model
        result = attack(spec, victim, x, y, model_key=net.key + key_suffix, cache=self.cache, target=target)
        hit = result.broken(tol=TOLERANCE)
        if min_confidence is not None:
            with torch.no_grad():
                probs = torch.cat([net.model(result.x_adv[i:i + 256]).softmax(1) for i in range(0, len(x), 256)])
            confidence = probs.gather(1, target[:, None]).squeeze(1) if target is not None else probs.amax(1)
            hit &= confidence >= min_confidence
        hit = hit.cpu()
        keep = hit if only_hits else torch.ones_like(hit)
        outcome = net.classifier.evaluate(result.x_adv.cpu()[keep], self.y[index][keep])
        self.sets[memo] = AttackedSet(name, table, row, len(index), hit, outcome, result.x_adv.cpu())
        return self.sets[memo]

    def clean_set(self, name: str, table: str, which: str) -> AttackedSet:
        """The clean images of a sample set as an 'attack' that changes nothing (every sample counts)."""
        memo = (name, table, "Clean Images")
        if memo not in self.sets:
            net = self.network(name)
            index = getattr(net, which)
            outcome = net.classifier.evaluate(self.x[index], self.y[index])
            self.sets[memo] = AttackedSet(name, table, "Clean Images", len(index), torch.ones(len(index), dtype=torch.bool),
                                          outcome, self.x[index])
        return self.sets[memo]

    # -- the paper's artifacts -------------------------------------------------------------
    def table1(self) -> pd.DataFrame:
        """Clean and PGD-attacked top-1/top-5 of SoftMax and REGroup on the clean set (every image counts)."""
        rows = []
        for net in self.networks():
            clean = self.clean_set(net.name, "table1", "clean").outcome
            attacked = self.attacked(net.name, "table1", "PGD", self.p.table1_attack, "clean", only_hits=False).outcome
            rows.append({"row": f"{net.name} SoftMax", "clean_top1": clean.softmax_accuracy(1),
                         "clean_top5": clean.softmax_accuracy(5), "attacked_top1": attacked.softmax_accuracy(1),
                         "attacked_top5": attacked.softmax_accuracy(5)})
            rows.append({"row": f"{net.name} REGroup", "clean_top1": clean.accuracy(net.k), "clean_top5": clean.accuracy(net.k, top=5),
                         "attacked_top1": attacked.accuracy(net.k), "attacked_top5": attacked.accuracy(net.k, top=5)})
        return pd.DataFrame(rows).set_index("row")

    def figure2(self) -> pd.DataFrame:
        """Top-1/top-5 of SoftMax and REGroup against PGD at every eps of the curve (every image counts)."""
        rows = []
        for net in self.networks():
            for eps, paper_eps in zip(self.p.eps_curve.eps, self.p.paper_eps):
                spec = self.p.eps_curve.attack.model_copy(update={"eps": float(eps)})
                outcome = self.attacked(net.name, "figure2", f"eps={eps:g}", spec, "clean", only_hits=False).outcome
                for method, top1, top5 in (("SoftMax", outcome.softmax_accuracy(1), outcome.softmax_accuracy(5)),
                                           ("REGroup", outcome.accuracy(net.k), outcome.accuracy(net.k, top=5))):
                    rows.append({"network": net.name, "eps": float(eps), "paper_eps": float(paper_eps), "method": method,
                                 "top1": top1, "top5": top5})
        return pd.DataFrame(rows)

    def _attack_table(self, table: str, specs: dict[str, AttackSpec], which: str, *,
                      min_confidence: float | None = None, clean_row: bool = True) -> pd.DataFrame:
        rows = []
        for net in self.networks():
            sets = [self.attacked(net.name, table, row, spec, which, min_confidence=min_confidence)
                    for row, spec in specs.items()]
            if clean_row:
                sets.append(self.clean_set(net.name, table, which))
            for s in sets:
                rows.append({"network": net.name, "attack": s.row, "n": s.size, "attacked": s.attacked,
                             "attacked_percent": 100 * s.attacked / s.size if s.size else float("nan"),
                             "softmax": s.outcome.softmax_accuracy(), "regroup": s.outcome.accuracy(net.k)})
        return pd.DataFrame(rows)

    def table2(self) -> pd.DataFrame:
        """Untargeted attacks: #S and the top-1 of SoftMax and REGroup over the #S broken samples."""
        return self._attack_table("table2", self.p.untargeted, "untargeted")

    def table3(self) -> pd.DataFrame:
        """Targeted attacks (random target class) on the Tables 3-4 set."""
        return self._attack_table("table3", self.p.targeted, "targeted")

    def table4(self) -> pd.DataFrame:
        """PGD adversarials the softmax holds with at least min_confidence (untargeted and targeted)."""
        return self._attack_table("table4", self.p.high_confidence, "targeted", min_confidence=self.p.min_confidence,
                                  clean_row=False)

    def table5(self) -> pd.DataFrame:
        """SPSA, gradient-free, at two eps: does REGroup mask gradients?"""
        return self._attack_table("table5", self.p.spsa, "spsa", clean_row=False)

    def figure3(self) -> pd.DataFrame:
        """Top-1 of REGroup with Pos, Neg and Pos+Neg voters for every set evaluated so far (at each network's k)."""
        rows = []
        for (name, table, row), s in self.sets.items():
            if table in ("figure2", "adaptive"):
                continue
            k = self.network(name).k
            rows.append({"network": name, "experiment": f"{table} {row}",
                         **{voters: s.outcome.accuracy(k, voters) for voters in VOTER_MODES}})
        return pd.DataFrame(rows)

    def figure4(self, name: str) -> pd.DataFrame:
        """Top-1 vs k (rows k = 1..L) for clean images and every Table 2 attack, plus each layer alone
        ('per_layer', the selection set), for network `name`."""
        net = self.network(name)
        columns = {"Clean Images": self.clean_set(name, "table2", "untargeted").outcome.accuracy_vs_k()}
        for row, spec in self.p.untargeted.items():
            columns[row] = self.attacked(name, "table2", row, spec, "untargeted").outcome.accuracy_vs_k()
        # per-layer accuracy of layer L - k + 1 (the lowest layer the aggregate of k adds), as the paper plots it
        columns["per_layer"] = net.selection.per_layer_accuracy()[::-1]
        frame = pd.DataFrame(columns, index=pd.RangeIndex(1, net.num_layers + 1, name="k"))
        frame["layer"] = net.stats.layer_names[::-1]
        return frame

    def adaptive(self) -> pd.DataFrame:
        """An adaptive check the paper does not make: REGroup's accuracy on the Table 2 set when PGD is
        crafted on the softmax (the paper's transfer protocol) vs on REGroup's differentiable KL surrogate."""
        rows = []
        for net in self.networks():
            surrogate = RegroupSurrogate(net.model, net.stats, k=net.k).eval()
            clean = self.clean_set(net.name, "table2", "untargeted")
            transfer = self.attacked(net.name, "adaptive", "transfer", self.p.adaptive, only_hits=False)
            adaptive = self.attacked(net.name, "adaptive", "surrogate", self.p.adaptive, model=surrogate,
                                     key_suffix=f"/regroup-surrogate-k{net.k}-{net.stats_key}",
                                     only_hits=False)
            worst = _per_sample(net, transfer) & _per_sample(net, adaptive)
            rows.append({"network": net.name, "k": net.k, "clean": clean.outcome.accuracy(net.k),
                         "transfer_softmax": transfer.outcome.softmax_accuracy(),
                         "transfer_regroup": transfer.outcome.accuracy(net.k),
                         "adaptive_softmax": adaptive.outcome.softmax_accuracy(),
                         "adaptive_regroup": adaptive.outcome.accuracy(net.k),
                         "worst_of_both_regroup": 100 * float(worst.float().mean()) if len(worst) else float("nan")})
        return pd.DataFrame(rows)

    def table6(self) -> pd.DataFrame:
        """Inference time of SoftMax and REGroup per batch (median of repeats after a warm-up), CPU and GPU."""
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
        rows = []
        x = self.x[:self.p.timing.batch_size]
        for net in self.networks():
            for device in devices:
                model = net.model if device == self.device else copy.deepcopy(net.model).to(device)
                softmax, regroup = inference_times(model, RegroupClassifier(model, net.stats, k=net.k), x.to(device),
                                                   self.p.timing.repeats)
                rows.append({"network": net.name, "device": device.type, "batch": len(x), "softmax_s": softmax,
                             "regroup_s": regroup, "ratio": regroup / softmax})
        return pd.DataFrame(rows)


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
    return pd.DataFrame([{"network": n.name, "test_accuracy": n.test_accuracy, "layers": n.num_layers, "k": n.k,
                          "selection_images": len(n.select), "S_images": int(n.stats.counts.sum())}
                         for n in networks])
