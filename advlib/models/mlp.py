"""Fully connected classifiers and the Adversary Critic's critic."""

from __future__ import annotations

from collections.abc import Sequence

import torch
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


class GaussianNoise(nn.Module):
    """Adds N(0, sigma^2) noise to its input, in training and at test time alike (the Adversary Critic's critic)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0; got sigma={sigma}")
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sigma * torch.randn_like(x) if self.sigma > 0 else x

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


@register_model("critic_mlp")
def critic_mlp(
    in_features: int = 784,
    num_classes: int = 10,
    width: int = 1200,
    input_sigma: float = 0.1,
    hidden_sigma: float = 0.5,
) -> nn.Sequential:
    """The adversary critic: flatten, noise(0.1), 1200 leaky-ReLU(0.2), noise(0.5), 1200 leaky-ReLU(0.2), noise(0.5),
    one logit per class (the logit at the relevant class says natural vs adversarial). 2,395,210 params on MNIST."""
    return nn.Sequential(
        nn.Flatten(),
        GaussianNoise(input_sigma),
        nn.Linear(in_features, width),
        nn.LeakyReLU(0.2),
        GaussianNoise(hidden_sigma),
        nn.Linear(width, width),
        nn.LeakyReLU(0.2),
        GaussianNoise(hidden_sigma),
        nn.Linear(width, num_classes),
    )
