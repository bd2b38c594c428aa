"""Multi-input multi-output (MIMO) networks: M members share one backbone whose first layer takes the M inputs
stacked along channels and whose last layer gives M x classes logits (member m = slice m). Used by MAT.

Native: a thin reshaping wrapper around any registered backbone; no library provides it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .registry import create_model_for


class MIMO(nn.Module):
    """forward takes (N, M, C, H, W) (member m's input in slot m) and returns member logits (N, M, classes)."""

    def __init__(self, backbone: nn.Module, members: int, num_classes: int) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"a MIMO network needs members >= 1; got M={members}")
        self.backbone, self.members, self.num_classes = backbone, members, num_classes

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or x.shape[1] != self.members:
            raise ValueError(f"MIMO input must be (N, M={self.members}, C, H, W); got shape {tuple(x.shape)}")
        return self.backbone(x.flatten(1, 2)).view(len(x), self.members, self.num_classes)

    def repeated(self, x: Tensor) -> Tensor:
        """Member logits (N, M, classes) for one image (N, C, H, W) copied into every slot (test time)."""
        return self(x[:, None].expand(-1, self.members, *x.shape[1:]))


class MIMOAverage(nn.Module):
    """The MIMO network as one classifier: the image in every slot, log of the mean member softmax."""

    def __init__(self, mimo: MIMO) -> None:
        super().__init__()
        self.mimo = mimo

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(self.mimo.repeated(x), dim=2).mean(1).clamp_min(1e-12).log()


class MIMOMember(nn.Module):
    """Member m of a MIMO network as a classifier (the image in every slot, member m's logits)."""

    def __init__(self, mimo: MIMO, member: int) -> None:
        super().__init__()
        if not 0 <= member < mimo.members:
            raise ValueError(f"member must be in 0..{mimo.members - 1}; got member={member}")
        self.mimo, self.member = mimo, member

    def forward(self, x: Tensor) -> Tensor:
        return self.mimo.repeated(x)[:, self.member]


class SingleAsMIMO(nn.Module):
    """A plain classifier seen through the MIMO interface with M = 1, so one attack/training code serves both."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.members = model, 1

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x[:, 0])[:, None]


def create_mimo(name: str, info, members: int, **kwargs) -> MIMO:
    """A registered backbone widened to M inputs (M x C channels) and M x classes outputs; no input normalisation
    (the MAT paper trains on raw [0, 1] inputs)."""
    if members < 1:
        raise ValueError(f"a MIMO network needs members >= 1; got M={members}")
    backbone = create_model_for(
        name,
        info,
        in_channels=members * info.shape[0],
        num_classes=members * info.num_classes,
        normalize=None,
        **kwargs,
    )
    return MIMO(backbone, members, info.num_classes)


def member_losses(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per-sample, per-member cross-entropy (N, M) of a MIMO-interface model on inputs (N, M, ...) and labels (N, M)."""
    logits = model(x)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape)


__all__ = ["MIMO", "MIMOAverage", "MIMOMember", "SingleAsMIMO", "create_mimo", "member_losses"]
