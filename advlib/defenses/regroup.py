"""REGroup (Machiraju et al.): rank-aggregating ensemble of layer-wise generative classifiers.

Native PyTorch code because no maintained library implements REGroup (the authors' repository holds
only a CIFAR-10 demo). Each Conv2d/Linear layer's pre-activation gives positive and negative PMFs
(Algorithm 1); class-conditional mixtures of training PMFs are compared with a test PMF by KL
divergence, and the per-layer class rankings of the highest k layers are combined by Borda count.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

log = logging.getLogger("advlib")

PMF_FLOOR = 1e-20  # added to every accumulator before normalising (as in the authors' demo)
WEIGHT_MODES = ("softmax", "equal")
VOTER_MODES = ("pos", "neg", "pos+neg")
Weights = Literal["softmax", "equal"]
Voters = Literal["pos", "neg", "pos+neg"]


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for the block; every submodule's own mode is restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.train(training)


def _model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless model)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _batches(n: int, batch_size: int, desc: str) -> Iterator[slice]:
    """Consecutive slices of at most batch_size over n samples, with a progress bar when there are many."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got batch_size={batch_size}")
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc=desc, leave=False, disable=len(starts) < 4):
        yield slice(start, min(start + batch_size, n))


class PreactivationRecorder:
    """Forward hooks that capture the outputs (pre-activations) of a model's Conv2d and Linear layers.

    Use as a context manager (hooks are removed on exit) or call `close()`; layers are kept in the
    model's registration order, which is the forward order of the sequential models REGroup targets.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None) -> None:
        self.model = model
        available = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
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
        self._captured: dict[str, Tensor] = {}
        modules = dict(model.named_modules())
        self._handles = [modules[name].register_forward_hook(self._hook(name)) for name in names]

    def _hook(self, name: str) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        """A forward hook that stores a detached copy of the module output (before any in-place ReLU)."""

        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            self._captured[name] = output.detach().clone()

        return hook

    @property
    def layer_names(self) -> list[str]:
        """The recorded module names, in forward order."""
        return list(self._names)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Run the model on x without gradients; return its output and the captured pre-activations in order."""
        if not self._handles:
            raise RuntimeError("this PreactivationRecorder is closed; create a new one")
        self._captured = {}
        with torch.no_grad():
            output = self.model(x)
        missing = [name for name in self._names if name not in self._captured]
        if missing:
            raise RuntimeError(f"layers {missing} were not called in the forward pass")
        captured, self._captured = self._captured, {}
        return output, [captured[name] for name in self._names]

    def __call__(self, x: Tensor) -> list[Tensor]:
        """The captured pre-activations of x, one tensor per recorded layer, in forward order."""
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


def layer_pmfs(preacts: Tensor) -> tuple[Tensor, Tensor]:
    """Positive and negative PMFs (N, K) of one layer's pre-activations (Algorithm 1).

    Conv (N, C, H, W): per channel, the sums over H, W of the positive values and of |negative| values;
    linear (N, D): each neuron's positive part and |negative| part. Both get a 1e-20 floor and sum to 1.
    """
    if preacts.dim() == 4:
        pos = preacts.clamp_min(0).sum(dim=(2, 3))
        neg = (-preacts).clamp_min(0).sum(dim=(2, 3))
    elif preacts.dim() == 2:
        pos = preacts.clamp_min(0)
        neg = (-preacts).clamp_min(0)
    else:
        raise ValueError(f"pre-activations must be (N, C, H, W) or (N, D); got shape {tuple(preacts.shape)}")
    pos = pos + PMF_FLOOR
    neg = neg + PMF_FLOOR
    return pos / pos.sum(dim=-1, keepdim=True), neg / neg.sum(dim=-1, keepdim=True)


def kl_to_classes(class_pmf: Tensor, sample_pmf: Tensor) -> Tensor:
    """KL(class || sample) for every sample and class, (N, M), as sum_i C log C - C @ log P^T (no class loop)."""
    if class_pmf.shape[-1] != sample_pmf.shape[-1]:
        raise ValueError(f"class and sample PMFs must have the same length K; got {class_pmf.shape[-1]} "
                         f"and {sample_pmf.shape[-1]}")
    entropy_term = torch.special.xlogy(class_pmf, class_pmf).sum(dim=-1)  # (M,)
    cross = sample_pmf.log() @ class_pmf.T  # (N, M)
    return entropy_term.unsqueeze(0) - cross


def borda(scores: Tensor) -> Tensor:
    """Borda totals (N, M) from lower-is-better scores (N, L, M): per voter, points = M - 1 - rank.

    Rank 0 is the smallest score, so each voter gives its best class M - 1 points and its worst 0 (the
    number of classes ranked below); ties are ranked by class index. Points are summed over the L voters.
    """
    if scores.dim() != 3:
        raise ValueError(f"scores must be (N, L, M); got shape {tuple(scores.shape)}")
    num_classes = scores.shape[-1]
    order = torch.argsort(scores, dim=-1, stable=True)
    rank = torch.argsort(order, dim=-1)
    return (num_classes - 1 - rank).sum(dim=1)


def topk_accuracy(scores: Tensor, y: Tensor, k: int = 1) -> float:
    """Fraction of samples whose label is among the k highest-scoring classes of scores (N, M)."""
    num_classes = scores.shape[-1]
    if not 1 <= k <= num_classes:
        raise ValueError(f"k must be between 1 and the number of classes {num_classes}; got k={k}")
    top = torch.argsort(scores, dim=-1, descending=True, stable=True)[:, :k]
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
    """Class-conditional mixture PMFs per layer: pos[l] and neg[l] are (num_classes, K_l); counts (num_classes,)."""

    layer_names: list[str]
    pos: list[Tensor]
    neg: list[Tensor]
    counts: Tensor

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
    def from_tensors(cls, tensors: dict[str, Tensor], layer_names: Sequence[str]) -> RegroupStatistics:
        """Rebuild the statistics written by `to_tensors` for the given layer names (in forward order)."""
        expected = {"counts"} | {f"{kind}.{i}" for i in range(len(layer_names)) for kind in ("pos", "neg")}
        if set(tensors) != expected:
            raise ValueError(f"tensors for {len(layer_names)} layers must have keys {sorted(expected)}; "
                             f"got {sorted(tensors)}")
        return cls(
            layer_names=list(layer_names),
            pos=[tensors[f"pos.{i}"] for i in range(len(layer_names))],
            neg=[tensors[f"neg.{i}"] for i in range(len(layer_names))],
            counts=tensors["counts"],
        )


def fit_regroup(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    layers: Sequence[str] | None = None,
    per_class: int = 50,
    weights: Weights = "softmax",
    batch_size: int = 256,
) -> RegroupStatistics:
    """Class-conditional mixture PMFs from the first `per_class` correctly classified samples of each class.

    Mixture weights are proportional to the softmax probability of the true class ("softmax", the paper)
    or equal ("equal", the authors' demo).
    """
    if weights not in WEIGHT_MODES:
        raise ValueError(f"unknown weights={weights!r}; choose one of {', '.join(WEIGHT_MODES)}")
    if per_class < 1:
        raise ValueError(f"per_class must be a positive number of samples; got per_class={per_class}")
    if len(x) != len(y):
        raise ValueError(f"x and y must hold the same number of samples; got {len(x)} and {len(y)}")
    device = _model_device(model)
    pos_sums: list[Tensor] = []
    neg_sums: list[Tensor] = []
    weight_sums: Tensor | None = None
    counts: Tensor | None = None
    with _inference(model), PreactivationRecorder(model, layers) as recorder:
        for batch in _batches(len(x), batch_size, "REGroup statistics"):
            logits, preacts = recorder.forward(x[batch].to(device))
            labels = y[batch].to(device)
            if counts is None:
                num_classes = logits.shape[-1]
                counts = torch.zeros(num_classes, dtype=torch.int64, device=device)
                weight_sums = torch.zeros(num_classes, device=device)
            # keep correctly classified samples, at most per_class per class, first ones in order
            keep = logits.argmax(dim=-1) == labels
            onehot = nn.functional.one_hot(labels, counts.numel()) * keep.unsqueeze(1)
            position = counts.unsqueeze(0) + onehot.cumsum(dim=0)
            keep &= (position * onehot).sum(dim=1) <= per_class
            onehot = onehot * keep.unsqueeze(1)
            if weights == "softmax":
                w = logits.softmax(dim=-1).gather(1, labels.unsqueeze(1)).squeeze(1)
            else:
                w = torch.ones(len(labels), device=device)
            weighted = onehot.float() * w.unsqueeze(1)  # (B, M): weight of each kept sample in its class
            counts += onehot.sum(dim=0)
            weight_sums += weighted.sum(dim=0)
            for i, layer in enumerate(preacts):
                pos, neg = layer_pmfs(layer)
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
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(f"classes {empty} have no correctly classified sample; pass more samples of them")
    log.info("REGroup statistics from %d correctly classified samples (%d to %d per class) over %d layers",
             int(counts.sum()), int(counts.min()), int(counts.max()), len(layer_names))

    def mixture(sums: Tensor) -> Tensor:
        """Weighted average PMF per class, renormalised to sum 1."""
        pmf = sums / weight_sums.unsqueeze(1)
        return (pmf / pmf.sum(dim=1, keepdim=True)).cpu()

    return RegroupStatistics(layer_names=layer_names, pos=[mixture(s) for s in pos_sums],
                             neg=[mixture(s) for s in neg_sums], counts=counts.cpu())


class RegroupClassifier:
    """REGroup prediction: Borda count over the per-layer KL rankings of the highest k layers."""

    def __init__(self, model: nn.Module, stats: RegroupStatistics, *, k: int | None = None,
                 voters: Voters = "pos+neg", batch_size: int = 256) -> None:
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
        self._device = _model_device(model)
        self._pos = [p.to(self._device) for p in stats.pos]
        self._neg = [n.to(self._device) for n in stats.neg]

    def _layer_kl(self, x: Tensor, layer_indices: Sequence[int]) -> Tensor:
        """KL scores (N, V, M) of the chosen layers' voters (pos, neg or both per layer), lower is better."""
        names = [self.stats.layer_names[i] for i in layer_indices]
        parts: list[Tensor] = []
        with _inference(self.model), PreactivationRecorder(self.model, names) as recorder:
            for batch in _batches(len(x), self.batch_size, "REGroup scores"):
                voters = []
                for i, layer in zip(layer_indices, recorder(x[batch].to(self._device))):
                    pos, neg = layer_pmfs(layer)
                    if self.voters in ("pos", "pos+neg"):
                        voters.append(kl_to_classes(self._pos[i], pos))
                    if self.voters in ("neg", "pos+neg"):
                        voters.append(kl_to_classes(self._neg[i], neg))
                parts.append(torch.stack(voters, dim=1))
        return torch.cat(parts)

    def scores(self, x: Tensor) -> Tensor:
        """Borda totals (N, M) summed over the voters of the last k layers; higher is better."""
        num_layers = len(self.stats.layer_names)
        return borda(self._layer_kl(x, range(num_layers - self.k, num_layers))).cpu()

    def predict(self, x: Tensor, topk: int = 1) -> Tensor:
        """Predicted labels (N,) for topk=1, else the topk best classes (N, topk); ties go to the lower class index."""
        scores = self.scores(x)
        if not 1 <= topk <= scores.shape[-1]:
            raise ValueError(f"topk must be between 1 and the number of classes {scores.shape[-1]}; got topk={topk}")
        top = torch.argsort(scores, dim=-1, descending=True, stable=True)[:, :topk]
        return top[:, 0] if topk == 1 else top

    def per_layer_predictions(self, x: Tensor) -> Tensor:
        """The argmin-KL class (N, L) of every layer alone (its voters' KL summed), for `choose_k`."""
        num_layers = len(self.stats.layer_names)
        kl = self._layer_kl(x, range(num_layers))
        per_layer = kl.view(kl.shape[0], num_layers, -1, kl.shape[-1]).sum(dim=2)
        return per_layer.argmin(dim=-1).cpu()
