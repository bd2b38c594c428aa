"""The Adversary Critic paper's baselines besides the reference and FGSM adversarial training (a
`train.ClassifierStep` with an `fgsm` adversary): virtual adversarial training (Miyato et al.) and L2 margin
maximisation (Matyasko & Chau 2017).

Native: both are a few lines of loss on top of `train.ClassifierStep` (a regularizer, and for margin maximisation the
multiclass hinge loss as the criterion); the libraries in use have neither. Margin maximisation follows the authors'
code: hinge loss + lambda * ||grad_x (z_y - z_l)||_2^2 with l the class whose logit gradient differs most from the
true class's (chosen without gradient).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Regularizer = Callable[[nn.Module, Tensor, Tensor], Tensor]


def _unit_l2(d: Tensor) -> Tensor:
    return d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (d.dim() - 1)))


def virtual_adversarial_loss(
    model: nn.Module, x: Tensor, eps: float = 2.0, xi: float = 1e-6, iterations: int = 1
) -> Tensor:
    """VAT: KL(p(x) || p(x + r_vadv)) with r_vadv = eps * d / ||d||_2, d found by `iterations` power iterations from
    a random direction (finite difference xi); p(x) is held fixed."""
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)
    d = torch.randn_like(x)
    for _ in range(iterations):
        d = (xi * _unit_l2(d)).requires_grad_(True)
        kl = F.kl_div(F.log_softmax(model(x + d), dim=1), p_clean, reduction="batchmean")
        (d,) = torch.autograd.grad(kl, d)
    r_vadv = eps * _unit_l2(d)
    return F.kl_div(F.log_softmax(model(x + r_vadv.detach()), dim=1), p_clean, reduction="batchmean")


def vat_regularizer(eps: float = 2.0, weight: float = 1.0) -> Regularizer:
    """The VAT baseline as a `train.ClassifierStep` regularizer: weight * KL(p(x) || p(x + r_vadv)) at L2 radius eps."""
    if eps <= 0 or weight < 0:
        raise ValueError(f"VAT needs eps > 0 and weight >= 0; got eps={eps}, weight={weight}")
    return lambda model, x, y: weight * virtual_adversarial_loss(model, x, eps=eps)


def multiclass_hinge(logits: Tensor, y: Tensor, delta: float = 1.0) -> Tensor:
    """Batch mean of max(0, delta + max_{k != y} z_k - z_y): the SVM-style loss margin maximisation trains with."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return (others - true + delta).clamp_min(0).mean()


def margin_sensitivity(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per sample ||grad_x (z_y - z_l)||_2^2, l = argmax_k ||grad_x z_k - grad_x z_y||_2 (chosen without gradient);
    differentiable with respect to the model's parameters (double backward)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    grads = torch.stack(
        [torch.autograd.grad(logits[:, k].sum(), x, retain_graph=True)[0] for k in range(logits.shape[1])]
    )  # (K, N, ...), no graph kept
    rows = torch.arange(len(x), device=x.device)
    with torch.no_grad():
        spread = (grads - grads[y, rows][None]).flatten(2).pow(2).sum(2)  # (K, N)
        other = spread.argmax(0)
    margin = logits[rows, y] - logits[rows, other]
    (grad,) = torch.autograd.grad(margin.sum(), x, create_graph=True)
    return grad.flatten(1).pow(2).sum(1)


def margin_regularizer(weight: float = 0.1) -> Regularizer:
    """Margin maximisation's regularizer for `train.ClassifierStep` (pair it with criterion=multiclass_hinge):
    weight * batch mean of the margin sensitivity."""
    if weight < 0:
        raise ValueError(f"margin maximisation needs weight >= 0; got weight={weight}")
    return lambda model, x, y: weight * margin_sensitivity(model, x, y).mean()
