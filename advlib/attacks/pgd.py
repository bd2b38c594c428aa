"""Native batched PGD in Linf, L2 and L1 with steepest (sign) or Adam updates, optionally recording
per-step correctness.

Native because training loops need it at full speed (one forward+backward per step, no wrapper
overhead), because foolbox has no sparse top-k L1 step with an exact L1-ball projection, and
because accuracy-vs-steps curves need the correctness of every iterate from a single run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Attack, project

Update = Literal["steepest", "adam"]
LossName = Literal["ce", "margin"]
UPDATES = ("steepest", "adam")
ADAM_RULE = "adam-on-raw-gradient"  # part of the cache keys of results made with update="adam" (was: Adam on sign)
LOSSES = ("ce", "margin")
L1_K_RANGE = (5, 20)


def _view(t: Tensor, like: Tensor) -> Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


def attack_loss(logits: Tensor, labels: Tensor, loss: str) -> Tensor:
    """Per-sample loss that the attack ascends: CE, or the margin max_{i!=y} z_i - z_y."""
    if loss == "ce":
        return F.cross_entropy(logits, labels, reduction="none")
    if loss == "margin":
        true = logits.gather(1, labels[:, None]).squeeze(1)
        others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
        return others.amax(dim=1) - true
    raise ValueError(f"loss {loss!r} is not allowed; choose one of {', '.join(LOSSES)}")


def random_start(x: Tensor, norm: str, eps: float, generator: torch.Generator | None = None) -> Tensor:
    """A uniformly random point of the eps-ball around x (clipped to [0, 1])."""
    n, d = len(x), x[0].numel()
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1) * eps
    elif norm == "l2":
        direction = torch.randn((n, d), generator=generator, device=x.device)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        radius = torch.rand((n, 1), generator=generator, device=x.device) ** (1.0 / d) * eps
        delta = (direction * radius).view_as(x)
    elif norm == "l1":
        # uniform in the L1 ball: normalised exponentials (with one slack coordinate) and random signs
        e = -torch.rand((n, d + 1), generator=generator, device=x.device).clamp_min(1e-12).log()
        magnitudes = (e / e.sum(dim=1, keepdim=True))[:, :d] * eps
        signs = torch.randint(0, 2, (n, d), generator=generator, device=x.device) * 2 - 1
        delta = (magnitudes * signs).view_as(x)
    else:
        raise ValueError(f"norm {norm!r} has no random start; choose linf, l2 or l1")
    return (x + delta.to(x.dtype)).clamp(0, 1)


def keyed_generators(seed: int, keys: Tensor, device: torch.device) -> list[torch.Generator]:
    """One generator per sample, seeded by (seed, key): a sample's draws then do not depend on its batch."""
    return [torch.Generator(device=device).manual_seed((seed * 0x9E3779B1 + int(k)) % 2**63) for k in keys.tolist()]


def start_point(
    x: Tensor, norm: str, eps: float, start_sigma: float | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """PGD's start: uniform in the eps-ball, or x + N(0, start_sigma^2) projected into it (clipped to [0, 1])."""
    if start_sigma is None:
        return random_start(x, norm, eps, generator)
    noise = torch.randn(x.shape, generator=generator, device=x.device) * start_sigma
    return (x + project(noise, norm, eps)).clamp(0, 1)


def topk_l1_direction(grad: Tensor, x_adv: Tensor, k: int) -> Tensor:
    """Unit-L1 sparse direction: sign(grad)/k on the k largest |grad| coordinates whose move stays in [0,1]."""
    flat_g, flat_x = grad.flatten(1), x_adv.flatten(1)
    blocked = torch.where(flat_g > 0, flat_x >= 1, (flat_g < 0) & (flat_x <= 0))  # the move would leave [0, 1]
    score = flat_g.abs().masked_fill_(blocked, -1.0)
    k = min(k, flat_g.shape[1])
    top = score.topk(k, dim=1)
    # never move blocked or zero-gradient coordinates; only the k chosen entries are computed, then scattered
    moves = flat_g.gather(1, top.indices).sign_().div_(k).mul_(top.values > 0)
    return torch.zeros_like(flat_g).scatter_(1, top.indices, moves).view_as(grad)


def draw_l1_sizes(count: int, generator: torch.Generator | None = None) -> list[int]:
    """`count` L1 step sizes k, uniform in L1_K_RANGE, drawn on the generator's device (the CPU's global RNG if None)."""
    return torch.randint(
        L1_K_RANGE[0],
        L1_K_RANGE[1] + 1,
        (count,),
        generator=generator,
        device=generator.device if generator is not None else None,
    ).tolist()


def steepest_direction(
    grad: Tensor, x_adv: Tensor, norm: str, generator: torch.Generator | None = None, l1_k: int | None = None
) -> Tensor:
    """The unit-norm steepest-ascent direction of `norm` for each sample; the L1 step moves `l1_k` coordinates, or
    a k drawn in 5..20 per step when None (MAT's training; its tests fix k = 20)."""
    if norm == "linf":
        return grad.sign()
    if norm == "l2":
        return grad / _view(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)
    if norm == "l1":
        k = l1_k if l1_k is not None else draw_l1_sizes(1, generator)[0]
        return topk_l1_direction(grad, x_adv, k)
    raise ValueError(f"norm {norm!r} is not allowed for PGD; choose linf, l2 or l1")


def prefers_channels_last(x: Tensor) -> bool:
    """Whether the network should get `x` in channels_last (in attacks and training): float32 image batches on a CPU
    whose convolutions run in oneDNN, which computes in NHWC and otherwise reorders every NCHW input and gradient
    (measured here: ResNet-18 forward+backward about 20% faster, PGD-40 about 9%; the classic LeNet-5 on MNIST
    forward+backward about 2x). Off with oneDNN off (portable kernels), so the goldens keep NCHW."""
    return bool(
        x.device.type == "cpu"
        and x.dim() == 4
        and x.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    )


def in_layout(x: Tensor, layout: torch.memory_format) -> Tensor:
    """`x` stored in `layout`. A one-channel batch is the same bytes in NCHW and NHWC, but torch reads the layout
    from the strides, so for channels_last it gets NHWC strides on the same memory (a view, no copy)."""
    if layout == torch.channels_last and x.dim() == 4 and x.shape[1] == 1:
        x = x.contiguous()
        return x.as_strided(x.shape, (x.stride(0), 1, x.stride(2), x.stride(3)))
    return x.contiguous(memory_format=layout)


@dataclass
class PGDOutput:
    x_adv: Tensor
    correct: Tensor | None  # [steps + 1, N]: row t = iterate after t steps classified correctly (or not on target)


def _check_pgd_options(eps: float, steps: int, update: str, loss: str, start_sigma: float | None) -> None:
    """A ValueError naming the bad PGD option and the allowed values."""
    if start_sigma is not None and start_sigma <= 0:
        raise ValueError(f"start_sigma must be > 0 (or None for a uniform start); got start_sigma={start_sigma}")
    if update not in UPDATES:
        raise ValueError(f"update {update!r} is not allowed; choose one of {', '.join(UPDATES)}")
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r} is not allowed; choose one of {', '.join(LOSSES)}")
    if eps <= 0 or steps < 1:
        raise ValueError(f"PGD needs eps > 0 and steps >= 1, got eps={eps}, steps={steps}")


def _first_iterate(
    x: Tensor,
    norm: str,
    eps: float,
    start: bool,
    start_sigma: float | None,
    generator: torch.Generator | None,
    keys: Tensor | None,
    seed: int,
) -> Tensor:
    """PGD's start: x itself, or a random point of the ball drawn per sample from (seed, keys[i]) or from `generator`."""
    if not start:
        return x.clone()
    if keys is not None:
        return torch.cat(
            [
                start_point(x[i : i + 1], norm, eps, start_sigma, g)
                for i, g in enumerate(keyed_generators(seed, keys, x.device))
            ]
        )
    return start_point(x, norm, eps, start_sigma, generator)


def _adam_direction(
    grad: Tensor,
    m: Tensor | None,
    v: Tensor | None,
    t: int,
    x_adv: Tensor,
    norm: str,
    generator: torch.Generator | None,
    l1_k: int | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Step t's direction of Adam (beta 0.9/0.999, eps 1e-8) on the raw gradient, and the updated moments; in L2 the
    norm's steepest step along Adam's direction, in L1 along the first moment (Adam's direction is ~ +-1 everywhere,
    so the sparse top-k step picks by momentum)."""
    m = 0.9 * m + 0.1 * grad if m is not None else 0.1 * grad
    v = 0.999 * v + 0.001 * grad**2 if v is not None else 0.001 * grad**2
    direction = (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
    if norm == "l2":
        direction = steepest_direction(direction, x_adv, norm, generator, l1_k)
    elif norm == "l1":
        direction = steepest_direction(m, x_adv, norm, generator, l1_k)
    return direction, m, v


def _fooled(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """Per sample: does the prediction leave the label y (untargeted) or reach the target?"""
    pred = logits.argmax(dim=1)
    return pred == target if target is not None else pred != y


def _pgd_early_stop(
    model: nn.Module,
    x: Tensor,
    x_adv: Tensor,
    y: Tensor,
    target: Tensor | None,
    eps: float,
    steps: int,
    alpha: float,
    sign: float,
    norm: str,
    update: str,
    loss: str,
    box: tuple[Tensor, Tensor] | None,
    layout: torch.memory_format,
    generator: torch.Generator | None,
    l1_k: int | None,
) -> PGDOutput:
    """`pgd`'s steps on the samples not yet fooled only: a sample is frozen at its first fooling point (x itself, or
    the iterate whose forward pass, made anyway for the next gradient, shows it fooled). The last iterate is not
    checked: a sample it fools returns it all the same."""
    labels = target if target is not None else y
    with torch.no_grad():
        done = _fooled(model(x), y, target)
    x_adv = torch.where(_view(done, x), x, x_adv)
    m = torch.zeros_like(x_adv) if update == "adam" else None
    v = torch.zeros_like(x_adv) if update == "adam" else None
    for t in range(1, steps + 1):
        rows = (~done).nonzero().squeeze(1)
        if len(rows) == 0:
            break
        x_now = x_adv[rows]
        if layout != torch.contiguous_format:
            x_now = in_layout(x_now, layout)
        x_now.requires_grad_(True)
        logits = model(x_now)
        fooled = _fooled(logits.detach(), y[rows], None if target is None else target[rows])
        done[rows] = fooled
        summed = (
            F.cross_entropy(logits, labels[rows], reduction="sum")
            if loss == "ce"
            else attack_loss(logits, labels[rows], loss).sum()
        )
        (grad,) = torch.autograd.grad(summed, x_now)
        if update == "adam":  # Adam moments of the running samples (a frozen sample's are never used again)
            assert m is not None and v is not None
            direction, m_rows, v_rows = _adam_direction(
                grad, m[rows] if t > 1 else None, v[rows] if t > 1 else None, t, x_now.detach(), norm, generator, l1_k
            )
            m[rows], v[rows] = m_rows, v_rows
        else:
            direction = steepest_direction(grad, x_now.detach(), norm, generator, l1_k)
        moved = x_now.detach().add(direction, alpha=sign * alpha)
        moved = (
            moved.clamp_(box[0][rows], box[1][rows])
            if box is not None
            else (x[rows] + project(moved - x[rows], norm, eps)).clamp(0, 1)
        )
        keep = rows[~fooled]
        x_adv[keep] = moved[~fooled].to(x_adv.dtype)
    return PGDOutput(x_adv=x_adv.detach().contiguous(), correct=None)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 40,
    stepsize: float | None = None,
    rel_stepsize: float = 0.025,
    start: bool = True,
    target: Tensor | None = None,
    update: str = "steepest",
    loss: str = "ce",
    record: bool = False,
    start_sigma: float | None = None,
    generator: torch.Generator | None = None,
    l1_k: int | None = None,
    keys: Tensor | None = None,
    seed: int = 0,
    channels_last: bool | None = None,
    early_stop: bool = False,
) -> PGDOutput:
    """Projected gradient ascent of `loss` within the eps-ball of `norm` (descent towards `target` if given).

    update="adam" runs Adam (beta 0.9/0.999, eps 1e-8) on the raw gradient of the summed loss, then projects (the
    paper's "PGD ... using the Adam update rule"); in Linf the step size is Adam's learning rate, i.e. at most about
    `stepsize` per coordinate, as the sign step's. Its first step equals the sign step except where |grad| is near
    Adam's 1e-8; later steps weigh coordinates by their gradient history (sign-fed Adam was momentum IFGSM).
    In L2/L1 (not in the paper) the step is the norm's steepest step of length `stepsize` along Adam's direction
    (L2) or along Adam's first moment (L1: the top-k step needs magnitudes, which Adam's direction flattens).
    The step size is absolute (`stepsize`, else rel_stepsize * eps), so the first t iterates of a
    long run equal a t-step run with the same start: one recording run gives the whole steps curve.
    The start is uniform in the ball, or x + N(0, start_sigma^2) projected into it (Strength in Numbers, Algorithm 1).
    With `keys`, sample i starts from its own stream seeded by (seed, keys[i]) and the L1 step sizes k come from one
    stream seeded by `seed`, so every sample's result is the same in any batch; else all draws come from `generator`.
    The iterate lives in channels_last memory when `channels_last` (None: `prefers_channels_last`); only the layout
    changes, and with it the convolutions' float rounding in the last bits. The result is returned contiguous.
    With `early_stop` (foolbox 2's return_early) each sample stops at its first fooling point: x itself when the
    model already errs on it, else the first iterate (the start included) that fools; the others run every step.
    """
    _check_pgd_options(eps, steps, update, loss, start_sigma)
    if early_stop and record:
        raise ValueError("early_stop and record cannot be combined (a stopped sample has no later iterates)")
    alpha = stepsize if stepsize is not None else rel_stepsize * eps
    labels, sign = (target, -1.0) if target is not None else (y, 1.0)
    layout = (
        torch.channels_last
        if (prefers_channels_last(x) if channels_last is None else channels_last)
        else torch.contiguous_format
    )
    x = x.detach() if layout == torch.contiguous_format else in_layout(x.detach(), layout)
    x_adv = _first_iterate(x, norm, eps, start, start_sigma, generator, keys, seed)
    if keys is not None:
        generator = torch.Generator().manual_seed(seed)
    # Linf: the projection and the [0, 1] clip are one clamp to [max(x - eps, 0), min(x + eps, 1)]; a step is then three
    # kernels (sign, add, clamp) instead of seven, which matters on a GPU, where small models' steps are launch-bound
    box = ((x - eps).clamp_(min=0), (x + eps).clamp_(max=1)) if norm == "linf" else None
    if early_stop:
        return _pgd_early_stop(
            model, x, x_adv, y, target, eps, steps, alpha, sign, norm, update, loss, box, layout, generator, l1_k
        )
    m = v = None
    history = []
    for t in range(1, steps + 1):
        if layout != torch.contiguous_format:
            x_adv = in_layout(x_adv, layout)  # free unless a projection's reshape changed it
        x_adv.requires_grad_(True)
        logits = model(x_adv)
        if record:  # the prediction only; correctness is compared once at the end (one kernel per step, not two)
            history.append(logits.detach().argmax(dim=1))
        summed = (
            F.cross_entropy(logits, labels, reduction="sum")
            if loss == "ce"
            else attack_loss(logits, labels, loss).sum()
        )
        (grad,) = torch.autograd.grad(summed, x_adv)
        if update == "adam":  # Adam on the raw gradient (the paper's PGD), not on the steepest direction
            direction, m, v = _adam_direction(grad, m, v, t, x_adv.detach(), norm, generator, l1_k)
        else:
            direction = steepest_direction(grad, x_adv.detach(), norm, generator, l1_k)
        x_adv = x_adv.detach().add(direction, alpha=sign * alpha)
        x_adv = x_adv.clamp_(*box) if box is not None else (x + project(x_adv - x, norm, eps)).clamp(0, 1)
    if not record:
        return PGDOutput(x_adv=x_adv.detach().contiguous(), correct=None)
    with torch.no_grad():
        history.append(model(x_adv).argmax(dim=1))
    predictions = torch.stack(history)
    correct = predictions != target if target is not None else predictions == y
    return PGDOutput(x_adv=x_adv.detach().contiguous(), correct=correct)


class PGD(Attack):
    """Registry face of `pgd`: options update ('steepest'|'adam'), loss ('ce'|'margin'), start_sigma (Gaussian start),
    early_stop (each sample's first fooling iterate, foolbox 2's return_early)."""

    kind = "fixed"
    targeted_ok = True

    def __init__(
        self,
        eps: float | None = None,
        *,
        norm: str = "linf",
        steps: int = 40,
        stepsize: float | None = None,
        rel_stepsize: float | None = None,
        random_start: bool = True,
        update: str = "steepest",
        loss: str = "ce",
        start_sigma: float | None = None,
        l1_k: int | None = None,
        targeted: bool = False,
        seed: int = 0,
        early_stop: bool = False,
    ):
        super().__init__(eps, targeted=targeted, seed=seed)
        if norm not in ("linf", "l2", "l1"):
            raise ValueError(f"PGD norm {norm!r} is not allowed; choose linf, l2 or l1")
        if update not in UPDATES or loss not in LOSSES:
            raise ValueError(f"PGD update {update!r} / loss {loss!r} not allowed; updates: {UPDATES}, losses: {LOSSES}")
        self.norm = norm
        self.steps, self.stepsize, self.update, self.loss = steps, stepsize, update, loss
        self.rel_stepsize = rel_stepsize if rel_stepsize is not None else 2.5 / steps
        if l1_k is not None and l1_k < 1:
            raise ValueError(f"l1_k must be >= 1 (or None for a k drawn in 5..20); got l1_k={l1_k}")
        self.start, self.start_sigma, self.l1_k = random_start, start_sigma, l1_k
        self.early_stop = bool(early_stop)

    def generate(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, keys: Tensor | None) -> Tensor:
        return self.run(model, x, y, target, keys=keys).x_adv

    def run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        target: Tensor | None = None,
        *,
        record: bool = False,
        keys: Tensor | None = None,
    ) -> PGDOutput:
        return pgd(
            model,
            x,
            y,
            eps=cast(float, self.eps),  # a fixed-eps attack: Attack.__init__ refuses eps=None
            norm=self.norm,
            steps=self.steps,
            stepsize=self.stepsize,
            rel_stepsize=self.rel_stepsize,
            start=self.start,
            target=target,
            update=self.update,
            loss=self.loss,
            record=record,
            start_sigma=self.start_sigma,
            l1_k=self.l1_k,
            keys=keys,
            seed=self.seed,
            early_stop=self.early_stop,
        )
