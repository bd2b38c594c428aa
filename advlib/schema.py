"""The pydantic base of every parameter block (attack specs and notebook parameters alike): unknown keys are errors and
values are checked on assignment."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for every parameter block: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
