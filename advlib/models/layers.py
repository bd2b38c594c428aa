"""Building blocks shared by the models: in-model normalisation and size helpers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NormalizeSpec = tuple[Sequence[float], Sequence[float]]
IMAGENET_NORMALIZE: NormalizeSpec = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class Normalize(nn.Module):
    """(x - mean) / std per channel, so models take raw [0, 1] images and attacks work in pixel space."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.get_default_dtype()).flatten()
        std_t = torch.as_tensor(std, dtype=torch.get_default_dtype()).flatten()
        if mean_t.numel() != std_t.numel() or mean_t.numel() == 0:
            raise ValueError(f"mean and std need the same, non-zero length; got {len(mean)} and {len(std)}")
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be positive; got {tuple(std)}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = ", ".join(f"{v:.4g}" for v in self.mean.flatten().tolist())
        std = ", ".join(f"{v:.4g}" for v in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"


def make_normalize(normalize: NormalizeSpec | None) -> nn.Module:
    """`Normalize(mean, std)` for a (mean, std) pair, `nn.Identity()` for None."""
    return nn.Identity() if normalize is None else Normalize(*normalize)


def to_2tuple(size: int | Sequence[int]) -> tuple[int, int]:
    """An image size given as int or (H, W) as an (H, W) tuple."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def conv_out(size: int, kernel: int, padding: int = 0, stride: int = 1) -> int:
    """Spatial size after a convolution or pooling layer."""
    return (size + 2 * padding - kernel) // stride + 1


def check_feature_size(model: str, size: tuple[int, ...], input_size: tuple[int, int]) -> None:
    """Raise ValueError when an input is too small for the model's stack of convs and pools."""
    if min(size) < 1:
        raise ValueError(f"input size {input_size} is too small for {model} (feature map would be {size})")


class FeatureClassifier(nn.Module):
    """normalize -> features -> flatten -> classifier; named parts make layer hooks and feature reuse easy."""

    def __init__(self, normalize: nn.Module, features: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(self.normalize(x)), 1))
