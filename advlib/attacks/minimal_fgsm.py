"""foolbox 2's FGSM (`GradientSignAttack`): a linear search for the smallest step along the gradient sign that fools.

foolbox 3's FGSM (advlib's `fgsm`) moves every image by exactly eps. foolbox 2's tried eps = max_epsilon * k / N,
k = 1..N (N = `epsilons`, 1000 by default) and kept the first that fooled; when that was one of the first 20, it
searched again on 20 equal steps up to it. Native code: foolbox 3 no longer offers the search, and foolbox 2 does not run
on today's numpy and torch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..inference import predict
from .base import Attack

REFINE_STEPS = 20  # foolbox 2: a first hit among the first 20 grid values is searched again on 20 finer values
CHUNK_IMAGES = 4096  # images per forward when grid values are stacked


def _first_fooling(model: nn.Module, x: Tensor, y: Tensor, direction: Tensor, grid: Tensor, batch_size: int) -> Tensor:
    """Per image, the index of the first column of `grid` (N, K) at which clip(x + eps * direction) is misclassified,
    -1 where none is; several grid columns go through the model in one stacked batch."""
    first = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
    todo = torch.arange(len(x), device=x.device)
    start, steps = 0, grid.shape[1]
    while start < steps and len(todo):
        k = max(1, min(steps - start, CHUNK_IMAGES // len(todo)))
        eps = grid[todo, start : start + k].T.to(x.dtype)  # (k, r)
        shape = (k, len(todo)) + (1,) * (x.dim() - 1)
        candidates = (x[todo].unsqueeze(0) + eps.view(shape) * direction[todo].unsqueeze(0)).clamp(0.0, 1.0)
        fooled = predict(model, candidates.flatten(0, 1), batch_size).view(k, len(todo)) != y[todo]
        hit = fooled.any(dim=0)
        first[todo[hit]] = start + fooled.to(torch.uint8).argmax(dim=0)[hit]  # argmax: the first maximum
        todo, start = todo[~hit], start + k
    return first


def minimal_fgsm(
    model: nn.Module, x: Tensor, y: Tensor, max_eps: float, steps: int = 1000, batch_size: int = 512
) -> tuple[Tensor, Tensor]:
    """foolbox 2's FGSM on one batch: per image the smallest eps of linspace(0, max_eps, steps + 1)[1:] (refined on 20
    finer steps below the 20th) at which clip(x + eps * sign(grad CE)) is misclassified, and that image.

    Returns (x_adv, eps): eps is 0 and x_adv = x where x is already misclassified (foolbox 2 does not attack those),
    eps is NaN and x_adv the image at max_eps where no grid value fools. The model is used as given (eval mode)."""
    if not max_eps > 0:
        raise ValueError(f"max_eps must be > 0 (the largest eps of the grid); got {max_eps}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1 grid values; got {steps}")
    x_grad = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x_grad), y, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, x_grad)
    direction = gradient.sign()
    grid = torch.linspace(0.0, max_eps, steps + 1, dtype=torch.float64, device=x.device)[1:]
    eps = torch.full((len(x),), float("nan"), dtype=torch.float64, device=x.device)
    wrong = predict(model, x, batch_size) != y
    eps[wrong] = 0.0
    attack = ~wrong
    first = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
    if attack.any():
        first[attack] = _first_fooling(
            model, x[attack], y[attack], direction[attack], grid.expand(int(attack.sum()), -1), batch_size
        )
    hit = first >= 0
    eps[hit] = grid[first[hit]]
    fine = hit & (first < REFINE_STEPS)
    if fine.any():
        levels = torch.arange(1, REFINE_STEPS + 1, dtype=torch.float64, device=x.device) / REFINE_STEPS
        fine_grid = eps[fine].unsqueeze(1) * levels  # its last value is the hit itself, so a finer hit always exists
        eps[fine] = fine_grid.gather(
            1, _first_fooling(model, x[fine], y[fine], direction[fine], fine_grid, batch_size).unsqueeze(1)
        ).squeeze(1)
    step = torch.where(eps.isnan(), torch.full_like(eps, max_eps), eps).to(x.dtype)
    x_adv = (x + step.view((-1,) + (1,) * (x.dim() - 1)) * direction).clamp(0.0, 1.0)
    return x_adv.detach(), eps


class MinimalFGSM(Attack):
    """`minimal_fgsm` behind the `Attack` interface: eps is the largest eps of the grid (foolbox 2's max_epsilon),
    `steps` the grid size (foolbox 2's epsilons, 1000). Results lie inside the Linf eps-ball like any attack's."""

    norm = "linf"
    kind = "fixed"  # in the registry's sense: it needs an eps and stays inside it (the search lies below it)
    targeted_ok = False

    def __init__(self, eps: float | None = None, *, steps: int = 1000, **kwargs: Any) -> None:
        if eps is None:
            raise ValueError("fgsm_minimal needs eps > 0: the largest eps of its search grid (foolbox 2's max_epsilon)")
        if steps < 1:
            raise ValueError(f"fgsm_minimal: steps must be >= 1 grid values; got {steps}")
        super().__init__(eps, **kwargs)
        self.max_eps, self.steps = eps, steps

    def generate(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, keys: Tensor | None) -> Tensor:
        return minimal_fgsm(model, x, y, self.max_eps, self.steps)[0]
