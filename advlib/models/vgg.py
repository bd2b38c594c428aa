"""VGG-style CNNs for small images (28x28 / 32x32)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from advlib.models.layers import (
    FeatureClassifier,
    NormalizeSpec,
    check_feature_size,
    conv_out,
    make_normalize,
    to_2tuple,
)
from advlib.models.registry import register_model

VGG_SMALL_CFG: tuple[int | str, ...] = (32, 32, "M", 64, 64, "M", 128, 128, "M")
VGG19_CFG: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
)


def vgg_features(cfg: Sequence[int | str], in_channels: int, batch_norm: bool) -> nn.Sequential:
    """VGG feature stack: an int is a conv3x3 (padding 1) [+ BatchNorm] + ReLU with that many channels,
    'M' a 2x2 max-pool."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        layers.append(nn.Conv2d(channels, int(item), 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(item)))
        layers.append(nn.ReLU())
        channels = int(item)
    return nn.Sequential(*layers)


def _feature_shape(name: str, cfg: Sequence[int | str], input_size: int | Sequence[int]) -> tuple[int, int, int]:
    """(channels, H, W) leaving `vgg_features(cfg)` for an input of `input_size`."""
    size = to_2tuple(input_size)
    feat = size
    for item in cfg:
        if item == "M":
            feat = (conv_out(feat[0], 2, stride=2), conv_out(feat[1], 2, stride=2))
    check_feature_size(name, feat, size)
    channels = [int(item) for item in cfg if item != "M"][-1]
    return channels, feat[0], feat[1]


@register_model("vgg_small")
def vgg_small(
    in_channels: int = 3,
    num_classes: int = 10,
    input_size: int | Sequence[int] = 32,
    hidden: int = 256,
    batch_norm: bool = True,
    normalize: NormalizeSpec | None = None,
) -> FeatureClassifier:
    """Small VGG-style CNN (the 'VGG-like' black-box source model of Strength in Numbers, scaled down):
    conv3x3 [32, 32, M, 64, 64, M, 128, 128, M] with BatchNorm and ReLU, then FC `hidden`, ReLU, FC.
    On 3x32x32 the features are 128x4x4; on 1x28x28, 128x3x3."""
    channels, height, width = _feature_shape("vgg_small", VGG_SMALL_CFG, input_size)
    classifier = nn.Sequential(nn.Linear(channels * height * width, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
    features = vgg_features(VGG_SMALL_CFG, in_channels, batch_norm)
    return FeatureClassifier(make_normalize(normalize), features, classifier)


@register_model("vgg19")
def vgg19(
    in_channels: int = 3,
    num_classes: int = 10,
    input_size: int | Sequence[int] = 32,
    batch_norm: bool = True,
    normalize: NormalizeSpec | None = None,
) -> FeatureClassifier:
    """VGG-19 for CIFAR-10 (kuangliu/pytorch-cifar layout, as in REGroup's CIFAR-10 demo): the 16 conv3x3 of
    VGG-19 with BatchNorm and ReLU, five max-pools, one linear layer on the 512x1x1 features."""
    channels, height, width = _feature_shape("vgg19", VGG19_CFG, input_size)
    classifier = nn.Linear(channels * height * width, num_classes)
    features = vgg_features(VGG19_CFG, in_channels, batch_norm)
    return FeatureClassifier(make_normalize(normalize), features, classifier)
