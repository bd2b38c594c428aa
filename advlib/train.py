"""One training loop for every method: `fit(step)` runs the epochs, seeds them, checkpoints and resumes them and shows
progress; a `Step` says what one batch does (clean or adversarial classifier, critic, MIMO, mixture of generators).

Determinism: each epoch reseeds its shuffling and attack randomness from (seed, epoch), and every stateful object a
step declares (modules, optimizers, schedules, random generators) is checkpointed after each epoch, so a run resumed at
epoch e sees exactly the batches and random draws an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .attacks import create_attack
from .attacks.pgd import in_layout, prefers_channels_last
from .cache import Cache, Trained, cached_model, derive_key
from .data import augment_batch, dataset_info, dataset_size, load_dataset, to_tensors
from .files import atomic_write
from .inference import accuracy
from .models import create_model_for
from .params import DataSpec, TrainSpec

log = logging.getLogger("advlib")
CHECKPOINT = "checkpoint.safetensors"
EpochCallback = Callable[[int, nn.Module, dict[str, Any]], None]
AUGMENT_STREAM = 7_919  # offset of the augmentation draws' seed from the epoch's shuffling seed


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=0.9, weight_decay=spec.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, spec: TrainSpec) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch schedule: constant, cosine to zero, x0.1 at 50% and 75% of the epochs, x gamma at milestones, or
    triangle (Smith's one cycle as MAT uses it: linear from 0 to lr over the first 40% of the epochs, then to 0; epoch
    e trains at the value the line takes at its end, so no epoch runs at lr 0)."""
    if spec.schedule == "triangle":
        peak = 0.4 * spec.epochs
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: float(np.interp(epoch + 1, [0, peak, spec.epochs + 1], [0.0, 1.0, 0.0]))
        )
    if spec.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(spec.milestones), gamma=spec.gamma)
    if spec.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.epochs)
    if spec.schedule == "step":
        milestones = sorted({max(1, spec.epochs // 2), max(1, (3 * spec.epochs) // 4)})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


class GeneratorState:
    """A torch.Generator as a checkpointable object (state_dict / load_state_dict), for steps that draw their batch
    order from one generator across epochs."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, Tensor]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        self.generator.set_state(state["state"].cpu())


class Step:
    """A training method's per-batch update; `fit` owns the epochs, seeding, checkpoints and progress.

    A subclass sets `epochs`, `model` (what the epoch callback sees) and `state` (name -> object with state_dict /
    load_state_dict: modules, optimizers, schedules, `GeneratorState`s: all that a resume must restore), and defines
    `batches(epoch, seed)` and `update(batch, epoch)`, which returns this batch's numbers to sum over the epoch.
    `record(epoch, sums, batches)` turns the sums into the epoch's history record (default: means)."""

    epochs: int
    model: nn.Module
    state: dict[str, Any]

    def num_batches(self) -> int:
        raise NotImplementedError

    def begin_epoch(self, epoch: int, seed: int) -> None:
        """Seed the epoch's global random draws from (seed, epoch) and put the model in train mode."""
        torch.manual_seed(epoch_seed(seed, epoch))
        self.model.train()

    def batches(self, epoch: int, seed: int) -> Iterable[Any]:
        raise NotImplementedError

    def update(self, batch: Any, epoch: int) -> dict[str, float]:
        raise NotImplementedError

    def record(self, epoch: int, sums: dict[str, float], batches: int) -> dict[str, Any]:
        return {"epoch": epoch + 1, **{name: value / batches for name, value in sums.items()}}

    def progress(self, record: dict[str, Any]) -> dict[str, str]:
        """What the progress bar shows after an epoch."""
        return {name: f"{record[name]:.3f}" for name in ("loss",) if name in record}


def seeded_loader(dataset: Dataset, batch_size: int, seed: int, epoch: int) -> DataLoader:
    """The epoch's shuffled batches, their order drawn from (seed, epoch)."""
    order = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=order, num_workers=0)


def _flatten(value: Any, path: str, tensors: dict[str, Tensor]) -> Any:
    """A state dict as JSON with its tensors moved into `tensors` (named by their path); dict keys keep their types."""
    if isinstance(value, Tensor):
        tensors[path] = value.detach().cpu().clone().contiguous()
        return {"tensor": path}
    if isinstance(value, Mapping):
        return {"items": [[k, _flatten(v, f"{path}.{i}", tensors)] for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, list | tuple):
        return {"list": [_flatten(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]}
    return {"value": value}


def _unflatten(tree: Any, tensors: Mapping[str, Tensor]) -> Any:
    if "tensor" in tree:
        return tensors[tree["tensor"]]
    if "items" in tree:
        return {k: _unflatten(v, tensors) for k, v in tree["items"]}
    if "list" in tree:
        return [_unflatten(v, tensors) for v in tree["list"]]
    return tree["value"]


def _tensors_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes (the checkpoint's own checksum)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be parsed or does not match its checksum."""


def _save_checkpoint(path: Path, step: Step, epoch: int, history: list[dict[str, Any]], callback_done: bool) -> None:
    """Every object of `step.state` in one safetensors file, replaced atomically; `callback_done` says whether the
    epoch callback has already run on this epoch's record."""
    tensors: dict[str, Tensor] = {}
    trees = {name: _flatten(obj.state_dict(), name, tensors) for name, obj in step.state.items()}
    meta = {
        "epoch": epoch,
        "history": history,
        "state": trees,
        "callback_done": callback_done,
        "sha256": _tensors_digest(tensors),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"advlib": json.dumps(meta, default=str)}))
    except OSError as error:
        raise OSError(
            error.errno,
            f"could not write the training checkpoint {path} ({error.strerror or error}); "
            "the previous checkpoint is kept",
        ) from error


def _load_checkpoint(path: Path, step: Step) -> tuple[int, list[dict[str, Any]], bool]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads(handle.metadata()["advlib"])
        tensors = load_file(str(path))
        if meta.get("sha256") != _tensors_digest(tensors):
            raise CorruptCheckpoint("checksum mismatch")
        if set(meta["state"]) != set(step.state):
            raise CorruptCheckpoint(f"holds {sorted(meta['state'])}, this training has {sorted(step.state)}")
    except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise CorruptCheckpoint(f"unreadable ({type(error).__name__}: {error})") from error
    for name, obj in step.state.items():
        obj.load_state_dict(_unflatten(meta["state"][name], tensors))
    return int(meta["epoch"]), list(meta["history"]), bool(meta.get("callback_done", True))


def _resume(
    checkpoint_dir: Path | None, step: Step, on_epoch: EpochCallback | None
) -> tuple[Path | None, int, list[dict[str, Any]]]:
    """(checkpoint path or None, epochs done, history); restores the step's state from an existing checkpoint and
    reruns the epoch callback if the run was killed inside it."""
    ckpt = checkpoint_dir / CHECKPOINT if checkpoint_dir is not None else None
    if ckpt is None or not ckpt.is_file():
        return ckpt, 0, []
    try:
        start, history, callback_done = _load_checkpoint(ckpt, step)
    except CorruptCheckpoint as error:
        log.warning("train: checkpoint %s is corrupt (%s); starting this build from scratch", ckpt, error)
        ckpt.unlink()
        return ckpt, 0, []
    log.info("train: resuming from the checkpoint after epoch %d (%s)", start, ckpt.parent.name)
    if not callback_done and on_epoch is not None and history:
        on_epoch(start, step.model, history[-1])
        _save_checkpoint(ckpt, step, start, history, callback_done=True)
    return ckpt, start, history


def fit(
    step: Step,
    *,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    on_epoch: EpochCallback | None = None,
    desc: str = "train",
) -> list[dict[str, Any]]:
    """Run `step` for its epochs and return the per-epoch history. After each epoch the state is checkpointed into
    `checkpoint_dir`, `on_epoch(epoch, model, record)` runs (it may add to the record) and the state is checkpointed
    again, so what the callback added survives a resume; a killed run resumes from its last epoch to the weights an
    uninterrupted run reaches."""
    ckpt, start, history = _resume(checkpoint_dir, step, on_epoch)
    with tqdm(total=(step.epochs - start) * step.num_batches(), desc=desc, leave=False) as bar:
        for epoch in range(start, step.epochs):
            step.begin_epoch(epoch, seed)
            sums: dict[str, float] = {}
            count = 0
            for batch in step.batches(epoch, seed):
                for name, value in step.update(batch, epoch).items():
                    sums[name] = sums.get(name, 0.0) + value
                count += 1
                bar.update(1)
            record = step.record(epoch, sums, count)
            history.append(record)
            bar.set_postfix(step.progress(record))
            if ckpt is not None:
                _save_checkpoint(ckpt, step, epoch + 1, history, callback_done=on_epoch is None)
            if on_epoch is not None:
                on_epoch(epoch + 1, step.model, record)
                if ckpt is not None:
                    _save_checkpoint(ckpt, step, epoch + 1, history, callback_done=True)
    step.model.eval()
    return history


class ClassifierStep(Step):
    """Clean or adversarial training of a classifier per `spec`.

    With `spec.adversary`, each batch is attacked (model in eval mode) and the loss is
    (1 - adv_weight) * CE(clean) + adv_weight * CE(adversarial); train accuracy is measured on the clean
    batch, or on the adversarial one when adv_weight = 1 (Madry-style training, no clean pass).
    `regularizer(model, x, y)` is added to every batch's loss (e.g. the VAT term of the Adversary Critic's baselines);
    `criterion(logits, y)` replaces CE where a method trains with another loss (margin maximisation: hinge).
    `spec.augment` ('crop_flip') augments every batch from a per-epoch seeded stream, so a resumed run sees the same
    images. Image batches go in as channels_last on a oneDNN CPU (`prefers_channels_last`: faster steps; only the float
    rounding of the convolutions changes). With `eval_data`, each epoch's record holds its test accuracy.
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        spec: TrainSpec,
        *,
        device: torch.device | str = "cpu",
        eval_data: tuple[Tensor, Tensor] | None = None,
        regularizer: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
        criterion: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    ) -> None:
        if dataset_size(train_set) == 0:
            raise ValueError("training set is empty")
        self.model, self.train_set, self.spec, self.device = model.to(device), train_set, spec, device
        self.eval_data, self.regularizer, self.criterion = eval_data, regularizer, criterion
        self.epochs = spec.epochs
        self.optimizer = make_optimizer(model, spec)
        self.scheduler = make_scheduler(self.optimizer, spec)
        self.adversary = create_attack(spec.adversary) if spec.adversary is not None else None
        self.state = {"model": model, "optimizer": self.optimizer, "scheduler": self.scheduler}

    def num_batches(self) -> int:
        return -(-dataset_size(self.train_set) // self.spec.batch_size)

    def batches(self, epoch: int, seed: int) -> Iterable[Any]:
        self.augment_rng = torch.Generator().manual_seed(epoch_seed(seed, epoch) + AUGMENT_STREAM)
        return seeded_loader(self.train_set, self.spec.batch_size, seed, epoch)

    def update(self, batch: Any, epoch: int) -> dict[str, float]:
        x, y = batch
        x, y = augment_batch(x.to(self.device), self.spec.augment, self.augment_rng), y.to(self.device)
        if prefers_channels_last(x):  # oneDNN computes in NHWC: no reorder of every activation and gradient
            x = in_layout(x, torch.channels_last)
        model, spec, criterion = self.model, self.spec, self.criterion
        if self.adversary is not None:
            model.eval()
            x_adv = self.adversary.perturb(model, x, y)
            model.train()
            logits = model(x_adv)
            loss = spec.adv_weight * criterion(logits, y)
            if spec.adv_weight < 1:  # the clean term only when it carries weight
                clean_logits = model(x)
                loss = loss + (1 - spec.adv_weight) * criterion(clean_logits, y)
                logits = clean_logits
        else:
            logits = model(x)
            loss = criterion(logits, y)
        if self.regularizer is not None:
            loss = loss + self.regularizer(model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"n": len(y), "correct": int((logits.argmax(1) == y).sum()), "loss_sum": float(loss.detach()) * len(y)}

    def record(self, epoch: int, sums: dict[str, float], batches: int) -> dict[str, Any]:
        self.scheduler.step()
        record = {"epoch": epoch + 1, "loss": sums["loss_sum"] / sums["n"], "train_acc": sums["correct"] / sums["n"]}
        if self.eval_data is not None:
            x, y = self.eval_data
            record["test_acc"] = accuracy(self.model, x.to(self.device), y.to(self.device))
        return record

    def progress(self, record: dict[str, Any]) -> dict[str, str]:
        return {"loss": f"{record['loss']:.3f}", "acc": f"{record['train_acc']:.3f}"}


def train_classifier(
    spec: TrainSpec | Mapping[str, Any],
    data: DataSpec | Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    cache: Cache | None = None,
) -> Trained:
    """Train `spec.model` on `data` (or load it from the cache): the one call notebooks make for a classifier.
    `spec` and `data` may be dicts with the fields of TrainSpec and DataSpec (validated: a misspelled key is an
    error); `data` defaults to DataSpec() (mnist5k)."""
    spec = spec if isinstance(spec, TrainSpec) else TrainSpec.model_validate(dict(spec))
    data = data if isinstance(data, DataSpec) else DataSpec.model_validate(dict(data or {}))
    info = dataset_info(data.name)
    torch.manual_seed(seed)
    model = create_model_for(spec.model, info, **spec.model_options).to(device)
    train_set = load_dataset(data.name, "train", n=data.n_train, download=data.download)
    test = to_tensors(load_dataset(data.name, "test", n=data.n_test, download=data.download))

    def build(module: nn.Module, checkpoint_dir: Path) -> list[dict[str, Any]]:
        step = ClassifierStep(module, train_set, spec, device=device, eval_data=test)
        return fit(step, seed=seed, checkpoint_dir=checkpoint_dir, desc=f"train {spec.model}")

    key = derive_key("model", train=spec, data=data, seed=seed)
    return cached_model(key, model, build, cache=cache, label=f"{spec.model} on {data.name}")
