"""Attack specs as the notebooks and profiles name them (`AttackSpec`: a registry name, its eps and knobs), and the
labels that results carry (a mapping's keys, else name@eps)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field, field_validator, model_validator

from ..schema import Strict, one_of


class AttackSpec(Strict):
    """One attack as the notebooks name it: a registry name, its eps and the knobs it takes."""

    name: str
    eps: float | None = Field(default=None, gt=0)
    steps: int | None = Field(default=None, ge=1)
    stepsize: float | None = Field(default=None, gt=0)
    rel_stepsize: float | None = Field(default=None, gt=0)
    random_start: bool | None = None
    targeted: bool = False
    seed: int = Field(default=0, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_attack(cls, name: str) -> str:
        from .registry import list_attacks

        return one_of("attack", name, list_attacks())

    @model_validator(mode="after")
    def _targeted_supported(self) -> AttackSpec:
        from .registry import attack_info

        info = attack_info(self.name)
        if self.targeted and not info.targeted:
            raise ValueError(
                f"attack {self.name!r} has no targeted mode; targeted attacks: "
                + ", ".join(n for n in _targeted_names())
            )
        if info.kind == "fixed" and self.eps is None:
            raise ValueError(f"attack {self.name!r} is a fixed-eps attack and needs an eps > 0")
        return self


def _targeted_names() -> list[str]:
    from .registry import attack_info, list_attacks

    return [n for n in list_attacks() if attack_info(n).targeted]


def spec_label(spec: Any) -> str:
    """A short readable label: name plus eps, e.g. 'pgd_linf@0.3'."""
    from .registry import _spec_dict

    raw = _spec_dict(spec)
    return raw["name"] + (f"@{raw['eps']:g}" if raw.get("eps") is not None else "")


def labelled_specs(specs: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    """Attack specs by the label their results carry: a mapping's own keys (the YAML keys of a profile), else each
    spec's `spec_label`. Two specs of a sequence with one label would overwrite each other's results, so they are an
    error that names them."""
    if isinstance(specs, Mapping):
        return dict(specs)
    labels = [spec_label(spec) for spec in specs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(
            f"attack specs {repeated} appear more than once by name@eps, so their results would collide; "
            f"give the attacks as a mapping (label -> spec) to keep them apart"
        )
    return dict(zip(labels, specs))
