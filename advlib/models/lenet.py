"""LeNet-5 variants and the small MNIST CNN of the MSD reference code."""

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


@register_model("lenet5")
def lenet5(
    in_channels: int = 1,
    num_classes: int = 10,
    input_size: int | Sequence[int] = 28,
    normalize: NormalizeSpec | None = None,
) -> FeatureClassifier:
    """LeNet-5 of the Adversary Critic (and MIMO) papers: conv32 5x5 valid, ReLU, maxpool2, conv64 5x5 valid,
    ReLU, maxpool2, FC512, ReLU, FC. On 1x28x28 it has 582,026 parameters."""
    size = to_2tuple(input_size)
    feat = tuple(conv_out(conv_out(conv_out(conv_out(s, 5), 2, stride=2), 5), 2, stride=2) for s in size)
    check_feature_size("lenet5", feat, size)
    features = nn.Sequential(
        nn.Conv2d(in_channels, 32, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    classifier = nn.Sequential(nn.Linear(64 * feat[0] * feat[1], 512), nn.ReLU(), nn.Linear(512, num_classes))
    return FeatureClassifier(make_normalize(normalize), features, classifier)


@register_model("lenet5_classic")
def lenet5_classic(
    in_channels: int = 1,
    num_classes: int = 10,
    input_size: int | Sequence[int] = 28,
    normalize: NormalizeSpec | None = None,
) -> FeatureClassifier:
    """LeCun et al. 1998 layout with modern ReLU and max pooling (the 'LeNet5-inspired' classifier of the
    mixture-of-generators paper): conv6 5x5 pad2, pool, conv16 5x5, pool, FC120, FC84, FC. 61,706 params
    on 1x28x28."""
    size = to_2tuple(input_size)
    feat = tuple(conv_out(conv_out(conv_out(conv_out(s, 5, 2), 2, stride=2), 5), 2, stride=2) for s in size)
    check_feature_size("lenet5_classic", feat, size)
    features = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    classifier = nn.Sequential(
        nn.Linear(16 * feat[0] * feat[1], 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )
    return FeatureClassifier(make_normalize(normalize), features, classifier)


@register_model("small_cnn")
def small_cnn(
    in_channels: int = 1,
    num_classes: int = 10,
    input_size: int | Sequence[int] = 28,
    normalize: NormalizeSpec | None = None,
) -> FeatureClassifier:
    """The MNIST model of the MSD reference code (Maini et al. 2020): conv32 5x5 pad2, ReLU, maxpool2,
    conv64 5x5 pad2, ReLU, maxpool2, FC1024, ReLU, FC. 3,274,634 params on 1x28x28."""
    size = to_2tuple(input_size)
    feat = tuple(conv_out(conv_out(conv_out(conv_out(s, 5, 2), 2, stride=2), 5, 2), 2, stride=2) for s in size)
    check_feature_size("small_cnn", feat, size)
    features = nn.Sequential(
        nn.Conv2d(in_channels, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    classifier = nn.Sequential(nn.Linear(64 * feat[0] * feat[1], 1024), nn.ReLU(), nn.Linear(1024, num_classes))
    return FeatureClassifier(make_normalize(normalize), features, classifier)


@register_model("width_cnn")
def width_cnn(
    width: float = 1.0,
    in_channels: int = 1,
    num_classes: int = 10,
    input_size: int | Sequence[int] = 28,
    normalize: NormalizeSpec | None = None,
) -> FeatureClassifier:
    """A small CNN whose width scales every layer (Strength in Numbers' model family on MNIST, where width
    plays the role of the WRN width factor): conv(16w) 3x3, ReLU, maxpool2, conv(32w) 3x3, ReLU, maxpool2,
    FC(64w), ReLU, FC. Parameters grow about as w^2: width 1.42 has about twice the parameters of width 1."""
    if width <= 0:
        raise ValueError(f"width must be > 0; got width={width}")
    c1, c2, hidden = (max(1, round(base * width)) for base in (16, 32, 64))
    size = to_2tuple(input_size)
    feat = tuple(conv_out(conv_out(conv_out(conv_out(s, 3, 1), 2, stride=2), 3, 1), 2, stride=2) for s in size)
    check_feature_size("width_cnn", feat, size)
    features = nn.Sequential(
        nn.Conv2d(in_channels, c1, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    classifier = nn.Sequential(nn.Linear(c2 * feat[0] * feat[1], hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
    return FeatureClassifier(make_normalize(normalize), features, classifier)
