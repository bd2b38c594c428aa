"""The Adversary Critic paper's targeted high-confidence L2 attack (Matyasko & Chau 2018, eq. 7, Algorithm 1).

Native: no library has it, and training needs it differentiable (second-order gradients reach the classifier through
the step directions and sizes, never through the point a step starts from). Each step moves towards the target class
by the L2-minimal step of the linearised log-likelihood: r_i = (sqrt(1e-8) + |log p_t - log C| / ||w||) * w / ||w||,
w = grad_x log p_t; a sample stops once p_t >= C (a straight-through sigmoid mask during training).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Attack

TINY = 1e-8


def closest_target(model: nn.Module, x: Tensor, exclude: Tensor | None = None) -> Tensor:
    """DeepFool's closest class to each x: argmin_k |z_k - z_p| / ||grad (z_k - z_p)||, k != p, where p is the
    prediction (or `exclude` when given)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    reference = logits.argmax(1) if exclude is None else exclude
    base = logits.gather(1, reference[:, None]).squeeze(1)
    distances = []
    for k in range(logits.shape[1]):
        difference = logits[:, k] - base
        (grad,) = torch.autograd.grad(difference.sum(), x, retain_graph=True)
        distances.append(difference.detach().abs() / grad.flatten(1).norm(dim=1).clamp_min(TINY))
    distance = torch.stack(distances, dim=1)
    distance.scatter_(1, reference[:, None], float("inf"))
    return distance.argmin(1)


def confidence_attack(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    confidence: Tensor | float,
    *,
    steps: int = 5,
    overshoot: float = 0.05,
    differentiable: bool = False,
    step_clip: float | None = None,
    box: bool = False,
) -> Tensor:
    """Adversarials of `x` classified as `target` with softmax confidence >= `confidence` (per sample or one value).

    differentiable=True keeps the graph of the step sizes and directions (training: gradients reach the model's
    parameters through w and f of every step, not through the point each step starts from, which is detached as in
    the authors' code; the stopping mask uses a sigmoid straight-through estimator, no clipping). Otherwise (evaluation) each step's L2 norm
    is clipped to `step_clip` and, with `box`, x + r is projected into [0, 1] after every step. The final
    perturbation is scaled by 1 + overshoot.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got steps={steps}")
    c = torch.as_tensor(confidence, dtype=x.dtype, device=x.device).expand(len(x))
    if bool(((c <= 0) | (c >= 1)).any()):
        raise ValueError(f"confidence must lie in (0, 1); got {c.min().item():.3g}..{c.max().item():.3g}")
    log_c = c.log()
    r = torch.zeros_like(x)
    mask = torch.ones(len(x), dtype=x.dtype, device=x.device)
    view = (-1,) + (1,) * (x.dim() - 1)
    for _ in range(steps):
        # Each step's point is a constant (the authors' stop_gradient): training gradients reach the parameters
        # through w and f only. Training evaluates at the overshot point x + (1 + overshoot) r, as their unrolled code.
        x_adv = (x + ((1 + overshoot) * r if differentiable else r)).detach().requires_grad_(True)
        log_p = F.log_softmax(model(x_adv), dim=1).gather(1, target[:, None]).squeeze(1)
        (w,) = torch.autograd.grad(log_p.sum(), x_adv, create_graph=differentiable)
        w_norm = (TINY + w.flatten(1).pow(2).sum(1)).sqrt()
        step = ((math.sqrt(TINY) + (log_p - log_c).abs() / w_norm) / w_norm).view(view) * w
        keep_going = c - log_p.exp()
        if differentiable:
            soft = torch.sigmoid(keep_going)
            mask = mask * ((keep_going > 0).to(x.dtype) + soft - soft.detach())
        else:
            mask = mask * (keep_going > 0).to(x.dtype)
            step = step.detach()
            if step_clip is not None:
                norms = step.flatten(1).norm(dim=1).clamp_min(TINY)
                step = step * (step_clip / norms).clamp(max=1.0).view(view)
        r = r + mask.view(view) * step
        if box and not differentiable:
            r = (x + r).clamp(0, 1) - x
        if not differentiable and not bool(mask.any()):
            break
    x_adv = x + (1 + overshoot) * r
    return x_adv.clamp(0, 1) if box else x_adv


class ConfidenceAttack(Attack):
    """Registry face (evaluation mode): 500 steps, per-step L2 clip 0.1, box [0, 1], overshoot 0.02; the target is
    the DeepFool-closest class unless given, the confidence the model's own confidence on x unless `confidence`."""

    norm, kind, targeted_ok, backend = "l2", "minimal", True, "native"

    def __init__(
        self,
        eps: float | None = None,
        *,
        steps: int = 500,
        step_clip: float = 0.1,
        overshoot: float = 0.02,
        confidence: float | None = None,
        targeted: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(eps, targeted=targeted, seed=seed)
        if confidence is not None and not 0 < confidence < 1:
            raise ValueError(f"confidence must lie in (0, 1) or be None (the model's own); got confidence={confidence}")
        self.steps, self.step_clip, self.overshoot, self.confidence = steps, step_clip, overshoot, confidence

    def generate(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, keys: Tensor | None) -> Tensor:
        if target is None:
            target = closest_target(model, x, exclude=y)
        confidence: Tensor | float
        if self.confidence is None:
            with torch.no_grad():
                confidence = F.softmax(model(x), dim=1).amax(1).clamp(1e-6, 1 - 1e-6)
        else:
            confidence = self.confidence
        return confidence_attack(
            model, x, target, confidence, steps=self.steps, overshoot=self.overshoot, step_clip=self.step_clip, box=True
        ).detach()
