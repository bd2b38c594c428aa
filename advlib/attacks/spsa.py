"""SPSA (Uesato et al. 2018, "Adversarial Risk and the Dangers of Evaluating Against Weak Attacks"): gradient-free Linf
attack that descends the logit margin with Adam on a finite-difference gradient estimate.

Native rather than torchattacks' `SPSA` for two reasons the papers need: it stops each sample at its first
misclassified iterate (Cleverhans' `early_stop_loss_thresh`, which REGroup's Table 5 sets to 0), and it draws each
sample's perturbation directions from that sample's own keyed stream, so a sample's adversarial does not depend on its
batch (a cascade over survivors is exact).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from .base import Attack
from .pgd import keyed_generators

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def margin_loss(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    """The loss SPSA descends, per sample: z_y - max_{j != y} z_j (untargeted; below 0 once misclassified) or
    max_{j != t} z_j - z_t (targeted; below 0 once the target wins)."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(nn.functional.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
    return others - own if targeted else own - others


def rademacher(shape: tuple[int, ...], generators: list[torch.Generator] | None, device: torch.device) -> Tensor:
    """+-1 draws of `shape` (samples first); with `generators`, sample i's come from generators[i]."""
    if generators is None:
        return torch.randint(0, 2, shape, device=device).mul_(2).sub_(1)
    return torch.stack([torch.randint(0, 2, shape[1:], generator=g, device=device) for g in generators]).mul_(2).sub_(1)


class SPSA(Attack):
    """SPSA in Linf with Adam (torch's defaults) and an optional per-sample early stop.

    Each step estimates the gradient of the margin loss from `nb_sample` antithetic pairs x +- delta v (v of +-1),
    evaluated `max_batch_size` pairs at a time, takes one Adam step of size `lr` and projects into the eps-ball and
    [0, 1]. With `early_stop_loss_thresh` (Cleverhans' name; REGroup uses 0) a sample stops at the first iterate whose
    loss is below it, i.e. as soon as it is misclassified, and is not perturbed further."""

    norm, kind, targeted_ok = "linf", "fixed", True

    def __init__(
        self,
        eps: float | None = None,
        *,
        steps: int = 100,
        lr: float = 0.01,
        delta: float = 0.01,
        nb_sample: int = 128,
        max_batch_size: int = 64,
        early_stop_loss_thresh: float | None = None,
        targeted: bool = False,
        seed: int = 0,
    ):
        super().__init__(eps, targeted=targeted, seed=seed)
        for name, value in (("steps", steps), ("nb_sample", nb_sample), ("max_batch_size", max_batch_size)):
            if value < 1:
                raise ValueError(f"SPSA {name} must be >= 1; got {name}={value}")
        for name, size in (("lr", lr), ("delta", delta)):
            if size <= 0:
                raise ValueError(f"SPSA {name} must be > 0; got {name}={size}")
        self.steps, self.lr, self.delta = steps, lr, delta
        self.nb_sample, self.max_batch_size = nb_sample, max_batch_size
        self.early_stop_loss_thresh = early_stop_loss_thresh

    @torch.no_grad()
    def gradient(self, model: nn.Module, x: Tensor, labels: Tensor, generators: list[torch.Generator] | None) -> Tensor:
        """The SPSA estimate of the margin loss's gradient at each row of x: the mean over `nb_sample` directions v
        of (L(x + delta v) - L(x - delta v)) / (2 delta) * v."""
        grad = torch.zeros_like(x)
        done = 0
        while done < self.nb_sample:
            k = min(self.max_batch_size, self.nb_sample - done)
            v = rademacher((len(x), k, *x.shape[1:]), generators, x.device).to(x.dtype)
            both = torch.cat([x[:, None] + self.delta * v, x[:, None] - self.delta * v], dim=1)
            logits = model(both.flatten(0, 1))
            loss = margin_loss(logits, labels.repeat_interleave(2 * k), self.targeted).view(len(x), 2 * k)
            diff = (loss[:, :k] - loss[:, k:]) / (2 * self.delta)
            grad += (diff.view(len(x), k, *([1] * (x.dim() - 1))) * v).sum(1)
            done += k
        return grad / self.nb_sample

    def generate(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, keys: Tensor | None) -> Tensor:
        labels = target if self.targeted and target is not None else y
        eps = cast(float, self.eps)  # a fixed-eps attack: Attack.__init__ refuses eps=None
        generators = keyed_generators(self.seed, keys, x.device) if keys is not None else None
        delta = torch.zeros_like(x)
        m, v = torch.zeros_like(x), torch.zeros_like(x)
        active = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for t in range(1, self.steps + 1):
            if self.early_stop_loss_thresh is not None:
                with torch.no_grad():
                    loss = margin_loss(model(x + delta), labels, self.targeted)
                active &= loss >= self.early_stop_loss_thresh
            rows = active.nonzero().squeeze(1)
            if len(rows) == 0:
                break
            chosen = None if generators is None else [generators[i] for i in rows.tolist()]
            g = self.gradient(model, x[rows] + delta[rows], labels[rows], chosen)
            m[rows] = ADAM_BETAS[0] * m[rows] + (1 - ADAM_BETAS[0]) * g
            v[rows] = ADAM_BETAS[1] * v[rows] + (1 - ADAM_BETAS[1]) * g * g
            m_hat, v_hat = m[rows] / (1 - ADAM_BETAS[0] ** t), v[rows] / (1 - ADAM_BETAS[1] ** t)
            step = delta[rows] - self.lr * m_hat / (v_hat.sqrt() + ADAM_EPS)
            delta[rows] = (x[rows] + step.clamp(-eps, eps)).clamp(0, 1) - x[rows]
        return x + delta
