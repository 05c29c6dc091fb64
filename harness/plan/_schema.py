"""The experiment plan's schema (pydantic; YAML errors name file, line, field); cross-checks run on validation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from harness.base._errors import dotted, with_others
from harness.plan._checks import cross_check
from harness.plan._parts import NAME, Arm, DataSpec, Seed, Sweep


def _suite_name(name: str) -> str:
    """A plan's suite: the name of a suite folder under the suite roots ($TUNEGATE_SUITES, the shipped suites), or a
    path to a suite folder, absolute or relative (to the working directory, else the plan's folder: `load_plan`
    makes it absolute); never one with `..`, which would read a suite from outside both."""
    if ".." in Path(name).parts or ".." in name.split("/"):
        raise ValueError(
            f"'{name}' leaves its folder ('..'): give the name of a suite folder under the suite roots "
            "($TUNEGATE_SUITES or the shipped suites), or a path to one without '..'"
        )
    if re.fullmatch(NAME, name) or Path(name).is_absolute() or "/" in name:
        return name
    raise ValueError(
        f"'{name}' is not a suite name: give the name of a suite folder under the suite roots "
        "($TUNEGATE_SUITES or the shipped suites), or a path to one"
    )


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field(pattern=NAME, max_length=120)
    model: str = "smollm2-135m"
    data: DataSpec = Field(default_factory=DataSpec)
    arms: list[Arm] = Field(min_length=1)
    suites: list[Annotated[str, AfterValidator(_suite_name)]] = Field(min_length=1)
    gate: str | None = None
    sweep: Sweep | None = None
    memory_gib: float | None = Field(default=None, gt=0, le=1e6)  # GPU memory per device (default: measured)
    seed: Seed = 0

    @model_validator(mode="after")
    def cross_checks(self, info: ValidationInfo) -> Plan:
        if info.context and info.context.get("defer_cross_checks"):
            return self  # load_plan runs them itself, to point at the offending line
        problems = cross_check(self)
        if problems:
            loc, message = problems[0]
            raise ValueError(f"{dotted(loc)}: {with_others(message, [dotted(where) for where, _ in problems[1:]])}")
        return self
