"""What the driver hands a worker and what it gets back: light dataclasses, so a run's driver process (which only
schedules) never imports torch, TRL or PEFT; the workers that run trials do (`_trial.py`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from harness.plan._parts import TRAINED

SHAREABLE = ("lora", "dpo")  # arm kinds whose adapter is plain LoRA on the plan's base (QLoRA's base differs)


@dataclass
class TrialJob:
    """One trial scheduled for a worker (a job): everything the worker needs, JSON-serialisable."""

    store_url: str
    run_id: int
    trial: str
    folder: str
    gpus_per_trial: int = 1
    device: str | None = None  # None: the worker picks (cuda when it sees a GPU, else cpu)
    defer_eval: bool = False  # train and save, mark 'trained'; a shared pass scores the adapter with others later
    device_batch: bool = True  # on a GPU, size generation batches from free memory (False: the suite's batch_size)
    eval_numerics: str = "invariant"  # invariant: every score bit-identical whatever shares its batch | fast
    after: str | None = None  # the trial this one continues (DPO from an SFT trial): it starts once that one trained

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrialJob:
        return cls(**json.loads(text))


@dataclass
class TrialResult:
    trial: str
    status: str  # finished | trained (evaluation deferred) | failed | worker (a non-zero rank of a DP trial)
    error: str | None = None


def can_share(arm: Any) -> bool:
    """Whether a trial of this arm can have its evaluation deferred to a shared pass (decided before training)."""
    return arm.type in SHAREABLE and arm.type in TRAINED and not getattr(arm, "use_dora", False)
