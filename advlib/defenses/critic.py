"""Adversary Critic (Matyasko & Chau 2018): losses of the class-conditional critic and of the classifier.

Native: the paper's objective (eqs. 4-6) has no library implementation. The critic gives one logit per class; the
logit at an input's (true or adversarial-target) class scores natural vs adversarial. Work in progress (issue 6):
the losses, the running class confidence and the classifier's per-batch loss are complete and tested; the
alternating training loop over epochs and the baselines are not written yet.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GRADIENT_PENALTY = 10.0  # lambda_grad of the paper
CYCLE_WEIGHT = 1e-2      # lambda_rec of the paper


def class_logit(critic: nn.Module, x: Tensor, labels: Tensor) -> Tensor:
    """The critic's logit at each input's class, (N,)."""
    return critic(x).gather(1, labels[:, None]).squeeze(1)


def gradient_penalty(critic: nn.Module, x_data: Tensor, y_data: Tensor, x_adv: Tensor, y_adv: Tensor) -> Tensor:
    """10 * [mean (||grad_x z_adv|| - 1)^2 + mean (||grad_x z_data|| - 1)^2], at the real and the adversarial points
    separately (no interpolation, as the paper says), differentiable for the critic's update."""
    terms = []
    for x, labels in ((x_adv, y_adv), (x_data, y_data)):
        x = x.detach().requires_grad_(True)
        grad, = torch.autograd.grad(class_logit(critic, x, labels).sum(), x, create_graph=True)
        terms.append((grad.flatten(1).norm(dim=1) - 1).pow(2).mean())
    return GRADIENT_PENALTY * sum(terms)


def critic_loss(critic: nn.Module, x_data: Tensor, y_data: Tensor, x_adv: Tensor, y_adv: Tensor) -> Tensor:
    """Eq. 4 as sigmoid cross-entropy: natural (x, y) labelled 1, adversarials labelled 0 at their predicted class,
    plus the gradient penalty."""
    real = class_logit(critic, x_data, y_data)
    fake = class_logit(critic, x_adv.detach(), y_adv)
    bce = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
           + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    return bce + gradient_penalty(critic, x_data, y_data, x_adv, y_adv)


def classifier_critic_loss(critic: nn.Module, x_adv: Tensor, y_adv: Tensor) -> Tensor:
    """Eq. 5's second term as sigmoid cross-entropy with label 1: the classifier's adversarials should look natural
    to the critic (gradients reach the classifier through x_adv, i.e. through the differentiable attack)."""
    fake = class_logit(critic, x_adv, y_adv)
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def cycle_loss(x: Tensor, x_back: Tensor) -> Tensor:
    """Eq. 6: squared L2 distance between x and the adversarial attacked back to its original label, batch mean."""
    return (x_back - x).flatten(1).pow(2).sum(1).mean()


class ClassConfidence:
    """Per-class running mean (EMA, decay 0.5) of the classifier's softmax confidence on natural images: the
    target confidence C of the training attack."""

    def __init__(self, num_classes: int, decay: float = 0.5, initial: float = 0.9) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"decay must lie in [0, 1); got decay={decay}")
        self.decay = decay
        self.values = torch.full((num_classes,), initial)

    def update(self, probs: Tensor, labels: Tensor) -> None:
        """Blend in the batch mean confidence of every class present in the batch."""
        probs, labels = probs.detach().cpu(), labels.cpu()
        for c in labels.unique().tolist():
            batch_mean = probs[labels == c, c].mean()
            self.values[c] = self.decay * self.values[c] + (1 - self.decay) * batch_mean

    def of(self, classes: Tensor) -> Tensor:
        return self.values.to(classes.device)[classes].clamp(1e-4, 1 - 1e-4)


def classifier_step_loss(classifier: nn.Module, critic: nn.Module, x: Tensor, y: Tensor, confidence: ClassConfidence,
                         *, weight: float, steps: int = 5, overshoot: float = 0.05) -> tuple[Tensor, dict[str, float]]:
    """The classifier's loss on one batch (eq. 5 + eq. 6): NLL + weight * critic term + 0.01 * cycle term.

    The attack targets each input's DeepFool-closest class with the running class confidence and is unrolled
    differentiably, so the critic and cycle terms reach the classifier through the attack (second order). Only
    adversarials that reach their target enter those terms.
    """
    from ..attacks.confidence import closest_target, confidence_attack

    logits = classifier(x)
    nll = F.cross_entropy(logits, y)
    confidence.update(logits.softmax(1), y)
    target = closest_target(classifier, x, exclude=y)
    x_adv = confidence_attack(classifier, x, target, confidence.of(target), steps=steps, overshoot=overshoot,
                              differentiable=True)
    reached = classifier(x_adv).argmax(1) == target
    stats = {"nll": float(nll.detach()), "reached": float(reached.float().mean())}
    if not reached.any():
        return nll, stats
    x_back = confidence_attack(classifier, x_adv[reached], y[reached], confidence.of(y[reached]), steps=steps,
                               overshoot=overshoot, differentiable=True)
    gan = classifier_critic_loss(critic, x_adv[reached], target[reached])
    cycle = cycle_loss(x[reached], x_back)
    stats.update(gan=float(gan.detach()), cycle=float(cycle.detach()))
    return nll + weight * gan + CYCLE_WEIGHT * cycle, stats
