"""Adapters that put maintained attack libraries behind the `Attack` interface.

foolbox 3 provides most attacks; the gaps are filled by adv-lib (the trust region attack) and pyautoattack
(AutoAttack). Only the glue is written here. SPSA is native (`spsa.py`): torchattacks' has no early stop.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .base import Attack, Kind, predict

log = logging.getLogger("advlib")

_ATTACK_FIELDS = {
    "steps": "steps",
    "stepsize": "abs_stepsize",
    "rel_stepsize": "rel_stepsize",
    "random_start": "random_start",
}


# backends that are optional extras of advlib: (module imported, how to install it)
OPTIONAL_BACKENDS = {
    "adv-lib": ("adv_lib", "pip install 'advlib[trust-region]' (adv-lib, which needs visdom)"),
}


def missing_backend(backend: str) -> str | None:
    """How to install `backend` when it is an optional extra that is not installed; None when it can be imported."""
    if backend not in OPTIONAL_BACKENDS:
        return None
    module, install = OPTIONAL_BACKENDS[backend]
    return None if importlib.util.find_spec(module) is not None else install


def _require(backend: str, attack: str) -> None:
    install = missing_backend(backend)
    if install:
        raise ModuleNotFoundError(
            f"attack {attack!r} needs {backend}, an optional extra that is not installed: {install}"
        )


def _checked_options(owner: str, accepted: set[str], options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"attack {owner!r} does not take option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(accepted)) or 'none'}"
        )
    return options


class _OnCorrectOnly(Attack):
    """Mixin behaviour: attack only the correctly classified inputs (others are already adversarial)."""

    only_correct = False

    def perturb(
        self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None = None, keys: Tensor | None = None
    ) -> Tensor:
        if not self.only_correct:
            return super().perturb(model, x, y, target, keys)
        out = x.clone()
        keep = predict(model, x) == y
        if keep.any():
            out[keep] = super().perturb(
                model, x[keep], y[keep], None if target is None else target[keep], None if keys is None else keys[keep]
            )
        return out


class FoolboxAttack(_OnCorrectOnly):
    """Any foolbox 3 attack class; fixed-eps attacks get `epsilons=eps`, minimal ones run unbounded."""

    backend = "foolbox"

    def __init__(
        self,
        fb_class: type[Any],
        norm: str,
        kind: Kind,
        eps: float | None = None,
        *,
        targeted: bool = False,
        seed: int = 0,
        targeted_ok: bool = True,
        only_correct: bool = False,
        per_sample: bool = True,
        defaults: dict[str, Any] | None = None,
        **options: Any,
    ):
        self.norm, self.kind, self.targeted_ok, self.only_correct = norm, kind, targeted_ok, only_correct
        super().__init__(eps, targeted=targeted, seed=seed)
        accepted = set(inspect.signature(fb_class.__init__).parameters) - {"self"}
        renamed = {(_ATTACK_FIELDS[k] if _ATTACK_FIELDS.get(k) in accepted else k): v for k, v in options.items()}
        kwargs = {**(defaults or {}), **_checked_options(fb_class.__name__, accepted, renamed)}
        self.fb_attack = fb_class(**kwargs)
        # foolbox draws random starts and noise from one stream for the whole batch
        self.per_sample = per_sample and not getattr(self.fb_attack, "random_start", False)

    def generate(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, keys: Tensor | None) -> Tensor:
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
        criterion = fb.criteria.TargetedMisclassification(target) if self.targeted else fb.criteria.Misclassification(y)
        epsilons = self.eps if self.kind == "fixed" else None
        if isinstance(self.fb_attack, (fb.attacks.BoundaryAttack, fb.attacks.HopSkipJumpAttack)) and not self.targeted:
            starts, found = closest_other_class(x, predict(model, x), y)
            out = x.clone()
            if not found.all():
                log.warning(
                    "%s: no image of another class to start from for %d of %d inputs; they stay unattacked",
                    type(self.fb_attack).__name__,
                    int((~found).sum()),
                    len(x),
                )
            if found.any():
                criterion = fb.criteria.Misclassification(y[found])
                out[found] = self.fb_attack(fmodel, x[found], criterion, epsilons=None, starting_points=starts[found])[
                    0
                ]
            return out
        if isinstance(self.fb_attack, fb.attacks.SpatialAttack):  # its rotation grids are float32 whatever the inputs
            return in_float32(lambda net, images: self._spatial(net, images, y), model, x)
        return self.fb_attack(fmodel, x, criterion, epsilons=epsilons)[0]

    def _spatial(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """foolbox's untargeted, unbounded SpatialAttack."""
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
        with warnings.catch_warnings():  # it calls torch.meshgrid without `indexing`
            warnings.filterwarnings("ignore", message="torch.meshgrid: in an upcoming release", category=UserWarning)
            return self.fb_attack(fmodel, x, fb.criteria.Misclassification(y), epsilons=None)[0]


def closest_other_class(x: Tensor, pred: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Starting points for decision-based attacks: for each x_i, the nearest (L2) batch image predicted as another
    class than y_i, and a mask of the inputs for which one exists.

    foolbox's default start (blended uniform noise) fails outright on some inputs and aborts the whole batch.
    """
    distance = torch.cdist(x.flatten(1), x.flatten(1))
    distance[pred.unsqueeze(0) == y.unsqueeze(1)] = float("inf")
    nearest = distance.argmin(dim=1)
    found = ~torch.isinf(distance.gather(1, nearest[:, None]).squeeze(1))
    return x[nearest], found


class TrustRegionAttack(_OnCorrectOnly):
    """Trust region attack (Yao et al. 2019), minimal-norm and untargeted, from adv-lib."""

    kind, targeted_ok, backend, only_correct, per_sample = "minimal", False, "adv-lib", True, False

    def __init__(
        self,
        eps: float | None = None,
        *,
        norm: str = "l2",
        steps: int = 100,
        targeted: bool = False,
        seed: int = 0,
        **options: Any,
    ):
        self.norm = norm
        super().__init__(eps, targeted=targeted, seed=seed)
        self.kwargs = {
            "iter": steps,
            **_checked_options("trust_region", {"adaptive", "eps", "c", "worst_case"}, options),
        }
        # adv-lib's per-step trust radius (not the attack budget), grown adaptively: its fixed 1e-3
        # default caps 100 steps at an L2 move of 0.1, far below what MNIST models need
        self.kwargs.setdefault("eps", 0.01)
        self.kwargs.setdefault("adaptive", True)

    def generate(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, keys: Tensor | None) -> Tensor:
        _require(self.backend, f"trust_region_{self.norm}")
        from adv_lib.attacks import tr

        norm = float("inf") if self.norm == "linf" else 2.0
        # adv-lib keeps its trust radii in float32 whatever the inputs (torch.full_like(..., dtype=torch.float))
        return in_float32(lambda m, xs: tr(m, xs, y, p=norm, **self.kwargs), model, x)


def in_float32(attack: Callable[[nn.Module, Tensor], Tensor], model: nn.Module, x: Tensor) -> Tensor:
    """`attack(model, x)` for a library that assumes float32: a float64 model (the ci profiles) is attacked through
    a float32 view of it, and the adversarials come back in x's dtype."""
    if x.dtype == torch.float32:
        return attack(model, x)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)  # the library's own buffers (torch.ones, torch.zeros, ...) too
    try:
        return attack(_Float32View(model, x.dtype), x.float()).to(x.dtype)
    finally:
        torch.set_default_dtype(default)


class _Float32View(nn.Module):
    """`model` taking and returning float32 while computing in `dtype`."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.to(self.dtype)).float()


class AutoAttackAttack(Attack):
    """AutoAttack (Croce & Hein 2020), 'standard' version by default, from pyautoattack."""

    kind, targeted_ok, backend, per_sample = "fixed", False, "pyautoattack", False
    _NORM_NAMES = {"linf": "Linf", "l2": "L2", "l1": "L1"}

    def __init__(
        self,
        eps: float | None = None,
        *,
        norm: str = "linf",
        targeted: bool = False,
        version: str = "standard",
        attacks: list[str] | None = None,
        seed: int = 0,
    ):
        self.norm = norm
        super().__init__(eps, targeted=targeted, seed=seed)
        self.version, self.attacks, self.seed = version, attacks, seed

    def generate(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, keys: Tensor | None) -> Tensor:
        from pyautoattack import AutoAttack

        logging.getLogger("auto-attack").setLevel(logging.WARNING)

        def run(net: nn.Module, images: Tensor) -> Tensor:
            runner = AutoAttack(
                net,
                norm=self._NORM_NAMES[self.norm],
                eps=self.eps,
                version=self.version,
                attacks=self.attacks,
                seed=self.seed,
                device=x.device,
            )
            runner.verbose = False
            return runner.run_standard_evaluation(images, y, batch_size=len(images))[0]

        return in_float32(run, model, x)  # pyautoattack fills float32 buffers with the adversarials
