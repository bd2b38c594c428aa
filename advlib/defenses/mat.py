"""MIMO adversarial training (MAT): the inner maximisation with the approximate gradient, MSD, the outer step and the
instrumentation that counts forward and backward passes (Table 6 is measured, not typed in).

Native: MAT's one-backward inner loop over M members in M norms and the per-example MSD choice have no library
implementation; the steepest directions (sign, L2, top-k L1) and the projections come from `advlib.attacks`.
Every model here speaks the MIMO interface (inputs (N, M, C, H, W), logits (N, M, classes)); a plain classifier is
wrapped by `SingleAsMIMO` (M = 1), so single-model adversarial training and MSD use the same code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..attacks.base import lp_norms, project
from ..attacks.pgd import draw_l1_sizes, prefers_channels_last, random_start, steepest_direction, topk_l1_direction
from ..data import augment_batch, dataset_size
from ..models.mimo import member_losses
from ..params import TrainSpec
from ..train import AUGMENT_STREAM, Step, epoch_seed, make_optimizer, make_scheduler

NORMS = ("linf", "l2", "l1")


@dataclass(frozen=True)
class NormStep:
    """One member's threat model for the inner maximisation: its norm, radius and step size."""

    norm: str
    eps: float
    stepsize: float

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm {self.norm!r} is not allowed; choose one of {', '.join(NORMS)}")
        if self.eps <= 0 or self.stepsize <= 0:
            raise ValueError(f"eps and stepsize must be > 0; got eps={self.eps}, stepsize={self.stepsize}")

    def scaled(self, factor: float) -> NormStep:
        """The same threat with radius and step size times `factor` (the radius ramp of `MIMOStep`)."""
        return NormStep(self.norm, self.eps * factor, self.stepsize * factor)


class PassCounter:
    """Counts forward passes through `module` and backward passes through its output (a tensor hook per forward),
    so a backward that reaches the module's output counts once however it is requested (backward() or autograd.grad)."""

    def __init__(self, module: nn.Module) -> None:
        self.forward = self.backward = 0
        self._handle = module.register_forward_hook(self._on_forward)

    def _on_forward(self, module: nn.Module, inputs, output: Tensor) -> None:
        self.forward += 1
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(self._on_backward)

    def _on_backward(self, grad: Tensor) -> None:
        self.backward += 1

    def reset(self) -> None:
        self.forward = self.backward = 0

    def remove(self) -> None:
        self._handle.remove()


def _start(x: Tensor, steps: Sequence[NormStep], generator: torch.Generator | None) -> Tensor:
    return torch.stack([random_start(x[:, m], s.norm, s.eps, generator) for m, s in enumerate(steps)], dim=1)


def _take_step(
    x: Tensor, x_adv: Tensor, grad: Tensor, step: NormStep, generator: torch.Generator | None, l1_k: int | None = None
) -> Tensor:
    """One projected steepest-ascent step of one member's inputs (N, C, H, W) in its own norm (an L1 step moves
    `l1_k` coordinates, else a k drawn from `generator`)."""
    moved = x_adv + step.stepsize * steepest_direction(grad, x_adv, step.norm, generator, l1_k)
    return (x + project(moved - x, step.norm, step.eps)).clamp(0, 1)


def backbone_layout(x: Tensor) -> Tensor:
    """MIMO inputs (N, M, C, H, W) as the network reads them fastest: on a oneDNN CPU (`prefers_channels_last`) a copy
    stored N, H, W, M, C, so that the backbone's stacked (N, M*C, H, W) input, and a single model's (N, C, H, W) slot,
    are channels_last views; elsewhere `x` itself."""
    if x.dim() != 5 or not prefers_channels_last(x[:, 0]):
        return x
    n, m, c, h, w = x.shape
    return torch.empty_strided(x.shape, (h * w * m * c, c, 1, w * m * c, m * c), dtype=x.dtype, device=x.device).copy_(
        x
    )


def mat_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    steps: Sequence[NormStep],
    iterations: int,
    *,
    approximate: bool = True,
    start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """MAT's inner maximisation (eq. 6): every step one forward of the M inputs and ONE backward of the summed member
    losses, whose gradient w.r.t. input m drives member m's step in its own norm. approximate=False is the naive
    MIMO AT of eq. 5: one backward per member loss (M backward passes per step)."""
    if len(steps) != x.shape[1]:
        raise ValueError(f"{len(steps)} norm steps for M={x.shape[1]} members; give one per member")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1; got iterations={iterations}")
    x = x.detach()
    x_adv = _start(x, steps, generator) if start else x.clone()
    # every step's L1 sizes k drawn at once, in the order the steps would draw them: the same numbers on the CPU, and
    # on a GPU one host sync per attack instead of one per step
    l1_members = [m for m, s in enumerate(steps) if s.norm == "l1"]
    drawn = draw_l1_sizes(iterations * len(l1_members), generator) if l1_members else []
    for t in range(iterations):
        l1_k = dict(zip(l1_members, drawn[t * len(l1_members) : (t + 1) * len(l1_members)]))
        x_in = backbone_layout(x_adv).detach().requires_grad_(True)  # never x_adv itself
        losses = member_losses(model, x_in, y).sum(0)  # (M,): each member's loss summed over the batch
        if approximate:
            (grad,) = torch.autograd.grad(losses.sum(), x_in)
        else:
            grad = torch.stack(
                [
                    torch.autograd.grad(losses[m], x_in, retain_graph=m < len(steps) - 1)[0][:, m]
                    for m in range(len(steps))
                ],
                dim=1,
            )
        grad = grad.contiguous()  # each member's steps then read contiguous slices
        x_adv = torch.stack(
            [_take_step(x[:, m], x_adv[:, m], grad[:, m], s, generator, l1_k.get(m)) for m, s in enumerate(steps)],
            dim=1,
        )
    return x_adv.detach()


def msd_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    steps: Sequence[NormStep],
    iterations: int,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """MSD (Maini et al. 2020) for every member: one gradient per step (one backward of the summed losses), the
    steepest step of every norm in `steps`, and per example and member the candidate with the largest loss (one extra
    forward per norm). Starts from the clean inputs, as MSD does."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1; got iterations={iterations}")
    x = x.detach()
    x_adv = x.clone()
    for _ in range(iterations):
        x_in = backbone_layout(x_adv).detach().requires_grad_(True)  # never x_adv itself
        grad = torch.autograd.grad(member_losses(model, x_in, y).sum(), x_in)[0].contiguous()
        best, best_loss = x_adv, torch.full(y.shape, float("-inf"), device=x.device)
        for step in steps:
            candidate = torch.stack(
                [_take_step(x[:, m], x_adv[:, m], grad[:, m], step, generator) for m in range(x.shape[1])], dim=1
            )
            with torch.no_grad():
                loss = member_losses(model, candidate, y)
            better = loss > best_loss
            best = torch.where(better.view(*better.shape, *([1] * (x.dim() - 2))), candidate, best)
            best_loss = torch.maximum(loss, best_loss)
        x_adv = best
    return x_adv


def outer_loss(logits: Tensor, y: Tensor) -> Tensor:
    """The training loss on member logits (N, M, classes): the sum over members of each member's batch-mean
    cross-entropy (the released scripts' choice; Algorithm 1 prints a max)."""
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(0).sum()


def cross_gradient_ratio(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Figure 1: per member m, the ratio of the L2 norms of the cross gradient grad_{x_m} sum_{j != m} L_j (eq. 7:
    approximate minus true gradient) and the true gradient grad_{x_m} L_m, as the ratio of their batch-mean norms
    (a mean of per-sample ratios is dominated by confident samples whose own gradient is near zero)."""
    x = x.detach().requires_grad_(True)
    losses = member_losses(model, x, y).sum(0)
    (total,) = torch.autograd.grad(losses.sum(), x, retain_graph=True)
    ratios = []
    for m in range(x.shape[1]):
        (own,) = torch.autograd.grad(losses[m], x, retain_graph=m < x.shape[1] - 1)
        cross = (total - own)[:, m]
        ratios.append(mean_norm_ratio(cross, own[:, m]))
    return torch.stack(ratios)


def mean_norm_ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """mean_n ||numerator_n||_2 / mean_n ||denominator_n||_2 over the batch (dim 0): Figure 1's statistic."""
    if numerator.shape != denominator.shape or numerator.dim() < 2:
        raise ValueError(
            f"need two batches of the same shape (N, ...); got {tuple(numerator.shape)} and {tuple(denominator.shape)}"
        )
    return lp_norms(numerator, "l2").mean() / lp_norms(denominator, "l2").mean().clamp_min(1e-12)


def sign_disagreement(model: nn.Module, x: Tensor, y: Tensor, steps: Sequence[NormStep], k: int = 20) -> Tensor:
    """Figure 4: per member, the fraction of input entries where the steepest direction of its norm differs between
    the approximate gradient (of the summed losses) and the true one (of its own loss): sign for Linf, the top-k
    step for L1, NaN for L2 (the paper defines E_p for those two operators)."""
    x = x.detach().requires_grad_(True)
    losses = member_losses(model, x, y).sum(0)
    (total,) = torch.autograd.grad(losses.sum(), x, retain_graph=True)
    out = []
    for m, step in enumerate(steps):
        (own,) = torch.autograd.grad(losses[m], x, retain_graph=m < len(steps) - 1)
        if step.norm == "l2":  # the paper defines E for the sign and top-k operators only
            out.append(torch.tensor(float("nan")))
            continue
        if step.norm == "l1":
            a, b = (
                topk_l1_direction(total[:, m], x[:, m].detach(), k),
                topk_l1_direction(own[:, m], x[:, m].detach(), k),
            )
        else:
            a, b = total[:, m].sign(), own[:, m].sign()
        out.append((a != b).float().mean().cpu())
    return torch.stack(out)


Inner = Callable[[nn.Module, Tensor, Tensor, torch.Generator, float], Tensor]
"""inner(model, x, y, generator, radius_scale) -> adversarial inputs; radius_scale is 1 once the ramp is over."""


def ramp_scale(epoch: int, ramp_epochs: int) -> float:
    """Radius factor of 0-based `epoch` under a linear ramp over the first `ramp_epochs` epochs: (e+1)/(R+1), then 1."""
    if ramp_epochs < 0:
        raise ValueError(f"ramp_epochs must be >= 0; got ramp_epochs={ramp_epochs}")
    return min(1.0, (epoch + 1) / (ramp_epochs + 1))


def member_batches(train_set: Dataset, members: int, batch_size: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of MIMO batches: M loaders, each with its own seeded shuffle, zipped into (N, M, C, H, W) inputs
    and (N, M) labels (member m's slot holds an independent sample)."""
    loaders = [
        DataLoader(
            train_set, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed * 1_009 + m)
        )
        for m in range(members)
    ]
    for parts in zip(*loaders):
        yield torch.stack([x for x, _ in parts], dim=1), torch.stack([y for _, y in parts], dim=1)


class MIMOStep(Step):
    """Training of a MIMO-interface model (a `MIMO`, or a plain classifier in `SingleAsMIMO`), run by `train.fit`:
    every batch stacks M independently shuffled batches (`member_batches`), `inner(model, x, y, generator, scale)`
    (run in eval mode) gives the adversarial inputs, with radii ramped linearly over the first `ramp_epochs` epochs
    (`ramp_scale`; 0: full radii), and the step minimises `outer_loss`. Each epoch's record holds the loss, the
    clean-slot train accuracy, the seconds it took and the forward/backward passes per batch, counted by hooks on the
    model (attack and update together). A context manager: leaving it removes the hooks, also on error."""

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        spec: TrainSpec,
        *,
        members: int,
        inner: Inner | None = None,
        device: torch.device | str = "cpu",
        ramp_epochs: int = 0,
    ) -> None:
        if dataset_size(train_set) == 0:
            raise ValueError("training set is empty")
        ramp_scale(0, ramp_epochs)
        self.model, self.train_set, self.spec, self.device = model.to(device), train_set, spec, device
        self.members, self.inner, self.ramp_epochs = members, inner, ramp_epochs
        self.epochs = spec.epochs
        self.optimizer = make_optimizer(model, spec)
        self.scheduler = make_scheduler(self.optimizer, spec)
        self.state = {"model": model, "optimizer": self.optimizer, "scheduler": self.scheduler}
        self.counter = PassCounter(model)

    def __enter__(self) -> MIMOStep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.counter.remove()

    def num_batches(self) -> int:
        return -(-dataset_size(self.train_set) // self.spec.batch_size)

    def begin_epoch(self, epoch: int, seed: int) -> None:
        """Seed the epoch's global draws and the inner attack's generator (on the device) from (seed, epoch), restart
        the pass counts and the clock."""
        super().begin_epoch(epoch, seed)
        self.generator = torch.Generator(device=self.device).manual_seed(epoch_seed(seed, epoch))
        self.counter.reset()
        self.began = time.perf_counter()

    def batches(self, epoch: int, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        self.augment_rng = torch.Generator().manual_seed(epoch_seed(seed, epoch) + AUGMENT_STREAM)
        return member_batches(self.train_set, self.members, self.spec.batch_size, epoch_seed(seed, epoch))

    def update(self, batch: tuple[Tensor, Tensor], epoch: int) -> dict[str, float]:
        x, y = batch[0].to(self.device), batch[1].to(self.device)
        if self.spec.augment != "none":  # every member slot's image augmented on its own (N*M images)
            x = augment_batch(x.flatten(0, 1), self.spec.augment, self.augment_rng).view_as(x)
        if self.inner is not None:
            self.model.eval()
            x = self.inner(self.model, x, y, self.generator, ramp_scale(epoch, self.ramp_epochs))
        self.model.train()
        logits = self.model(backbone_layout(x))
        loss = outer_loss(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"n": y.numel(), "correct": int((logits.argmax(2) == y).sum()), "loss_sum": float(loss.detach())}

    def record(self, epoch: int, sums: dict[str, float], batches: int) -> dict[str, Any]:
        self.scheduler.step()
        return {
            "epoch": epoch + 1,
            "loss": sums["loss_sum"] / batches,
            "train_acc": sums["correct"] / sums["n"],
            "seconds": time.perf_counter() - self.began,
            "forward_per_batch": self.counter.forward / batches,
            "backward_per_batch": self.counter.backward / batches,
        }
