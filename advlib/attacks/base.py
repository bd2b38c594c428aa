"""The uniform attack interface: an `Attack` turns (model, x, y) into an `AttackResult`.

Whatever the backend, results are clipped to [0, 1], projected into the eps-ball of the attack's
norm (for minimal-norm attacks only when an eps is given) and `success` is recomputed by
re-predicting the adversarials, never taken from the backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

import numpy as np
import torch
from torch import Tensor, nn

from ..data import check_images
from ..inference import predict

Norm = Literal["linf", "l2", "l1", "none"]
Kind = Literal["fixed", "minimal"]
NORMS: tuple[str, ...] = ("linf", "l2", "l1", "none")


def lp_norms(delta: Tensor, norm: str) -> Tensor:
    """Per-sample Lp norm of a batch of perturbations ('none' gives the L2 norm)."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    if norm in ("l2", "none"):
        return flat.norm(p=2, dim=1)
    raise ValueError(f"norm {norm!r} is not allowed; choose one of {', '.join(NORMS)}")


def sorted_descending(rows: Tensor) -> Tensor:
    """Each row's values in descending order. On the CPU (float32/64, no autograd) by numpy's SIMD sort, about 5x
    faster than torch's for image-sized rows: a sort's values do not depend on the algorithm, so neither does anything
    computed from them."""
    if rows.device.type != "cpu" or rows.requires_grad or rows.dtype not in (torch.float32, torch.float64):
        return rows.sort(dim=1, descending=True).values
    return torch.from_numpy(np.ascontiguousarray(np.sort(rows.numpy(), axis=1)[:, ::-1]))


def project_l1_ball(delta: Tensor, eps: float | Tensor) -> Tensor:
    """Euclidean projection of each sample onto the L1 ball of radius eps (sort-based, Duchi et al. 2008).

    Native: neither foolbox nor torch offer an exact L1-ball projection (foolbox rescales instead).
    """
    flat = delta.flatten(1)
    n, d = flat.shape
    eps_t = torch.as_tensor(eps, dtype=flat.dtype, device=flat.device).expand(n)
    abs_flat = flat.abs()
    inside = abs_flat.sum(dim=1) <= eps_t
    sorted_abs = sorted_descending(abs_flat)
    cumsum = sorted_abs.cumsum(dim=1)
    ranks = torch.arange(1, d + 1, device=flat.device, dtype=flat.dtype)
    # in place from here on: the same arithmetic, without a fresh (N, D) buffer per operation
    condition = cumsum.sub(eps_t[:, None]).div_(ranks)
    condition = torch.sub(sorted_abs, condition, out=condition).gt_(0).mul_(ranks)  # rank where the condition holds
    rho = condition.argmax(dim=1)  # last index where the condition holds
    theta = (cumsum.gather(1, rho[:, None]).squeeze(1) - eps_t) / (rho + 1).to(flat.dtype)
    projected = abs_flat.sub_(theta[:, None]).clamp_min_(0).mul_(flat.sign())
    return torch.where(inside[:, None], flat, projected).view_as(delta)


def project(delta: Tensor, norm: str, eps: float) -> Tensor:
    """Project perturbations onto the eps-ball of `norm`."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        norms = lp_norms(delta, "l2").clamp_min(1e-12)
        factor = (eps / norms).clamp(max=1.0)
        return delta * factor.view(-1, *([1] * (delta.dim() - 1)))
    if norm == "l1":
        return project_l1_ball(delta, eps)
    if norm == "none":
        return delta
    raise ValueError(f"norm {norm!r} is not allowed; choose one of {', '.join(NORMS)}")


@dataclass
class AttackResult:
    """Adversarials in [0,1] and inside the eps-ball, success by re-prediction, per-sample norms."""

    x_adv: Tensor
    success: Tensor
    norms: Tensor
    l2: Tensor
    norm: str
    eps: float | None

    @property
    def robust_accuracy(self) -> float:
        """Share in [0, 1] of the inputs the attack did not break within its eps (misclassified inputs count as broken)."""
        return float((~self.broken()).float().mean())

    def broken(self, eps: float | None = None, tol: float = 1e-4) -> Tensor:
        """Samples the attack breaks within eps (+tol); misclassified clean inputs come out as successes."""
        eps = self.eps if eps is None else eps
        if eps is None or self.norm == "none":
            return self.success.clone()
        return self.success & (self.norms <= eps + tol)


def check_batch(x: Tensor, y: Tensor, target: Tensor | None = None) -> None:
    """Reject bad attack inputs before any work: images (data.check_images), label and target counts."""
    check_images(x, allow_empty=False)
    if y.shape != (len(x),):
        raise ValueError(f"labels must have shape ({len(x)},), got {tuple(y.shape)}")
    if target is not None and target.shape != (len(x),):
        raise ValueError(f"targets must have shape ({len(x)},), got {tuple(target.shape)}")


def check_model_input(model: nn.Module, x: Tensor, y: Tensor | None = None) -> None:
    """Reject a batch the model cannot read (wrong channel count or image size) or labels beyond its outputs,
    by one forward of a single image, before any expensive work."""
    try:
        with torch.no_grad():
            logits = model(x[:1])
    except RuntimeError as error:
        raise ValueError(
            f"the model cannot read images of shape {tuple(x.shape[1:])} (C, H, W): {str(error).splitlines()[0]}"
        ) from error
    if y is not None and len(y) and (int(y.min()) < 0 or int(y.max()) >= logits.shape[-1]):
        raise ValueError(
            f"labels span [{int(y.min())}, {int(y.max())}]; the model has {logits.shape[-1]} classes, "
            f"allowed labels 0..{logits.shape[-1] - 1}"
        )


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with torch's RNG seeded to `seed`, restoring the caller's RNG state afterwards.

    Attacks draw random starts and noise inside it, so a result never depends on what ran before
    (for example on whether earlier stages were loaded from the cache or computed).
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class Attack(ABC):
    """Base class: subclasses set the class attributes (some per instance: `norm`, `kind`, `targeted_ok`) and
    implement `generate` on one batch."""

    norm: str
    kind: Kind
    targeted_ok: bool = False
    backend: ClassVar[str] = "native"
    #: a sample's adversarial depends on that sample (and its key) alone, not on the rest of its batch: true for
    #: deterministic attacks and for keyed random draws, false where one random stream serves the whole batch
    per_sample: bool = True

    def __init__(self, eps: float | None = None, *, targeted: bool = False, seed: int = 0, **options: Any):
        if eps is not None and eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if self.kind == "fixed" and eps is None:
            raise ValueError(f"{type(self).__name__} is a fixed-eps attack and needs eps > 0")
        if targeted and not self.targeted_ok:
            raise ValueError(f"{type(self).__name__} has no targeted mode")
        self.eps = eps
        self.targeted = targeted
        self.seed = seed
        self.options = options

    @abstractmethod
    def generate(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, keys: Tensor | None) -> Tensor:
        """Raw adversarials for one batch (before clipping and projection); attacks with random draws take each
        sample's from a stream keyed by `keys` when given."""

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None = None, keys: Tensor | None = None
    ) -> Tensor:
        """Adversarials clipped to [0, 1] and, when eps is set, projected into the eps-ball."""
        x_adv = self.generate(model, x, y, target, keys).detach()
        if self.eps is not None:
            x_adv = x + project(x_adv - x, self.norm, self.eps)
        return x_adv.clamp(0.0, 1.0)

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        target: Tensor | None = None,
        *,
        batch_size: int = 256,
        keys: Tensor | None = None,
    ) -> AttackResult:
        """Attack (x, y) in batches. `keys` (one integer per sample, e.g. its position in the evaluated set) give
        every sample its own random stream, seeded by (seed, key), in attacks that draw randomness per sample
        (native PGD): its adversarial is then the same in any batch, which makes a cascade over survivors exact."""
        if self.targeted and target is None:
            raise ValueError(f"{type(self).__name__} was built targeted; pass `target` labels")
        check_batch(x, y, target)
        if keys is not None and (keys.shape != (len(x),) or keys.is_floating_point() or keys.is_complex()):
            raise ValueError(
                f"keys must be {len(x)} integers, one per sample; got dtype {keys.dtype}, shape {tuple(keys.shape)}"
            )
        was_training = model.training
        model.eval()
        try:
            check_model_input(model, x, y)
            with seeded(self.seed, x.device):
                chunks = []
                for i in range(0, len(x), batch_size):
                    t = None if target is None else target[i : i + batch_size]
                    k = None if keys is None else keys[i : i + batch_size]
                    chunks.append(self.perturb(model, x[i : i + batch_size], y[i : i + batch_size], t, k))
            x_adv = torch.cat(chunks)
            pred = predict(model, x_adv, batch_size)
        finally:
            model.train(was_training)
        success = pred == cast(Tensor, target) if self.targeted else pred != y  # targeted: target checked above
        delta = x_adv - x
        return AttackResult(
            x_adv=x_adv,
            success=success,
            norms=lp_norms(delta, self.norm),
            l2=lp_norms(delta, "l2"),
            norm=self.norm,
            eps=self.eps,
        )
