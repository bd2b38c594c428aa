"""The attack registry: names used in parameter files -> attack factories, with norm and kind."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import Tensor, nn

from .base import Attack, AttackResult, Kind
from .spec import AttackSpec


@dataclass(frozen=True)
class AttackInfo:
    name: str
    factory: Callable[..., Attack]
    norm: str
    kind: str
    targeted: bool
    backend: str
    summary: str


ATTACKS: dict[str, AttackInfo] = {}
SPEC_FIELDS = ("eps", "steps", "stepsize", "rel_stepsize", "random_start", "seed")


def register_attack(
    name: str, factory: Callable[..., Attack], *, norm: str, kind: str, targeted: bool, backend: str, summary: str
) -> None:
    if name in ATTACKS:
        raise ValueError(f"attack {name!r} is registered twice")
    ATTACKS[name] = AttackInfo(name, factory, norm, kind, targeted, backend, summary)


def list_attacks() -> list[str]:
    _ensure_registered()
    return sorted(ATTACKS)


def attack_info(name: str) -> AttackInfo:
    _ensure_registered()
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; allowed: {', '.join(sorted(ATTACKS))}")
    return ATTACKS[name]


def _spec_dict(spec: Any) -> dict[str, Any]:
    """The spec as a plain dict; a mapping's keys must be AttackSpec fields (a misspelled key is an error; the values
    are checked by the attack itself), and it is returned as given, so the cache keys built from it do not change."""
    if isinstance(spec, str):
        return {"name": spec}
    if hasattr(spec, "model_dump"):
        return spec.model_dump()
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(AttackSpec.model_fields))
        if unknown:
            raise ValueError(
                f"attack spec {dict(spec)!r}: unknown key(s) {', '.join(map(repr, unknown))}; allowed keys: "
                f"{', '.join(AttackSpec.model_fields)}"
            )
        return dict(spec)
    raise TypeError(f"attack spec must be a name, a mapping or an AttackSpec, got {type(spec).__name__}")


def with_overrides(spec: Any, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`spec` with keyword overrides: AttackSpec fields (eps, steps, ...) replace the spec's, anything else is an
    option of the attack (e.g. update="adam")."""
    raw = _spec_dict(spec)
    if not overrides:
        return raw
    fields = {k: v for k, v in overrides.items() if k in AttackSpec.model_fields and k != "options"}
    options = {
        **(raw.get("options") or {}),
        **overrides.get("options", {}),
        **{k: v for k, v in overrides.items() if k not in AttackSpec.model_fields},
    }
    return _spec_dict({**raw, **fields, **({"options": options} if options else {})})


def create_attack(spec: Any) -> Attack:
    """Build an attack from an AttackSpec, a mapping with the same keys, or a bare name."""
    raw = _spec_dict(spec)
    info = attack_info(raw.get("name", ""))
    kwargs = {k: raw[k] for k in SPEC_FIELDS if raw.get(k) is not None}
    kwargs.update(raw.get("options") or {})
    if raw.get("targeted"):
        kwargs["targeted"] = True
    try:
        return info.factory(**kwargs)
    except TypeError as error:
        raise ValueError(f"attack {info.name!r}: {error}") from None


def run_attack(
    spec: Any,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    target: Tensor | None = None,
    *,
    batch_size: int = 256,
    **overrides: Any,
) -> AttackResult:
    """The one call: build the attack named by `spec` (a name, a mapping or an AttackSpec; keyword overrides as in
    `with_overrides`, e.g. run_attack("pgd_linf", model, x, y, eps=0.3)) and run it on (x, y)."""
    return create_attack(with_overrides(spec, overrides))(model, x, y, target, batch_size=batch_size)


def _ensure_registered() -> None:
    if not ATTACKS:
        _register_builtin()


def _register_builtin() -> None:
    import foolbox.attacks as fa

    from .backends import AutoAttackAttack, FoolboxAttack, TrustRegionAttack
    from .confidence import ConfidenceAttack
    from .minimal_fgsm import MinimalFGSM
    from .pgd import PGD
    from .spsa import SPSA

    def fb(
        name: str,
        cls: type,
        norm: str,
        kind: Kind,
        summary: str,
        *,
        targeted: bool = True,
        only_correct: bool = False,
        per_sample: bool = True,
        **defaults: Any,
    ) -> None:
        """per_sample=False: random draws shared by the batch (noise), or starts taken from other batch images."""
        factory = partial(
            FoolboxAttack,
            cls,
            norm,
            kind,
            targeted_ok=targeted,
            only_correct=only_correct,
            per_sample=per_sample,
            defaults=defaults,
        )
        register_attack(name, factory, norm=norm, kind=kind, targeted=targeted, backend="foolbox", summary=summary)

    for norm in ("linf", "l2", "l1"):
        register_attack(
            f"pgd_{norm}",
            partial(PGD, norm=norm),
            norm=norm,
            kind="fixed",
            targeted=True,
            backend="native",
            summary=f"PGD in {norm}, random start; options update=steepest|adam, loss=ce|margin",
        )
    fb("fgsm", fa.FGSM, "linf", "fixed", "fast gradient sign method (Goodfellow et al. 2015)", targeted=False)
    register_attack(
        "fgsm_minimal",
        MinimalFGSM,
        norm="linf",
        kind="fixed",  # takes an eps (the top of its grid), like a fixed-eps attack; its results lie inside it
        targeted=False,
        backend="native",
        summary="foolbox 2's FGSM: smallest eps of a grid up to eps that fools (options: steps = grid size, 1000)",
    )
    fb("fgm_l2", fa.L2FastGradientAttack, "l2", "fixed", "fast gradient method in L2", targeted=False)
    fb("bim", fa.LinfBasicIterativeAttack, "linf", "fixed", "basic iterative method / IFGSM (Kurakin et al. 2017)")
    fb("ifgsm", fa.LinfBasicIterativeAttack, "linf", "fixed", "alias of bim")
    fb("fb_pgd_linf", fa.LinfPGD, "linf", "fixed", "foolbox's own Linf PGD (reference for the native engine)")
    fb("fb_pgd_l2", fa.L2PGD, "l2", "fixed", "foolbox's own L2 PGD")
    fb(
        "deepfool_l2",
        fa.L2DeepFoolAttack,
        "l2",
        "minimal",
        "DeepFool L2 (Moosavi-Dezfooli et al. 2016)",
        targeted=False,
    )
    fb("deepfool_linf", fa.LinfDeepFoolAttack, "linf", "minimal", "DeepFool Linf", targeted=False)
    fb(
        "cw_l2",
        fa.L2CarliniWagnerAttack,
        "l2",
        "minimal",
        "Carlini & Wagner L2 (abort_early off: batch-independent)",
        steps=1000,
        abort_early=False,
    )
    fb(
        "uniform_noise",
        fa.L2AdditiveUniformNoiseAttack,
        "l2",
        "fixed",
        "additive uniform noise with L2 norm eps",
        targeted=False,
        per_sample=False,
    )
    fb(
        "uniform_noise_linf",
        fa.LinfAdditiveUniformNoiseAttack,
        "linf",
        "fixed",
        "additive uniform noise with Linf norm eps",
        targeted=False,
        per_sample=False,
    )
    fb(
        "gaussian_noise",
        fa.L2AdditiveGaussianNoiseAttack,
        "l2",
        "fixed",
        "additive Gaussian noise with L2 norm eps",
        targeted=False,
        per_sample=False,
    )
    fb(
        "repeated_gaussian_noise",
        fa.L2RepeatedAdditiveGaussianNoiseAttack,
        "l2",
        "fixed",
        "repeated additive Gaussian noise (best of `repeats` draws)",
        targeted=False,
        per_sample=False,
    )
    fb(
        "salt_and_pepper",
        fa.SaltAndPepperNoiseAttack,
        "l2",
        "minimal",
        "salt-and-pepper noise, minimal L2",
        targeted=False,
        per_sample=False,
    )
    fb(
        "salt_and_pepper_l1",
        fa.SaltAndPepperNoiseAttack,
        "l1",
        "minimal",
        "salt-and-pepper noise judged in L1 (MAT's L1 group: broken only within the L1 radius)",
        targeted=False,
        per_sample=False,
    )
    fb("sparse_l1_descent", fa.SparseL1DescentAttack, "l1", "fixed", "sparse L1 descent / SLIDE (Tramer & Boneh 2019)")
    fb(
        "boundary",
        fa.BoundaryAttack,
        "l2",
        "minimal",
        "decision-based boundary attack (Brendel et al. 2018)",
        targeted=False,
        only_correct=True,
        per_sample=False,
        steps=5000,
    )
    fb(
        "hopskipjump",
        fa.HopSkipJumpAttack,
        "l2",
        "minimal",
        "HopSkipJump L2 (Chen et al. 2020)",
        targeted=False,
        only_correct=True,
        per_sample=False,
    )
    fb(
        "hopskipjump_linf",
        fa.HopSkipJumpAttack,
        "linf",
        "minimal",
        "HopSkipJump Linf",
        targeted=False,
        only_correct=True,
        per_sample=False,
        constraint="linf",
    )
    fb(
        "spatial",
        fa.SpatialAttack,
        "none",
        "minimal",
        "worst rotation + translation on a grid (Engstrom et al. 2019)",
        targeted=False,
    )
    register_attack(
        "confidence_l2",
        ConfidenceAttack,
        norm="l2",
        kind="minimal",
        targeted=True,
        backend="native",
        summary="Adversary Critic's high-confidence L2 attack (eq. 7): closest target, own confidence",
    )
    register_attack(
        "spsa",
        SPSA,
        norm="linf",
        kind="fixed",
        targeted=True,
        backend="native",
        summary="SPSA gradient-free Linf (Uesato et al. 2018); option early_stop_loss_thresh (REGroup: 0)",
    )
    for norm in ("l2", "linf"):
        register_attack(
            f"trust_region_{norm}",
            partial(TrustRegionAttack, norm=norm),
            norm=norm,
            kind="minimal",
            targeted=False,
            backend="adv-lib",
            summary=f"trust region attack in {norm} (Yao et al. 2019)",
        )
    for norm in ("linf", "l2", "l1"):
        register_attack(
            f"autoattack_{norm}",
            partial(AutoAttackAttack, norm=norm),
            norm=norm,
            kind="fixed",
            targeted=False,
            backend="pyautoattack",
            summary=f"AutoAttack standard, {norm}",
        )
