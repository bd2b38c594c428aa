"""Residual networks: CIFAR-style ResNets and Wide ResNets for small images, torchvision ImageNet models."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
from torch import nn

from advlib.models.layers import IMAGENET_NORMALIZE, NormalizeSpec, make_normalize
from advlib.models.registry import register_model
from advlib.weights import load_state_dict

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) with BatchNorm and a projection shortcut when shapes change."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """Identity when shapes match, else a strided 1x1 conv + BatchNorm."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class ResNet(nn.Module):
    """ResNet for small images (Kuang Liu's CIFAR layout): 3x3 stem without max-pool, four stages
    (64, 128, 256, 512 planes; strides 1, 2, 2, 2), global average pool, linear head."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: tuple[int, int, int, int],
        in_channels: int,
        num_classes: int,
        normalize: NormalizeSpec | None,
    ) -> None:
        super().__init__()
        self.normalize = make_normalize(normalize)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        stages: list[nn.Module] = []
        in_planes = 64
        for planes, blocks, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            layers = []
            for block_stride in [stride] + [1] * (blocks - 1):
                layers.append(block(in_planes, planes, block_stride))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(self.pool(out), 1))


@register_model("resnet18")
def resnet18(in_channels: int = 3, num_classes: int = 10, normalize: NormalizeSpec | None = None) -> ResNet:
    """ResNet-18 for 28x28 / 32x32 inputs (MIMO paper on MNIST); 11,173,962 params for 3 channels, 10 classes."""
    return ResNet(BasicBlock, (2, 2, 2, 2), in_channels, num_classes, normalize)


@register_model("resnet50")
def resnet50(in_channels: int = 3, num_classes: int = 10, normalize: NormalizeSpec | None = None) -> ResNet:
    """ResNet-50 for 32x32 inputs (MIMO paper on CIFAR-10), same small-image stem as `resnet18`."""
    return ResNet(Bottleneck, (3, 4, 6, 3), in_channels, num_classes, normalize)


class WideBasic(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, 1x1 shortcut when shapes change."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.equal = in_planes == out_planes and stride == 1
        self.shortcut = nn.Identity() if self.equal else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.dropout(self.relu(self.bn2(self.conv1(pre)))))
        return out + (x if self.equal else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-depth-width (Zagoruyko & Komodakis 2016): 3x3 stem (16), three groups of (depth-4)/6 wide blocks
    with 16w, 32w, 64w planes (strides 1, 2, 2), BN-ReLU, global average pool, linear head."""

    def __init__(
        self,
        depth: int,
        width: int,
        in_channels: int,
        num_classes: int,
        dropout: float,
        normalize: NormalizeSpec | None,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0 or width < 1:
            raise ValueError(
                f"wrn needs depth = 6n + 4 >= 10 and width >= 1 (e.g. 28, 10); got depth={depth}, width={width}"
            )
        blocks = (depth - 4) // 6
        planes = (16, 16 * width, 32 * width, 64 * width)
        self.normalize = make_normalize(normalize)
        self.stem = nn.Conv2d(in_channels, planes[0], 3, padding=1, bias=False)
        groups = []
        for i, stride in enumerate((1, 2, 2)):
            layers = [WideBasic(planes[i], planes[i + 1], stride, dropout)]
            layers += [WideBasic(planes[i + 1], planes[i + 1], 1, dropout) for _ in range(blocks - 1)]
            groups.append(nn.Sequential(*layers))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(planes[3])
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.stem(self.normalize(x)))))
        return self.fc(torch.flatten(self.pool(self.relu(self.bn(out))), 1))


@register_model("wrn")
def wrn(
    depth: int = 28,
    width: int = 10,
    in_channels: int = 3,
    num_classes: int = 10,
    dropout: float = 0.0,
    normalize: NormalizeSpec | None = None,
) -> WideResNet:
    """Wide ResNet (Strength in Numbers baseline is WRN-28-10: 36,479,194 params on CIFAR-10)."""
    return WideResNet(depth, width, in_channels, num_classes, dropout, normalize)


def _torchvision_model(
    name: str,
    builder: Callable[..., nn.Module],
    weights_enum: type[WeightsEnum],
    weights: str | None,
    download: bool,
    num_classes: int,
    normalize: NormalizeSpec | None,
) -> nn.Sequential:
    """A torchvision model behind a Normalize layer; named weights load (weights-only, `advlib.weights`) from the
    local torch hub cache only, unless `download` is set."""
    weight = None
    if weights is not None:
        allowed = list(weights_enum.__members__)
        if weights not in allowed:
            raise ValueError(f"unknown weights {weights!r} for {name}; choose one of {', '.join(allowed)} or None")
        weight = weights_enum[weights]
        local = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weight.url).path).name
        if not download and not local.is_file():
            raise FileNotFoundError(
                f"weights {weights!r} for {name} are not in the local cache {local}; "
                f"place the file there (or set TORCH_HOME) or pass download=True"
            )
        classes = len(weight.meta["categories"])
        if num_classes != classes:
            raise ValueError(
                f"weights {weights!r} for {name} have {classes} classes; num_classes={num_classes} does not match"
            )
        if download and not local.is_file():
            local.parent.mkdir(parents=True, exist_ok=True)
            digest = torch.hub.HASH_REGEX.search(local.name)  # torchvision names files <arch>-<sha256 prefix>.pth
            torch.hub.download_url_to_file(
                weight.url, str(local), hash_prefix=digest.group(1) if digest else None, progress=False
            )
    net = builder(weights=None, num_classes=num_classes)
    if weight is not None:  # loaded here, weights-only: torchvision's own path unpickles the hub file in full
        net.load_state_dict(load_state_dict(local))
    return nn.Sequential(OrderedDict(normalize=make_normalize(normalize), net=net))


@register_model("resnet50_imagenet")
def resnet50_imagenet(
    weights: str | None = None,
    download: bool = False,
    num_classes: int = 1000,
    normalize: NormalizeSpec | None = IMAGENET_NORMALIZE,
) -> nn.Sequential:
    """torchvision ResNet-50 (REGroup's ImageNet model) with ImageNet normalisation inside; weights e.g.
    'IMAGENET1K_V1' load from the torch hub cache."""
    from torchvision.models import ResNet50_Weights
    from torchvision.models import resnet50 as tv_resnet50

    return _torchvision_model(
        "resnet50_imagenet", tv_resnet50, ResNet50_Weights, weights, download, num_classes, normalize
    )


@register_model("vgg19_imagenet")
def vgg19_imagenet(
    weights: str | None = None,
    download: bool = False,
    num_classes: int = 1000,
    normalize: NormalizeSpec | None = IMAGENET_NORMALIZE,
) -> nn.Sequential:
    """torchvision VGG-19 (REGroup's ImageNet model) with ImageNet normalisation inside; weights e.g.
    'IMAGENET1K_V1' load from the torch hub cache."""
    from torchvision.models import VGG19_Weights
    from torchvision.models import vgg19 as tv_vgg19

    return _torchvision_model("vgg19_imagenet", tv_vgg19, VGG19_Weights, weights, download, num_classes, normalize)
