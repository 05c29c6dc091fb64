"""Experiment plans: the YAML schema, sweep expansion, consistency checks, and the training-memory estimate.

Names are imported on first use (PEP 562), so importing one light part does not load the heavy ones."""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness._lazy import lazy_getattr

if TYPE_CHECKING:
    from harness.plan._checks import (
        cross_check,
    )
    from harness.base._kinds import (
        ARM_KINDS,
        ArmKind,
        Baseline,
        Dora,
        Dpo,
        Full,
        Lora,
        NEEDS_TRAIN_DATA,
        Prompt,
        Qlora,
        Rag,
        SFT,
        SftKind,
        TRAINED,
        TrainedKind,
        UNSHAPED,
        UNTRAINED,
        UntrainedKind,
    )
    from harness.plan._load import (
        arm_line,
        load_plan,
        plan_hash,
    )
    from harness.plan._memory import (
        ALLOCATOR_SLACK,
        ALL_LINEAR,
        Attention,
        CUDA_CONTEXT_GIB,
        DTYPE_BYTES,
        DType,
        GIB,
        LOGITS_BYTES_PER_VOCAB,
        MemoryEstimate,
        Method,
        ModelDims,
        NF4_BYTES_PER_PARAM,
        REFERENCE_SHAPES,
        dims_for_params,
        estimate_training_memory,
    )
    from harness.plan._parts import (
        Arm,
        ArmBase,
        BaselineArm,
        DataSpec,
        DoraArm,
        DpoArm,
        FullArm,
        Loc,
        LoraArm,
        NAME,
        PromptArm,
        QloraArm,
        RagArm,
        Range,
        Sweep,
        TrainArm,
    )
    from harness.plan._schema import (
        Plan,
    )
    from harness.plan._sweep import (
        expand,
        trials,
    )

_EXPORTS = {
    "ALLOCATOR_SLACK": "harness.plan._memory",
    "ALL_LINEAR": "harness.plan._memory",
    "ARM_KINDS": "harness.base._kinds",
    "Arm": "harness.plan._parts",
    "ArmBase": "harness.plan._parts",
    "ArmKind": "harness.base._kinds",
    "Attention": "harness.plan._memory",
    "Baseline": "harness.base._kinds",
    "BaselineArm": "harness.plan._parts",
    "CUDA_CONTEXT_GIB": "harness.plan._memory",
    "DTYPE_BYTES": "harness.plan._memory",
    "DType": "harness.plan._memory",
    "DataSpec": "harness.plan._parts",
    "Dora": "harness.base._kinds",
    "DoraArm": "harness.plan._parts",
    "Dpo": "harness.base._kinds",
    "DpoArm": "harness.plan._parts",
    "Full": "harness.base._kinds",
    "FullArm": "harness.plan._parts",
    "GIB": "harness.plan._memory",
    "LOGITS_BYTES_PER_VOCAB": "harness.plan._memory",
    "Loc": "harness.plan._parts",
    "Lora": "harness.base._kinds",
    "LoraArm": "harness.plan._parts",
    "MemoryEstimate": "harness.plan._memory",
    "Method": "harness.plan._memory",
    "ModelDims": "harness.plan._memory",
    "NAME": "harness.plan._parts",
    "NEEDS_TRAIN_DATA": "harness.base._kinds",
    "NF4_BYTES_PER_PARAM": "harness.plan._memory",
    "Plan": "harness.plan._schema",
    "Prompt": "harness.base._kinds",
    "PromptArm": "harness.plan._parts",
    "Qlora": "harness.base._kinds",
    "QloraArm": "harness.plan._parts",
    "REFERENCE_SHAPES": "harness.plan._memory",
    "Rag": "harness.base._kinds",
    "RagArm": "harness.plan._parts",
    "Range": "harness.plan._parts",
    "SFT": "harness.base._kinds",
    "SftKind": "harness.base._kinds",
    "Sweep": "harness.plan._parts",
    "TRAINED": "harness.base._kinds",
    "TrainArm": "harness.plan._parts",
    "TrainedKind": "harness.base._kinds",
    "UNSHAPED": "harness.base._kinds",
    "UNTRAINED": "harness.base._kinds",
    "UntrainedKind": "harness.base._kinds",
    "arm_line": "harness.plan._load",
    "cross_check": "harness.plan._checks",
    "dims_for_params": "harness.plan._memory",
    "estimate_training_memory": "harness.plan._memory",
    "expand": "harness.plan._sweep",
    "load_plan": "harness.plan._load",
    "plan_hash": "harness.plan._load",
    "trials": "harness.plan._sweep",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
