"""Ensembles that average member probabilities or logits."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

ENSEMBLE_MODES = ("prob", "logit")


class Ensemble(nn.Module):
    """Average of member models, differentiable end to end so attacks go through the whole ensemble.

    mode 'prob' returns log(mean_m softmax(z_m)): log-probabilities, so argmax and cross-entropy on the
    output behave as with logits (Strength in Numbers). mode 'logit' returns mean_m z_m ("softmax removed").
    """

    def __init__(self, members: Sequence[nn.Module], mode: str = "prob") -> None:
        super().__init__()
        if mode not in ENSEMBLE_MODES:
            raise ValueError(f"unknown ensemble mode {mode!r}; choose one of {', '.join(ENSEMBLE_MODES)}")
        if len(members) == 0:
            raise ValueError("an Ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.mode = mode

    def member_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Member logits stacked as (members, N, classes)."""
        return torch.stack([member(x) for member in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.member_outputs(x)
        if self.mode == "logit":
            return logits.mean(dim=0)
        return torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=0) - math.log(len(self.members))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
