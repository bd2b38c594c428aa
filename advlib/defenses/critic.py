"""Adversary Critic (Matyasko & Chau 2018): losses of the class-conditional critic and of the classifier.

Native: the paper's objective (eqs. 4-6) has no library implementation. The critic gives one logit per class; the
logit at an input's (true or adversarial-target) class scores natural vs adversarial. Work in progress (issue 6):
the losses, the running class confidence, the classifier's per-batch loss, the alternating training loop and the
VAT baseline (a `train.fit` regularizer) are written and tested; the L2 margin-maximisation baseline, the experiment plan, the human-study
kit and the notebook are not written yet.
"""
from __future__ import annotations

from typing import Callable

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


def virtual_adversarial_loss(model: nn.Module, x: Tensor, eps: float = 2.0, xi: float = 1e-6,
                             iterations: int = 1) -> Tensor:
    """VAT (Miyato et al.): KL(p(x) || p(x + r_vadv)) with r_vadv = eps * d / ||d||_2, d found by `iterations` power
    iterations from a random direction (finite difference xi); p(x) is held fixed."""
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)
    d = torch.randn_like(x)
    for _ in range(iterations):
        d = xi * d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        d.requires_grad_(True)
        kl = F.kl_div(F.log_softmax(model(x + d), dim=1), p_clean, reduction="batchmean")
        d, = torch.autograd.grad(kl, d)
    r_vadv = eps * d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
    return F.kl_div(F.log_softmax(model(x + r_vadv.detach()), dim=1), p_clean, reduction="batchmean")


def train_critic_defense(classifier: nn.Module, critic: nn.Module, batches, *, epochs: int, weight: float,
                         lr_classifier: float = 5e-4, lr_critic: float = 1e-3, halve_every: int = 40,
                         steps: int = 5, overshoot: float = 0.05, pretrain_batches=None,
                         num_classes: int = 10) -> list[dict[str, float]]:
    """Alternate the classifier's and the critic's updates (Adam, beta1 0.5; learning rates halved every
    `halve_every` epochs). `batches()` yields (x, y) batches for one epoch. One pre-training epoch without
    regularization (when `pretrain_batches` is given) initialises the running class confidence. Returns the mean
    per-epoch statistics (nll, reached, gan, cycle, critic)."""
    from tqdm.auto import tqdm

    from ..attacks.confidence import closest_target, confidence_attack

    opt_f = torch.optim.Adam(classifier.parameters(), lr=lr_classifier, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(critic.parameters(), lr=lr_critic, betas=(0.5, 0.999))
    sched_f = torch.optim.lr_scheduler.StepLR(opt_f, halve_every, 0.5)
    sched_d = torch.optim.lr_scheduler.StepLR(opt_d, halve_every, 0.5)
    confidence = ClassConfidence(num_classes)
    if pretrain_batches is not None:
        classifier.train()
        for x, y in pretrain_batches():
            logits = classifier(x)
            loss = F.cross_entropy(logits, y)
            opt_f.zero_grad(set_to_none=True)
            loss.backward()
            opt_f.step()
            confidence.update(logits.softmax(1), y)
    history = []
    for epoch in tqdm(range(epochs), desc="critic defense", leave=False):
        sums: dict[str, float] = {}
        count = 0
        for x, y in batches():
            classifier.train()
            loss, stats = classifier_step_loss(classifier, critic, x, y, confidence, weight=weight, steps=steps,
                                               overshoot=overshoot)
            opt_f.zero_grad(set_to_none=True)
            loss.backward()
            opt_f.step()
            # the critic sees this step's adversarials that reached their target, detached from the classifier
            target = closest_target(classifier, x, exclude=y)
            x_adv = confidence_attack(classifier, x, target, confidence.of(target), steps=steps, overshoot=overshoot)
            with torch.no_grad():
                reached = classifier(x_adv).argmax(1) == target
            if reached.any():
                d_loss = critic_loss(critic, x, y, x_adv[reached], target[reached])
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                stats["critic"] = float(d_loss.detach())
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
        sched_f.step()
        sched_d.step()
        history.append({"epoch": epoch + 1, **{k: v / max(count, 1) for k, v in sums.items()}})
    classifier.eval()
    return history


def vat_regularizer(eps: float = 2.0, weight: float = 1.0) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    """The VAT baseline as a `train.fit` regularizer: weight * KL(p(x) || p(x + r_vadv)) at L2 radius eps."""
    if eps <= 0 or weight < 0:
        raise ValueError(f"VAT needs eps > 0 and weight >= 0; got eps={eps}, weight={weight}")
    return lambda model, x, y: weight * virtual_adversarial_loss(model, x, eps=eps)
