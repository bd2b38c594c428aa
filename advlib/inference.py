"""Gradient-free evaluation of a model, shared by attacks, defenses and experiments: an eval-mode block that restores
every submodule's own mode, the model's device, and batched logits, labels and probabilities."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


@contextmanager
def evaluating(*modules: nn.Module, no_grad: bool = False) -> Iterator[None]:
    """Eval mode for the block (and no gradients with `no_grad`); every submodule's own mode is restored afterwards."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        if no_grad:
            with torch.no_grad():
                yield
        else:
            yield
    finally:
        for m, mode in modes:
            m.training = mode


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless model)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def logits(model: nn.Module, x: Tensor, batch_size: int | None = 512) -> Tensor:
    """The model's outputs on `x` without gradients, `batch_size` images per forward (None: one forward), each batch
    moved to the model's device and the result returned on `x`'s device."""
    device = model_device(model)
    size = len(x) if batch_size is None else batch_size
    with torch.no_grad():
        return torch.cat([model(x[i : i + size].to(device)).to(x.device) for i in range(0, len(x), max(size, 1))])


def predict(model: nn.Module, x: Tensor, batch_size: int | None = 512) -> Tensor:
    """Predicted labels, in batches, without gradients."""
    return logits(model, x, batch_size).argmax(dim=1)


def probabilities(model: nn.Module, x: Tensor, batch_size: int | None = 512) -> Tensor:
    """Softmax probabilities, in batches, without gradients."""
    return torch.softmax(logits(model, x, batch_size), dim=1)


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy in [0, 1] (model put in eval mode for the measurement, then back to its top-level mode)."""
    was_training = model.training
    model.eval()
    try:
        return float((predict(model, x, batch_size) == y).float().mean())
    finally:
        model.train(was_training)
