"""The pydantic base of every parameter block (attack specs and notebook parameters alike): unknown keys are errors and
values are checked on assignment."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for every parameter block: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def one_of(kind: str, name: str, allowed: Sequence[str]) -> str:
    """`name` if it is among `allowed`, else a ValueError naming it and the allowed ones (for registry names)."""
    if name not in allowed:
        raise ValueError(f"unknown {kind} {name!r}; allowed: {', '.join(allowed)}")
    return name
