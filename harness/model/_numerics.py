"""Evaluation numerics: the mode a score is computed under, and the record of what its bits depend on.

The mode: "invariant" (the default; `harness.model._invariant`, every item's result bit-identical whatever shares
its batch) or "fast" (`harness.model._generate`, the batched path). `tunegate run|eval --eval-numerics` or
$TUNEGATE_EVAL_NUMERICS choose it; this module imports no torch, so the CLI checks the choice cheaply.

The record (`record`) is stored with every suite result, so a gate can tell when a baseline and a candidate were
scored under different numerics (another dtype, engine, library version or GPU model gives other bits even in the
invariant mode). Every value is a string; "none" where a component is absent (no CUDA, no PEFT)."""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from importlib import metadata
from typing import Any

from harness.base._errors import UserError

MODES = ("invariant", "fast")
ENV_MODE = "TUNEGATE_EVAL_NUMERICS"
_MODE: contextvars.ContextVar[str | None] = contextvars.ContextVar("tunegate_eval_numerics", default=None)


def resolve_mode(mode: str | None = None, field: str = "--eval-numerics") -> str:
    """The numerics mode: `mode` if given, else the one `using_mode` set (an evaluation in progress: its judge
    generates under the same mode), else $TUNEGATE_EVAL_NUMERICS, else "invariant". A bad value is a UserError
    naming `field` (or the environment variable)."""
    chosen = mode if mode is not None else _MODE.get() or os.environ.get(ENV_MODE) or "invariant"
    if chosen not in MODES:
        raise UserError(
            f"'{chosen}' is not an eval numerics mode: use invariant or fast",
            field=field if mode is not None else ENV_MODE,
        )
    return chosen


@contextlib.contextmanager
def using_mode(mode: str) -> Iterator[None]:
    """Make `mode` the one `resolve_mode()` answers in this context (the judge of an evaluation reads it)."""
    token = _MODE.set(mode)
    try:
        yield
    finally:
        _MODE.reset(token)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def _sdpa_backends() -> str:
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    cuda = torch.backends.cuda
    flags = {
        "flash": cuda.flash_sdp_enabled(),
        "mem_efficient": cuda.mem_efficient_sdp_enabled(),
        "math": cuda.math_sdp_enabled(),
        "cudnn": cuda.cudnn_sdp_enabled(),
    }
    return ",".join(name for name, on in flags.items() if on) or "none"


def record(model: Any, mode: str, engine: str, attention: str | None = None) -> dict[str, str]:
    """The numerics a score of `model` was computed under: `mode` (invariant | fast), `engine` (what ran it,
    e.g. "fixed-shape lanes=32 bucket=64 span=256 head_chunk=64 graphs=on" or "hf-generate") and `attention`
    (the attention implementation it ran with; default: the model's configured one)."""
    import torch

    from harness.model import _parts as parts  # torch

    causal_lm = parts.unwrap(model)
    device = parts.model_device(model)
    dtype = next((p.dtype for p in causal_lm.parameters() if p.is_floating_point()), None)
    config = getattr(causal_lm, "config", None)
    liger = any(type(m).__module__.startswith("liger_kernel") for m in causal_lm.modules())
    return {
        "mode": mode,
        "engine": engine,
        "dtype": str(dtype).removeprefix("torch.") if dtype is not None else "none",
        "device": device.type,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "cudnn": str(torch.backends.cudnn.version()) if device.type == "cuda" else "none",
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "attention": attention or str(getattr(config, "_attn_implementation", None) or "none"),
        "sdpa_backends": _sdpa_backends() if device.type == "cuda" else "cpu",
        "liger": "on" if liger else "off",
    }
