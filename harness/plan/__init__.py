"""Experiment plans: the YAML schema, sweep expansion, consistency checks, and the training-memory estimate."""

from harness.plan._checks import cross_check
from harness.plan._load import load_plan
from harness.plan._memory import GIB, REFERENCE_SHAPES, Method, ModelDims, dims_for_params, estimate_training_memory
from harness.plan._parts import Arm, DoraArm, DpoArm, FullArm, LoraArm, PromptArm, QloraArm, RagArm, Range
from harness.plan._schema import Plan
from harness.plan._sweep import expand, trial_arms
