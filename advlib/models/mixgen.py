"""Generators and discriminator of the mixture-of-generators defense (paper Appendix A, Tables 4 and 5).

Generators are fully convolutional image-to-image maps (same size out as in); the discriminator scores how
canonical an image looks. Parameter counts on 1x28x28 match the paper exactly: 28,609 and 333,697.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from advlib.models.layers import check_feature_size, to_2tuple
from advlib.models.registry import register_model

GENERATOR_CHANNELS = (32, 32, 32, 32)
LARGE_GENERATOR_CHANNELS = (32, 64, 128, 128, 64, 32)
DISCRIMINATOR_STAGES = ((16, 3), (32, 2), (64, 2))  # (channels, convs) before each 2x2 average pool
DISCRIMINATOR_HIDDEN = 1024


def _conv_generator(in_channels: int, channels: Sequence[int]) -> nn.Sequential:
    """[Conv3x3 pad1, ELU, BatchNorm] per hidden width, then Conv3x3 back to `in_channels` and a sigmoid."""
    layers: list[nn.Module] = []
    previous = in_channels
    for width in channels:
        layers += [nn.Conv2d(previous, width, 3, padding=1), nn.ELU(), nn.BatchNorm2d(width)]
        previous = width
    layers += [nn.Conv2d(previous, in_channels, 3, padding=1), nn.Sigmoid()]
    return nn.Sequential(*layers)


@register_model("mixgen_generator")
def mixgen_generator(in_channels: int = 1) -> nn.Sequential:
    """Table 4 generator: 4 x [Conv3x3 32 pad1, ELU, BatchNorm], Conv3x3 1 pad1, Sigmoid.
    28,609 trainable parameters for in_channels=1; outputs images in (0, 1) of the input's size."""
    return _conv_generator(in_channels, GENERATOR_CHANNELS)


@register_model("mixgen_large_generator")
def mixgen_large_generator(in_channels: int = 1) -> nn.Sequential:
    """Table 5 large generator (Sec. 4.5): channels 32-64-128-128-64-32, each [Conv3x3 pad1, ELU, BatchNorm],
    then Conv3x3 1 pad1 and Sigmoid. 333,697 trainable parameters for in_channels=1 (about 9 generators)."""
    return _conv_generator(in_channels, LARGE_GENERATOR_CHANNELS)


@register_model("mixgen_discriminator")
def mixgen_discriminator(in_channels: int = 1, input_size: int | Sequence[int] = 28) -> nn.Sequential:
    """Table 4 discriminator: 3 x Conv3x3 16, pool, 2 x Conv3x3 32, pool, 2 x Conv3x3 64, pool (ELU after
    each conv, 2x2 average pools, 28 -> 14 -> 7 -> 3), FC 1024 ELU, FC 1.

    Returns the LOGIT of shape (N, 1): the paper's D(x) is sigmoid(logit); losses use BCE-with-logits for
    numerical stability. Table 4 lists no BatchNorm in the discriminator, so it has none.
    """
    size = to_2tuple(input_size)
    layers: list[nn.Module] = []
    previous = in_channels
    for width, convs in DISCRIMINATOR_STAGES:
        for _ in range(convs):
            layers += [nn.Conv2d(previous, width, 3, padding=1), nn.ELU()]
            previous = width
        layers.append(nn.AvgPool2d(2))
        size = (size[0] // 2, size[1] // 2)
    check_feature_size("mixgen_discriminator", size, to_2tuple(input_size))
    layers += [
        nn.Flatten(),
        nn.Linear(previous * size[0] * size[1], DISCRIMINATOR_HIDDEN),
        nn.ELU(),
        nn.Linear(DISCRIMINATOR_HIDDEN, 1),
    ]
    return nn.Sequential(*layers)
