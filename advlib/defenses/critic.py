"""Adversary Critic (Matyasko & Chau 2018): losses of the class-conditional critic and of the classifier, and the
training step that alternates them (`CriticStep`, run by `train.fit`).

Native: the paper's objective (eqs. 4-6) has no library implementation. The critic gives one logit per class; the
logit at an input's (true or adversarial-target) class scores natural vs adversarial. The paper's baselines
(VAT, margin maximisation) are in `baselines.py`; the runs are in `advlib/experiments/adversary_critic.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..data import dataset_size
from ..train import Step, seeded_loader

GRADIENT_PENALTY = 10.0  # lambda_grad of the paper
CYCLE_WEIGHT = 1e-2  # lambda_rec of the paper


def class_logit(critic: nn.Module, x: Tensor, labels: Tensor) -> Tensor:
    """The critic's logit at each input's class, (N,)."""
    return critic(x).gather(1, labels[:, None]).squeeze(1)


def gradient_penalty(critic: nn.Module, x_data: Tensor, y_data: Tensor, x_adv: Tensor, y_adv: Tensor) -> Tensor:
    """10 * [mean (||grad_x z_adv|| - 1)^2 + mean (||grad_x z_data|| - 1)^2], at the real and the adversarial points
    separately (no interpolation, as the paper says), differentiable for the critic's update."""
    terms = []
    for x, labels in ((x_adv, y_adv), (x_data, y_data)):
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(class_logit(critic, x, labels).sum(), x, create_graph=True)
        terms.append((grad.flatten(1).norm(dim=1) - 1).pow(2).mean())
    return GRADIENT_PENALTY * sum(terms)


def critic_loss(critic: nn.Module, x_data: Tensor, y_data: Tensor, x_adv: Tensor, y_adv: Tensor) -> Tensor:
    """Eq. 4 as sigmoid cross-entropy: natural (x, y) labelled 1, adversarials labelled 0 at their predicted class,
    plus the gradient penalty."""
    real = class_logit(critic, x_data, y_data)
    fake = class_logit(critic, x_adv.detach(), y_adv)
    bce = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(
        fake, torch.zeros_like(fake)
    )
    return bce + gradient_penalty(critic, x_data, y_data, x_adv, y_adv)


def classifier_critic_loss(critic: nn.Module, x_adv: Tensor, y_adv: Tensor) -> Tensor:
    """Eq. 5's second term as sigmoid cross-entropy with label 1: the classifier's adversarials should look natural
    to the critic (gradients reach the classifier through x_adv, i.e. through the differentiable attack)."""
    fake = class_logit(critic, x_adv, y_adv)
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def cycle_loss(x: Tensor, x_back: Tensor) -> Tensor:
    """Eq. 6: squared L2 distance between x and the adversarial attacked back to its original label, batch mean."""
    return (x_back - x).flatten(1).pow(2).sum(1).mean()


def attack_confidence(confidence: Tensor) -> Tensor:
    """A target confidence kept inside (0, 1), so the confidence attack's log |log p_t - log C| stays finite."""
    return confidence.clamp(1e-4, 1 - 1e-4)


class ClassConfidence(nn.Module):
    """Per-class running mean (EMA, decay 0.5) of the classifier's confidence in its prediction on natural images,
    keyed by the predicted class (the authors' code): the target confidence C of the training attack. A module so its
    values travel with checkpoints."""

    values: Tensor  # a buffer, registered in __init__

    def __init__(self, num_classes: int, decay: float = 0.5, initial: float = 0.9) -> None:
        super().__init__()
        if not 0 <= decay < 1:
            raise ValueError(f"decay must lie in [0, 1); got decay={decay}")
        self.decay = decay
        self.register_buffer("values", torch.full((num_classes,), initial))

    def update(self, probs: Tensor) -> None:
        """Blend in, for every class the batch predicts, the mean top softmax probability of the inputs predicted as
        that class; classes nobody predicts keep their value."""
        confidence, predicted = probs.detach().max(1)
        for c in predicted.unique().tolist():
            batch_mean = confidence[predicted == c].mean().to(self.values)
            self.values[c] = self.decay * self.values[c] + (1 - self.decay) * batch_mean

    def of(self, classes: Tensor) -> Tensor:
        """The running confidence of each class in `classes`, kept inside (0, 1) for the attack's log."""
        return attack_confidence(self.values.to(classes.device)[classes])


def classifier_step_loss(
    classifier: nn.Module,
    critic: nn.Module,
    x: Tensor,
    y: Tensor,
    confidence: ClassConfidence,
    *,
    weight: float,
    steps: int = 5,
    overshoot: float = 0.05,
) -> tuple[Tensor, dict[str, float], tuple[Tensor, Tensor]]:
    """The classifier's loss on one batch (eq. 5 + eq. 6): NLL + weight * critic term + 0.01 * cycle term.

    As in the authors' code: the attack targets each input's DeepFool-closest class other than its prediction with
    that class's running confidence and is unrolled differentiably, so the critic and cycle terms reach the
    classifier through the attack's step directions and sizes (second order). Only adversarials that change the
    prediction enter those terms, the critic's logit taken at the adversarial's predicted class. The cycle attack
    starts from the detached adversarials and goes back to the original prediction with the original confidence.
    Also returns those adversarials (detached) and their predicted classes, which the critic's step uses.
    """
    from ..attacks.confidence import closest_target, confidence_attack

    logits = classifier(x)
    nll = F.cross_entropy(logits, y)
    probs = logits.softmax(1)
    confidence.update(probs)
    own, predicted = probs.max(1)
    target = closest_target(classifier, x)  # excludes the prediction
    x_adv = confidence_attack(
        classifier, x, target, confidence.of(target), steps=steps, overshoot=overshoot, differentiable=True
    )
    adversarial_class = classifier(x_adv).argmax(1)
    fooled = adversarial_class != predicted
    stats = {"nll": float(nll.detach()), "reached": float(fooled.float().mean())}
    adversarials = (x_adv.detach()[fooled], adversarial_class[fooled])
    if not fooled.any():
        return nll, stats, adversarials
    x_back = confidence_attack(
        classifier,
        x_adv.detach()[fooled],
        predicted[fooled],
        attack_confidence(own[fooled]),
        steps=steps,
        overshoot=overshoot,
        differentiable=True,
    )
    gan = classifier_critic_loss(critic, x_adv[fooled], adversarial_class[fooled])
    cycle = cycle_loss(x[fooled], x_back)
    stats.update(gan=float(gan.detach()), cycle=float(cycle.detach()))
    return nll + weight * gan + CYCLE_WEIGHT * cycle, stats, adversarials


def _step(optimizer: torch.optim.Optimizer, loss: Tensor, frozen: nn.Module) -> None:
    """One optimizer step on `loss`, leaving `frozen`'s parameters untouched (their gradients are dropped)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for parameter in frozen.parameters():
        parameter.grad = None
    optimizer.step()


class CriticStep(Step):
    """The critic defense as a `train.fit` step: on every batch the classifier's update, then the critic's on the
    adversarials of that step (Adam, beta1 0.5; learning rates halved every `halve_every` regularised epochs).
    `pretrain_epochs` epochs of plain NLL initialise the running class confidence before the `epochs` regularised ones
    (`self.epochs` counts both); history records number the regularised epochs from 1 (the pre-training ones from
    1 - pretrain_epochs) and hold the per-epoch means of nll, reached (the share of training adversarials that change
    the prediction), gan, cycle and critic. `confidence` holds the running class confidence the training ends with."""

    def __init__(
        self,
        classifier: nn.Module,
        critic: nn.Module,
        train_set: Dataset,
        *,
        epochs: int,
        weight: float,
        batch_size: int = 100,
        lr_classifier: float = 5e-4,
        lr_critic: float = 1e-3,
        halve_every: int = 40,
        steps: int = 5,
        overshoot: float = 0.05,
        pretrain_epochs: int = 1,
        num_classes: int = 10,
        device: torch.device | str = "cpu",
    ) -> None:
        if epochs < 1 or pretrain_epochs < 0:
            raise ValueError(
                f"need epochs >= 1 and pretrain_epochs >= 0; got epochs={epochs}, pretrain_epochs={pretrain_epochs}"
            )
        if dataset_size(train_set) == 0:
            raise ValueError("training set is empty")
        self.confidence = ClassConfidence(num_classes)
        self.networks = nn.ModuleDict({"classifier": classifier, "critic": critic, "confidence": self.confidence})
        self.networks.to(device)
        self.model, self.critic, self.train_set, self.device = classifier, critic, train_set, device
        self.epochs, self.pretrain_epochs, self.batch_size = pretrain_epochs + epochs, pretrain_epochs, batch_size
        self.weight, self.steps, self.overshoot = weight, steps, overshoot
        self.optimizer = torch.optim.Adam(
            [
                {"params": classifier.parameters(), "lr": lr_classifier},
                {"params": critic.parameters(), "lr": lr_critic},
            ],
            betas=(0.5, 0.999),
        )
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, halve_every, 0.5)
        self.state = {"networks": self.networks, "optimizer": self.optimizer, "scheduler": self.scheduler}

    def num_batches(self) -> int:
        return -(-dataset_size(self.train_set) // self.batch_size)

    def begin_epoch(self, epoch: int, seed: int) -> None:
        """Seed the epoch from (seed, epoch) and put the classifier, the critic and the confidence in train mode."""
        super().begin_epoch(epoch, seed)
        self.networks.train()

    def batches(self, epoch: int, seed: int) -> Iterable[Any]:
        return seeded_loader(self.train_set, self.batch_size, seed, epoch)

    def update(self, batch: Any, epoch: int) -> dict[str, float]:
        x, y = (t.to(self.device) for t in batch)
        classifier, critic, confidence = self.model, self.critic, self.confidence
        if epoch < self.pretrain_epochs:
            logits = classifier(x)
            _step(self.optimizer, F.cross_entropy(logits, y), critic)
            confidence.update(logits.softmax(1))
            return {"nll": float(F.cross_entropy(logits.detach(), y))}
        loss, stats, (x_adv, target) = classifier_step_loss(
            classifier, critic, x, y, confidence, weight=self.weight, steps=self.steps, overshoot=self.overshoot
        )
        _step(self.optimizer, loss, critic)
        if len(x_adv):
            d_loss = critic_loss(critic, x, y, x_adv, target)
            _step(self.optimizer, d_loss, classifier)
            stats["critic"] = float(d_loss.detach())
        return stats

    def record(self, epoch: int, sums: dict[str, float], batches: int) -> dict[str, Any]:
        if epoch >= self.pretrain_epochs:  # the schedule counts regularised epochs only
            self.scheduler.step()
        return {"epoch": epoch + 1 - self.pretrain_epochs, **{k: v / batches for k, v in sums.items()}}

    def progress(self, record: dict[str, Any]) -> dict[str, str]:
        return {"nll": f"{record['nll']:.3f}"}
