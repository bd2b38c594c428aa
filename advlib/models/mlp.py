"""Fully connected classifiers."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from advlib.models.layers import FeatureClassifier, NormalizeSpec, make_normalize, to_2tuple
from advlib.models.registry import register_model


@register_model("mlp1200")
def mlp1200(
    in_channels: int = 1,
    num_classes: int = 10,
    input_size: int | Sequence[int] = 28,
    depth: int = 3,
    width: int = 1200,
    normalize: NormalizeSpec | None = None,
) -> FeatureClassifier:
    """The Adversary Critic paper's MLP: flatten, `depth` hidden layers of `width` ReLU units, linear output
    (784-1200-1200-1200-10 by default, 3,836,410 params)."""
    if depth < 1 or width < 1:
        raise ValueError(f"mlp1200 needs depth >= 1 and width >= 1; got depth={depth}, width={width}")
    height, wide = to_2tuple(input_size)
    layers: list[nn.Module] = []
    fan_in = in_channels * height * wide
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), nn.ReLU()]
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return FeatureClassifier(make_normalize(normalize), nn.Identity(), nn.Sequential(*layers))
