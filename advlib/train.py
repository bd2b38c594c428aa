"""One training loop for every notebook: clean or adversarial, LR schedules, per-epoch checkpoints
that make an interrupted run resume to the same final weights, and a tqdm progress bar.

Determinism: each epoch reseeds its shuffling and attack randomness from (seed, epoch), so a run
resumed at epoch e sees exactly the batches and random starts an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
from .cache import Cache, cached_model, make_key
from .data import augment_batch, dataset_info, dataset_size, load_dataset, to_tensors
from .files import atomic_write
from .inference import accuracy
from .models import create_model_for
from .params import DataSpec, TrainSpec

log = logging.getLogger("advlib")
CHECKPOINT = "checkpoint.safetensors"
EpochCallback = Callable[[int, nn.Module, dict[str, Any]], None]


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


AUGMENT_STREAM = 7_919  # offset of the augmentation draws' seed from the epoch's shuffling seed


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def _save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    history: list[dict[str, Any]],
    callback_done: bool = True,
) -> None:
    """Model, optimizer and schedule state in one safetensors file, replaced atomically; `callback_done` says
    whether the epoch callback has already run on this epoch's record."""
    tensors = {f"model.{k}": v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for index, state in opt_state["state"].items():
        for name, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{index}.{name}"] = value.detach().cpu().clone().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    meta = {
        "epoch": epoch,
        "history": history,
        "param_groups": opt_state["param_groups"],
        "scalars": scalars,
        "scheduler": scheduler.state_dict(),
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


def _load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler
) -> tuple[int, list[dict[str, Any]], bool]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads(handle.metadata()["advlib"])
        tensors = load_file(str(path))
    except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise CorruptCheckpoint(f"unreadable ({type(error).__name__}: {error})") from error
    if meta.get("sha256") != _tensors_digest(tensors):
        raise CorruptCheckpoint("checksum mismatch")
    device = next(model.parameters()).device
    model.load_state_dict({k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value.to(device)
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    return int(meta["epoch"]), list(meta["history"]), bool(meta.get("callback_done", True))


def resume(
    checkpoint_dir: Path | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    on_epoch: EpochCallback | None = None,
) -> tuple[Path | None, int, list[dict[str, Any]]]:
    """(checkpoint path or None, epochs done, history) for a training loop; restores model, optimizer and schedule
    from an existing checkpoint and reruns the epoch callback if the run was killed inside it."""
    ckpt = checkpoint_dir / CHECKPOINT if checkpoint_dir is not None else None
    if ckpt is None or not ckpt.is_file():
        return ckpt, 0, []
    try:
        start, history, callback_done = _load_checkpoint(ckpt, model, optimizer, scheduler)
    except CorruptCheckpoint as error:
        log.warning("train: checkpoint %s is corrupt (%s); starting this build from scratch", ckpt, error)
        ckpt.unlink()
        return ckpt, 0, []
    log.info("train: resuming from the checkpoint after epoch %d (%s)", start, ckpt.parent.name)
    if not callback_done and on_epoch is not None and history:
        on_epoch(start, model, history[-1])
        _save_checkpoint(ckpt, model, optimizer, scheduler, start, history)
    return ckpt, start, history


def end_epoch(
    ckpt: Path | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    history: list[dict[str, Any]],
    on_epoch: EpochCallback | None = None,
) -> None:
    """Checkpoint the finished epoch, run the epoch callback on its record, and checkpoint again so what the
    callback added (evaluations, diagnostics) survives a resume."""
    if ckpt is not None:
        _save_checkpoint(ckpt, model, optimizer, scheduler, epoch, history, callback_done=on_epoch is None)
    if on_epoch is not None:
        on_epoch(epoch, model, history[-1])
        if ckpt is not None:
            _save_checkpoint(ckpt, model, optimizer, scheduler, epoch, history)


def fit(
    model: nn.Module,
    train_set: Dataset,
    spec: TrainSpec,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    checkpoint_dir: Path | None = None,
    eval_data: tuple[Tensor, Tensor] | None = None,
    on_epoch: EpochCallback | None = None,
    desc: str = "train",
    regularizer: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
    criterion: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> dict[str, Any]:
    """Train `model` in place per `spec`; returns {'history': [per-epoch loss, train/test accuracy]}.

    With `spec.adversary`, each batch is attacked (model in eval mode) and the loss is
    (1 - adv_weight) * CE(clean) + adv_weight * CE(adversarial); train accuracy is measured on the clean
    batch, or on the adversarial one when adv_weight = 1 (Madry-style training, no clean pass).
    `regularizer(model, x, y)` is added to every batch's loss (e.g. the VAT term of the Adversary Critic's baselines);
    `criterion(logits, y)` replaces CE where a method trains with another loss (margin maximisation: hinge).
    `spec.augment` ('crop_flip') augments every batch from a per-epoch seeded stream, so a resumed run sees the same
    images. Image batches go in as channels_last on a oneDNN CPU (`prefers_channels_last`: faster steps; only the float
    rounding of the convolutions changes).
    """
    if dataset_size(train_set) == 0:
        raise ValueError("training set is empty")
    model.to(device)
    optimizer = make_optimizer(model, spec)
    scheduler = make_scheduler(optimizer, spec)
    adversary = create_attack(spec.adversary) if spec.adversary is not None else None
    ckpt, start, history = resume(checkpoint_dir, model, optimizer, scheduler, on_epoch)
    batches = -(-dataset_size(train_set) // spec.batch_size)
    bar = tqdm(total=(spec.epochs - start) * batches, desc=desc, leave=False)
    for epoch in range(start, spec.epochs):
        torch.manual_seed(epoch_seed(seed, epoch))
        order = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        loader = DataLoader(train_set, batch_size=spec.batch_size, shuffle=True, generator=order, num_workers=0)
        augment_rng = torch.Generator().manual_seed(epoch_seed(seed, epoch) + AUGMENT_STREAM)
        model.train()
        total, correct, loss_sum = 0, 0, 0.0
        for x, y in loader:
            x, y = augment_batch(x.to(device), spec.augment, augment_rng), y.to(device)
            if prefers_channels_last(x):  # oneDNN computes in NHWC: no reorder of every activation and gradient
                x = in_layout(x, torch.channels_last)
            if adversary is not None:
                model.eval()
                x_adv = adversary.perturb(model, x, y)
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
            if regularizer is not None:
                loss = loss + regularizer(model, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(y)
            bar.update(1)
        scheduler.step()
        record = {"epoch": epoch + 1, "loss": loss_sum / total, "train_acc": correct / total}
        if eval_data is not None:
            record["test_acc"] = accuracy(model, eval_data[0].to(device), eval_data[1].to(device))
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['train_acc']:.3f}")
        end_epoch(ckpt, model, optimizer, scheduler, epoch + 1, history, on_epoch)
    bar.close()
    model.eval()
    return {"history": history}


@dataclass
class TrainedModel:
    """A trained classifier, its training metadata and the cache key that identifies it."""

    model: nn.Module
    meta: dict[str, Any]
    key: str


def _key_fields(spec: TrainSpec) -> dict[str, Any]:
    """The TrainSpec fields that identify a trained model; fields added later are left out while they hold their
    defaults, so models cached before they existed keep their keys."""
    later = {"model_options": {}, "milestones": [], "gamma": 0.1}
    return spec.model_dump(mode="json", exclude={k for k, v in later.items() if getattr(spec, k) == v})


def train_classifier(
    spec: TrainSpec | Mapping[str, Any],
    data: DataSpec | Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    cache: Cache | None = None,
) -> TrainedModel:
    """Train `spec.model` on `data` (or load it from the cache): the one call notebooks make for a classifier.
    `spec` and `data` may be dicts with the fields of TrainSpec and DataSpec (validated: a misspelled key is an
    error); `data` defaults to DataSpec() (mnist5k)."""
    spec = spec if isinstance(spec, TrainSpec) else TrainSpec.model_validate(dict(spec))
    data = data if isinstance(data, DataSpec) else DataSpec.model_validate(dict(data or {}))
    info = dataset_info(data.name)
    torch.manual_seed(seed)
    model = create_model_for(spec.model, info, **spec.model_options).to(device)
    key_params = {"train": _key_fields(spec), "data": data.model_dump(mode="json", exclude={"download"}), "seed": seed}
    train_set = load_dataset(data.name, "train", n=data.n_train, download=data.download)
    test = to_tensors(load_dataset(data.name, "test", n=data.n_test, download=data.download))

    def build(module: nn.Module, checkpoint_dir: Path) -> dict[str, Any]:
        return fit(
            module,
            train_set,
            spec,
            seed=seed,
            device=device,
            checkpoint_dir=checkpoint_dir,
            eval_data=test,
            desc=f"train {spec.model}",
        )

    model, meta = cached_model("model", key_params, model, build, cache=cache, label=f"{spec.model} on {data.name}")
    return TrainedModel(model=model.eval(), meta=meta, key=make_key("model", key_params))
