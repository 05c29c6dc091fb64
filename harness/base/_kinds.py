"""The arm kinds a plan may name, and the groups they fall in: the one home of this vocabulary.

Each kind is spelled once, as a one-value Literal (the arm classes' discriminator type); the groups are
Literals of those, and the tuples are read off them. A leaf module: it imports nothing from harness."""

from __future__ import annotations

from typing import Literal, get_args

Baseline = Literal["baseline"]  # the base model as it is
Prompt = Literal["prompt"]  # a system prompt and k worked examples
Rag = Literal["rag"]  # retrieved examples or passages in the prompt
Lora = Literal["lora"]
Qlora = Literal["qlora"]  # LoRA on a 4-bit base
Dora = Literal["dora"]
Full = Literal["full"]  # every weight trained
Dpo = Literal["dpo"]  # preference optimisation, from the base or an SFT arm

SftKind = Literal[Lora, Qlora, Dora, Full]  # supervised fine-tuning: what DPO may continue from
TrainedKind = Literal[SftKind, Dpo]  # arms that train weights
UntrainedKind = Literal[Baseline, Prompt, Rag]  # arms that score the base weights (shaping the input)
ArmKind = Literal[UntrainedKind, TrainedKind]

ARM_KINDS: tuple[str, ...] = get_args(ArmKind)
SFT: tuple[str, ...] = get_args(SftKind)
TRAINED: tuple[str, ...] = get_args(TrainedKind)
UNTRAINED: tuple[str, ...] = get_args(UntrainedKind)
NEEDS_TRAIN_DATA: tuple[str, ...] = get_args(Literal[Prompt, Rag, SftKind])  # shots, retrieval or SFT examples
UNSHAPED: tuple[str, ...] = get_args(Baseline)  # arms that score the base model exactly as it is
