"""REGroup (Machiraju et al.): rank-aggregating ensemble of layer-wise generative classifiers.

Native PyTorch code because no maintained library implements REGroup (the authors' repository holds
only a CIFAR-10 demo). Each Conv2d/Linear layer's pre-activation gives positive and negative PMFs
(Algorithm 1); class-conditional mixtures of training PMFs are compared with a test PMF by KL
divergence, and the per-layer class rankings of the highest k layers are combined by Borda count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..inference import evaluating, model_device

log = logging.getLogger("advlib")

PMF_FLOOR = 1e-20  # added to every accumulator before normalising (as in the authors' demo)
Weights = Literal["softmax", "equal"]
Voters = Literal["pos", "neg", "pos+neg"]
VoterPoint = Literal["preactivation", "conv_output"]
WEIGHT_MODES: tuple[Weights, ...] = ("softmax", "equal")
VOTER_MODES: tuple[Voters, ...] = ("pos", "neg", "pos+neg")
VOTER_POINTS: tuple[VoterPoint, ...] = ("preactivation", "conv_output")


def check_voter_point(point: str) -> VoterPoint:
    """`point` if it is a known voter point, else a ValueError naming the allowed ones."""
    if point not in VOTER_POINTS:
        raise ValueError(f"unknown voter_point={point!r}; choose one of {', '.join(VOTER_POINTS)}")
    return cast(VoterPoint, point)


def has_batch_norm(model: nn.Module) -> bool:
    """Whether the model holds a BatchNorm layer (then a conv output is not yet the ReLU's input)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _batches(n: int, batch_size: int, desc: str) -> Iterator[slice]:
    """Consecutive slices of at most batch_size over n samples, with a progress bar when there are many."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got batch_size={batch_size}")
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc=desc, leave=False, disable=len(starts) < 4):
        yield slice(start, min(start + batch_size, n))


class PreactivationRecorder:
    """Forward hooks that capture each Conv2d/Linear voter's pre-activation during a forward pass.

    `point="conv_output"` keeps the layer's own output. `point="preactivation"` (the paper's phi, the input of the
    activation function) keeps, on a network with BatchNorm, the input of the first nn.ReLU that runs after the
    voter (after BN and after a residual add); when two voters wait for one ReLU (a residual branch and its 1x1
    shortcut) the first to run gets it and the others keep their output; a voter no ReLU follows (the logits) keeps
    its output. Without BatchNorm both points are the layer output. Layers are reported in forward order (what
    "the highest k layers" means). `reduce` maps each capture to what is kept (default: a detached copy).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | None = None,
        reduce: Callable[[Tensor], Any] | None = None,
        point: VoterPoint = "preactivation",
    ) -> None:
        self.model = model
        self.point = check_voter_point(point)
        available = voter_layers(model)
        if layers is None:
            names = available
        else:
            unknown = [name for name in layers if name not in available]
            if unknown:
                raise ValueError(f"unknown layer names {unknown}; available Conv2d/Linear layers: {available}")
            if not layers:
                raise ValueError(f"layers must name at least one layer; available Conv2d/Linear layers: {available}")
            names = [name for name in available if name in set(layers)]
        if not names:
            raise ValueError("the model has no Conv2d or Linear layer to record")
        self._names = names
        self._recorded = set(names)
        self._reduce = reduce or (lambda output: output.detach().clone())
        self._captured: dict[str, Any] = {}
        self._pending: list[tuple[str, Tensor]] = []
        self._active = False
        modules = dict(model.named_modules())
        self._relu_input = point == "preactivation" and has_batch_norm(model)
        hooked = available if self._relu_input else names  # every voter takes part in matching voters to ReLUs
        self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in hooked]
        if self._relu_input:
            self._handles += [
                m.register_forward_pre_hook(self._relu_hook) for m in model.modules() if isinstance(m, nn.ReLU)
            ]

    def _store(self, name: str, tensor: Tensor) -> None:
        if name not in self._recorded:
            return
        if name in self._captured:
            raise RuntimeError(f"layer {name!r} ran twice in one forward pass; REGroup needs each voter once")
        self._captured[name] = self._reduce(tensor)

    def _flush(self, relu_input: Tensor | None) -> None:
        """Resolve the waiting voters: the first gets the ReLU's input (when given), the others their own output."""
        for i, (name, output) in enumerate(self._pending):
            self._store(name, relu_input if i == 0 and relu_input is not None else output)
        self._pending = []

    def _relu_hook(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        """A pre-hook on each ReLU: its input is the pre-activation of the voter(s) waiting for it."""
        if self._active and self._pending:
            self._flush(inputs[0])

    def _hook(self, name: str) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        """A forward hook that keeps `reduce(output)` (or, at the ReLU-input point, queues the voter for its ReLU)."""

        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if not self._active:  # the model called outside `forward` is not recorded
                return
            if self._relu_input:
                if any(name == waiting for waiting, _ in self._pending):
                    raise RuntimeError(f"layer {name!r} ran twice in one forward pass; REGroup needs each voter once")
                self._pending.append((name, output))
            else:
                self._store(name, output)

        return hook

    @property
    def layer_names(self) -> list[str]:
        """The recorded module names, in forward order once a forward pass has run (registration order before)."""
        return list(self._names)

    def forward(self, x: Tensor, *, grad: bool = False) -> tuple[Tensor, list[Any]]:
        """Run the model on x (without gradients unless `grad`); its output and the captures in forward order."""
        if not self._handles:
            raise RuntimeError("this PreactivationRecorder is closed; create a new one")
        self._captured, self._pending, self._active = {}, [], True
        try:
            with torch.set_grad_enabled(grad):
                output = self.model(x)
            self._flush(None)  # voters no ReLU followed (the logits) keep their own output
        finally:
            captured, self._captured, self._pending, self._active = self._captured, {}, [], False
        missing = [name for name in self._names if name not in captured]
        if missing:
            raise RuntimeError(f"layers {missing} were not called in the forward pass")
        self._names = list(captured)  # dicts keep insertion order: the order the hooks fired
        return output, list(captured.values())

    def __call__(self, x: Tensor) -> list[Any]:
        """The captured pre-activations of x, one per recorded layer, in forward order."""
        return self.forward(x)[1]

    def close(self) -> None:
        """Remove the hooks; later forward passes of the model are not recorded."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._captured = {}

    def __enter__(self) -> PreactivationRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def voter_layers(model: nn.Module) -> list[str]:
    """Names of the model's Conv2d and Linear modules (registration order): REGroup's default voters."""
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def accumulators(preacts: Tensor) -> tuple[Tensor, Tensor]:
    """Positive and negative response accumulators (N, K) of one layer (Algorithm 1, before normalisation).

    Conv (N, C, H, W): per channel, the sum over H, W of max(0, phi) and of max(0, -phi); linear (N, D): the
    neuron's positive and negative part.
    """
    if preacts.dim() == 4:
        return preacts.clamp_min(0).sum(dim=(2, 3)), (-preacts).clamp_min(0).sum(dim=(2, 3))
    if preacts.dim() == 2:
        return preacts.clamp_min(0), (-preacts).clamp_min(0)
    raise ValueError(f"pre-activations must be (N, C, H, W) or (N, D); got shape {tuple(preacts.shape)}")


def normalise(accumulator: Tensor) -> Tensor:
    """Accumulator plus the 1e-20 floor, divided by its sum: a PMF over the layer's units (Algorithm 1)."""
    floored = accumulator + PMF_FLOOR
    return floored / floored.sum(dim=-1, keepdim=True)


def layer_pmfs(preacts: Tensor) -> tuple[Tensor, Tensor]:
    """Positive and negative PMFs (N, K) of one layer's pre-activations (Algorithm 1); each row sums to 1."""
    pos, neg = accumulators(preacts)
    return normalise(pos), normalise(neg)


def negative_entropy(class_pmf: Tensor) -> Tensor:
    """sum_i C log C per class (M,): the sample-independent term of KL(class || sample)."""
    return torch.special.xlogy(class_pmf, class_pmf).sum(dim=-1)


def kl_to_classes(class_pmf: Tensor, sample_pmf: Tensor, entropy_term: Tensor | None = None) -> Tensor:
    """KL(class || sample) for every sample and class, (N, M), as sum_i C log C - C @ log P^T (no class loop);
    `entropy_term` is `negative_entropy(class_pmf)` when the caller has it already (the classifier keeps it)."""
    if class_pmf.shape[-1] != sample_pmf.shape[-1]:
        raise ValueError(
            f"class and sample PMFs must have the same length K; got {class_pmf.shape[-1]} and {sample_pmf.shape[-1]}"
        )
    if entropy_term is None:
        entropy_term = negative_entropy(class_pmf)  # (M,)
    cross = sample_pmf.log() @ class_pmf.T  # (N, M)
    return entropy_term.unsqueeze(0) - cross


def borda(scores: Tensor) -> Tensor:
    """Borda totals (N, M) from lower-is-better scores (N, L, M): per voter, points = M - 1 - rank.

    Rank 0 is the smallest score, so each voter gives its best class M - 1 points and its worst 0 (the
    number of classes ranked below); ties are ranked by class index. Points are summed over the L voters.
    """
    if scores.dim() != 3:
        raise ValueError(f"scores must be (N, L, M); got shape {tuple(scores.shape)}")
    return borda_points(scores).sum(dim=1)


def topk_accuracy(scores: Tensor, y: Tensor, k: int = 1) -> float:
    """Fraction of samples whose label is among the k highest-scoring classes of scores (N, M)."""
    num_classes = scores.shape[-1]
    if not 1 <= k <= num_classes:
        raise ValueError(f"k must be between 1 and the number of classes {num_classes}; got k={k}")
    top = _ranked(scores, k)
    return (top == y.to(top.device).unsqueeze(1)).any(dim=1).float().mean().item()


def choose_k(per_layer_accuracy: Sequence[float], threshold: float = 0.75) -> int:
    """The paper's layer-selection rule: the number of consecutive top layers with accuracy >= threshold.

    Counting back from the last layer, stop at the first layer below threshold; at least 1 (the last layer always votes).
    """
    if not per_layer_accuracy:
        raise ValueError("per_layer_accuracy must hold one accuracy per layer; got an empty sequence")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be an accuracy between 0 and 1; got threshold={threshold}")
    k = 0
    for accuracy in reversed(per_layer_accuracy):
        if accuracy < threshold:
            break
        k += 1
    return max(k, 1)


@dataclass
class RegroupStatistics:
    """Class-conditional mixture PMFs per layer: pos[l] and neg[l] are (num_classes, K_l); counts (num_classes,);
    voter_point: where the pre-activations were read (a classifier reads test images at the same point)."""

    layer_names: list[str]
    pos: list[Tensor]
    neg: list[Tensor]
    counts: Tensor
    voter_point: VoterPoint = "preactivation"

    @property
    def num_classes(self) -> int:
        """The number of classes M."""
        return int(self.counts.numel())

    def to_tensors(self) -> dict[str, Tensor]:
        """Plain tensors for the safetensors cache; layer names travel separately (see `from_tensors`)."""
        tensors = {"counts": self.counts.cpu().contiguous()}
        for i, (pos, neg) in enumerate(zip(self.pos, self.neg)):
            tensors[f"pos.{i}"] = pos.cpu().contiguous()
            tensors[f"neg.{i}"] = neg.cpu().contiguous()
        return tensors

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, Tensor], layer_names: Sequence[str], voter_point: VoterPoint = "preactivation"
    ) -> RegroupStatistics:
        """Rebuild the statistics written by `to_tensors` for the given layer names (in forward order)."""
        expected = {"counts"} | {f"{kind}.{i}" for i in range(len(layer_names)) for kind in ("pos", "neg")}
        if set(tensors) != expected:
            raise ValueError(
                f"tensors for {len(layer_names)} layers must have keys {sorted(expected)}; got {sorted(tensors)}"
            )
        return cls(
            layer_names=list(layer_names),
            pos=[tensors[f"pos.{i}"] for i in range(len(layer_names))],
            neg=[tensors[f"neg.{i}"] for i in range(len(layer_names))],
            counts=tensors["counts"],
            voter_point=check_voter_point(voter_point),
        )


def _check_fit_options(on_empty_class: str, voter_point: str, weights: str, per_class: int) -> None:
    """A ValueError naming the bad `fit_regroup` option and the allowed values."""
    if on_empty_class not in ("error", "uniform"):
        raise ValueError(f"unknown on_empty_class={on_empty_class!r}; choose one of error, uniform")
    check_voter_point(voter_point)
    if weights not in WEIGHT_MODES:
        raise ValueError(f"unknown weights={weights!r}; choose one of {', '.join(WEIGHT_MODES)}")
    if per_class < 1:
        raise ValueError(f"per_class must be a positive number of samples; got per_class={per_class}")


def _sample_batches(
    x: Tensor | Iterable[tuple[Tensor, Tensor]], y: Tensor | None, batch_size: int
) -> Iterable[tuple[Tensor, Tensor]]:
    """(images, labels) batches of tensors `x, y` or of an iterable of batches, with a progress bar."""
    if not isinstance(x, Tensor):
        return tqdm(x, desc="REGroup statistics", leave=False)
    if y is None or len(x) != len(y):
        raise ValueError(
            f"x and y must hold the same number of samples; got {len(x)} and {None if y is None else len(y)}"
        )
    return ((x[b], y[b]) for b in _batches(len(x), batch_size, "REGroup statistics"))


def _kept_samples(
    logits: Tensor, labels: Tensor, counts: Tensor, per_class: int, weights: str
) -> tuple[Tensor, Tensor]:
    """One-hot (B, M) of the batch's samples that enter the statistics (correctly classified, at most `per_class` per
    class counting the `counts` already kept, first ones in order) and each kept sample's mixture weight in its class."""
    keep = logits.argmax(dim=-1) == labels
    onehot = nn.functional.one_hot(labels, counts.numel()) * keep.unsqueeze(1)
    position = counts.unsqueeze(0) + onehot.cumsum(dim=0)
    keep &= (position * onehot).sum(dim=1) <= per_class
    onehot = onehot * keep.unsqueeze(1)
    if weights == "softmax":
        w = logits.softmax(dim=-1).gather(1, labels.unsqueeze(1)).squeeze(1)
    else:
        w = torch.ones(len(labels), device=logits.device)
    return onehot, onehot.float() * w.unsqueeze(1)


def _fill_empty_classes(counts: Tensor, weight_sums: Tensor, sums: list[Tensor], on_empty_class: str) -> None:
    """Classes without a kept sample: an error, or uniform PMFs with a warning (on_empty_class='uniform')."""
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty and on_empty_class == "error":
        raise ValueError(
            f"classes {empty} have no correctly classified sample; pass more samples of them "
            "(or on_empty_class='uniform' to give them uniform PMFs)"
        )
    if empty:
        log.warning("REGroup: classes %s have no correctly classified sample; their PMFs are uniform", empty)
        weight_sums[counts == 0] = 1.0
        for layer_sums in sums:
            layer_sums[counts == 0] = 1.0 / layer_sums.shape[1]


def fit_regroup(
    model: nn.Module,
    x: Tensor | Iterable[tuple[Tensor, Tensor]],
    y: Tensor | None = None,
    *,
    layers: Sequence[str] | None = None,
    per_class: int = 50,
    weights: Weights = "softmax",
    batch_size: int = 256,
    on_empty_class: Literal["error", "uniform"] = "error",
    voter_point: VoterPoint = "preactivation",
) -> RegroupStatistics:
    """Class-conditional mixture PMFs from the first `per_class` correctly classified samples of each class.

    Mixture weights are proportional to the softmax probability of the true class ("softmax", the paper)
    or equal ("equal", the authors' demo). `x, y` are tensors, or `x` is an iterable of (images, labels)
    batches (a DataLoader over a large training set; reading stops once every class is full). `voter_point`: see
    `PreactivationRecorder`. A class without any correctly classified sample is an error, or
    gets a uniform PMF with a warning when on_empty_class="uniform" (dry runs of untrained models).
    """
    _check_fit_options(on_empty_class, voter_point, weights, per_class)
    batches = _sample_batches(x, y, batch_size)
    device = model_device(model)
    pos_sums: list[Tensor] = []
    neg_sums: list[Tensor] = []
    weight_sums: Tensor | None = None
    counts: Tensor | None = None
    with (
        evaluating(model, no_grad=True),
        PreactivationRecorder(model, layers, reduce=accumulators, point=voter_point) as recorder,
    ):
        for images, labels in batches:
            logits, preacts = recorder.forward(images.to(device))
            labels = labels.to(device)
            if counts is None or weight_sums is None:  # both are set together, on the first batch
                num_classes = logits.shape[-1]
                counts = torch.zeros(num_classes, dtype=torch.int64, device=device)
                weight_sums = torch.zeros(num_classes, device=device)
            onehot, weighted = _kept_samples(logits, labels, counts, per_class, weights)
            counts += onehot.sum(dim=0)
            weight_sums += weighted.sum(dim=0)
            for i, (pos_acc, neg_acc) in enumerate(preacts):
                pos, neg = normalise(pos_acc), normalise(neg_acc)
                if i == len(pos_sums):
                    pos_sums.append(torch.zeros(counts.numel(), pos.shape[1], device=device))
                    neg_sums.append(torch.zeros(counts.numel(), neg.shape[1], device=device))
                pos_sums[i] += weighted.T @ pos
                neg_sums[i] += weighted.T @ neg
            if bool((counts >= per_class).all()):
                break
        layer_names = recorder.layer_names
    if counts is None or weight_sums is None:
        raise ValueError("x must hold at least one sample; got none")
    _fill_empty_classes(counts, weight_sums, [*pos_sums, *neg_sums], on_empty_class)
    log.info(
        "REGroup statistics from %d correctly classified samples (%d to %d per class) over %d layers",
        int(counts.sum()),
        int(counts.min()),
        int(counts.max()),
        len(layer_names),
    )

    def mixture(sums: Tensor) -> Tensor:
        """Weighted average PMF per class, renormalised to sum 1."""
        pmf = sums / weight_sums.unsqueeze(1)
        return (pmf / pmf.sum(dim=1, keepdim=True)).cpu()

    return RegroupStatistics(
        layer_names=layer_names,
        pos=[mixture(s) for s in pos_sums],
        neg=[mixture(s) for s in neg_sums],
        counts=counts.cpu(),
        voter_point=voter_point,
    )


VOTER_SLICES = {"pos": slice(0, 1), "neg": slice(1, 2), "pos+neg": slice(0, 2)}


def borda_points(kl: Tensor) -> Tensor:
    """Borda points (same shape) from lower-is-better KL scores (..., M): M - 1 - rank, ties by class index."""
    order = torch.argsort(kl, dim=-1, stable=True)
    return kl.shape[-1] - 1 - torch.argsort(order, dim=-1)


def _ranked(scores: Tensor, topk: int) -> Tensor:
    """The topk best classes (..., topk) of higher-is-better scores; ties go to the lower class index."""
    return torch.argsort(scores, dim=-1, descending=True, stable=True)[..., :topk]


@dataclass
class RegroupOutcome:
    """REGroup on one sample set, for every aggregation at once (Figures 3-4 and the tables read from it).

    top1/top5: (3, L, N) booleans, [voters, k - 1, sample] = correct with the Borda count of the highest k
    layers using voters VOTER_MODES[voters]; per_layer: (L, N), each layer alone (Pos+Neg); softmax_top1/top5 (N,).
    """

    top1: Tensor
    top5: Tensor
    per_layer: Tensor
    softmax_top1: Tensor
    softmax_top5: Tensor

    def __len__(self) -> int:
        return int(self.per_layer.shape[1])

    def accuracy(self, k: int, voters: Voters = "pos+neg", top: int = 1) -> float:
        """Top-1 (or top-5) accuracy in percent of REGroup with the highest k layers; NaN on an empty set."""
        table = {1: self.top1, 5: self.top5}.get(top)
        if table is None:
            raise ValueError(f"top must be 1 or 5; got top={top}")
        if not 1 <= k <= table.shape[1]:
            raise ValueError(f"k must be between 1 and the number of layers {table.shape[1]}; got k={k}")
        return _percent(table[VOTER_MODES.index(voters), k - 1])

    def softmax_accuracy(self, top: int = 1) -> float:
        """Top-1 (or top-5) accuracy in percent of the network's own softmax prediction."""
        return _percent(self.softmax_top1 if top == 1 else self.softmax_top5)

    def per_layer_accuracy(self) -> list[float]:
        """Accuracy in percent of each layer's own Borda count (Pos+Neg), in forward order."""
        return [_percent(row) for row in self.per_layer]

    def accuracy_vs_k(self, voters: Voters = "pos+neg") -> list[float]:
        """Top-1 accuracy in percent for k = 1 .. L."""
        return [_percent(row) for row in self.top1[VOTER_MODES.index(voters)]]


def _percent(correct: Tensor) -> float:
    return 100 * float(correct.float().mean()) if correct.numel() else float("nan")


class RegroupClassifier:
    """REGroup prediction: Borda count over the per-layer KL rankings of the highest k layers."""

    def __init__(
        self,
        model: nn.Module,
        stats: RegroupStatistics,
        *,
        k: int | None = None,
        voters: Voters = "pos+neg",
        batch_size: int = 256,
    ) -> None:
        num_layers = len(stats.layer_names)
        if k is not None and not 1 <= k <= num_layers:
            raise ValueError(f"k must be between 1 and the number of layers {num_layers} (or None for all); got k={k}")
        if voters not in VOTER_MODES:
            raise ValueError(f"unknown voters={voters!r}; choose one of {', '.join(VOTER_MODES)}")
        self.model = model
        self.stats = stats
        self.k = num_layers if k is None else k
        self.voters = voters
        self.batch_size = batch_size
        self._device = model_device(model)
        self._pos = [p.to(self._device) for p in stats.pos]
        self._neg = [n.to(self._device) for n in stats.neg]
        self._pos_entropy = [negative_entropy(p) for p in self._pos]
        self._neg_entropy = [negative_entropy(n) for n in self._neg]

    @property
    def num_layers(self) -> int:
        return len(self.stats.layer_names)

    def _votes(self, x: Tensor, first: int) -> Iterator[tuple[slice, Tensor, Tensor]]:
        """Per batch: its slice, the model logits and the Borda points (B, L', 2, M) of layers first..L-1
        (polarity 0 = Pos, 1 = Neg); the model runs once per batch with hooks only on those layers."""
        names = self.stats.layer_names[first:]
        with (
            evaluating(self.model, no_grad=True),
            PreactivationRecorder(self.model, names, reduce=accumulators, point=self.stats.voter_point) as recorder,
        ):
            for batch in _batches(len(x), self.batch_size, "REGroup"):
                logits, captured = recorder.forward(x[batch].to(self._device))
                by_name = dict(zip(recorder.layer_names, captured))
                kl = []
                for offset, name in enumerate(names):
                    pos_acc, neg_acc = by_name[name]
                    i = first + offset
                    kl.append(
                        torch.stack(
                            [
                                kl_to_classes(self._pos[i], normalise(pos_acc), self._pos_entropy[i]),
                                kl_to_classes(self._neg[i], normalise(neg_acc), self._neg_entropy[i]),
                            ],
                            dim=1,
                        )
                    )
                yield batch, logits, borda_points(torch.stack(kl, dim=1))

    def scores(self, x: Tensor) -> Tensor:
        """Borda totals (N, M) summed over the chosen voters of the last k layers; higher is better."""
        parts = [
            votes[:, :, VOTER_SLICES[self.voters]].sum(dim=(1, 2))
            for _, _, votes in self._votes(x, self.num_layers - self.k)
        ]
        return torch.cat(parts).cpu()

    def predict(self, x: Tensor, topk: int = 1) -> Tensor:
        """Predicted labels (N,) for topk=1, else the topk best classes (N, topk); ties go to the lower class index."""
        scores = self.scores(x)
        if not 1 <= topk <= scores.shape[-1]:
            raise ValueError(f"topk must be between 1 and the number of classes {scores.shape[-1]}; got topk={topk}")
        top = _ranked(scores, topk)
        return top[:, 0] if topk == 1 else top

    def per_layer_predictions(self, x: Tensor) -> Tensor:
        """Each layer's own prediction (N, L): argmax of its Pos+Neg Borda count, as in the paper's k rule."""
        parts = [_ranked(votes.sum(dim=2), 1).squeeze(-1) for _, _, votes in self._votes(x, 0)]
        return torch.cat(parts).cpu()

    def evaluate(self, x: Tensor, y: Tensor) -> RegroupOutcome:
        """Correctness of every aggregation (Pos / Neg / Pos+Neg x every k, top-1 and top-5), of every layer
        alone and of the softmax, from one forward pass per batch over all layers."""
        if len(x) != len(y):
            raise ValueError(f"x and y must hold the same number of samples; got {len(x)} and {len(y)}")
        topk = min(5, self.stats.num_classes)
        parts: dict[str, list[Tensor]] = {
            "top1": [],
            "top5": [],
            "per_layer": [],
            "softmax_top1": [],
            "softmax_top5": [],
        }
        for batch, logits, votes in self._votes(x, 0):
            labels = y[batch].to(self._device)
            # cumulative Borda over the highest k layers: reverse the layer axis, cumsum, (B, L, M) per voter mode
            totals = torch.stack(
                [votes[:, :, VOTER_SLICES[mode]].sum(dim=2).flip(1).cumsum(dim=1) for mode in VOTER_MODES], dim=0
            )
            hit = _ranked(totals, topk) == labels.view(1, -1, 1, 1)
            parts["top1"].append(hit[..., 0].transpose(1, 2))
            parts["top5"].append(hit.any(dim=-1).transpose(1, 2))
            parts["per_layer"].append((_ranked(votes.sum(dim=2), 1).squeeze(-1) == labels.unsqueeze(1)).T)
            soft = _ranked(logits, topk) == labels.unsqueeze(1)
            parts["softmax_top1"].append(soft[:, 0])
            parts["softmax_top5"].append(soft.any(dim=1))
        if not parts["top1"]:
            empty = torch.zeros(3, self.num_layers, 0, dtype=torch.bool)
            return RegroupOutcome(empty, empty.clone(), empty[0].clone(), empty[0, 0].clone(), empty[0, 0].clone())
        return RegroupOutcome(**{name: torch.cat(values, dim=-1).cpu() for name, values in parts.items()})


class RegroupSurrogate(nn.Module):
    """A differentiable stand-in for REGroup, for adaptive attacks: logits = minus the KL divergence of each
    class, summed over the chosen voters of the highest k layers (the rank step replaced by the KL it sorts).

    Native code: REGroup's Borda count has no gradient; an attacker who knows the defense descends these KLs.
    """

    def __init__(self, model: nn.Module, stats: RegroupStatistics, *, k: int, voters: Voters = "pos+neg") -> None:
        super().__init__()
        self.classifier = RegroupClassifier(model, stats, k=k, voters=voters)
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        c = self.classifier
        names = c.stats.layer_names[c.num_layers - c.k :]
        # clone inside the hook: the graph must survive the in-place ReLU that may follow the layer
        with PreactivationRecorder(
            self.model, names, reduce=lambda out: accumulators(out.clone()), point=c.stats.voter_point
        ) as recorder:
            _, captured = recorder.forward(x, grad=torch.is_grad_enabled())
            by_name = dict(zip(recorder.layer_names, captured))
        logits = torch.zeros(len(x), c.stats.num_classes, device=x.device)
        for offset, name in enumerate(names):
            i = c.num_layers - c.k + offset
            pos_acc, neg_acc = by_name[name]
            if c.voters in ("pos", "pos+neg"):
                logits = logits - kl_to_classes(c._pos[i], normalise(pos_acc), c._pos_entropy[i])
            if c.voters in ("neg", "pos+neg"):
                logits = logits - kl_to_classes(c._neg[i], normalise(neg_acc), c._neg_entropy[i])
        return logits
