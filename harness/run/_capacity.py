"""How many trials a run puts on each GPU at once, and how many spare workers it keeps: the capacity rules of the
persistent workers (`harness.run._workers`), read from the free GPU memory without starting CUDA in the driver."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from harness._nvml import visible_nvml_gpus
from harness.base._errors import UserError

GIB = 1024**3
CONTEXT_GIB = 0.75  # what a CUDA context, the allocator's slack and the libraries take per process
HEADROOM = 0.85  # plan for this share of the free memory
MAX_AUTO_TRIALS_PER_GPU = 4  # beyond this, processes mostly queue for the same GPU


def trials_that_fit(free_gib: float, per_trial_gib: float) -> int:
    """How many trials fit in `free_gib` of a GPU: the memory estimator's per-trial figure plus a CUDA context
    each, with headroom."""
    return math.floor(free_gib * HEADROOM / max(per_trial_gib + CONTEXT_GIB, 0.1))


def auto_trials_per_gpu(free_gib: float, per_trial_gib: float, cpus: int, n_gpus: int) -> int:
    """How many trials to run at once on each GPU: as many as fit in the free memory (`trials_that_fit`), at most
    one per CPU core, at most MAX_AUTO_TRIALS_PER_GPU."""
    fit = trials_that_fit(free_gib, per_trial_gib)
    cores = max(1, cpus // max(n_gpus, 1))
    return max(1, min(fit, cores, MAX_AUTO_TRIALS_PER_GPU))


def spare_workers(
    devices: Sequence[str], trials_per_gpu: int, continuing: int, free_gib: float, per_trial_gib: float
) -> int:
    """Worker processes beyond the slots, for trials that continue another (DPO after SFT): one per such parent,
    at most one per GPU, and only where the free memory fits one trial more than the slots (`trials_that_fit`). A
    continuing trial is on the sweep's longest path: it starts as soon as its parent has trained, on a spare when
    every slot is busy, instead of waiting for a slot while the parent is scored. None on CPU workers (their slots
    are the cores). `--spare-workers auto` asks for this count; the default is none: where the slots already keep
    the GPU busy, one process more slows the other trials by more than the continuing trial gains (README,
    Multi-GPU)."""
    if not devices or continuing < 1:
        return 0
    return min(continuing, len(devices)) if trials_that_fit(free_gib, per_trial_gib) > trials_per_gpu else 0


def parse_trials_per_gpu(text: str | None) -> int | None:
    """`--trials-per-gpu`: 'auto' (None) or a positive count."""
    if text is None or text.strip().lower() == "auto":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise UserError(f"'{text}' is not a count: use auto or a whole number >= 1", field="--trials-per-gpu")
    return int(text)


def parse_spare_workers(text: str | None) -> int | None:
    """`--spare-workers`: 'auto' (None) or a count >= 0."""
    if text is None or text.strip().lower() == "auto":
        return None
    if not text.strip().isdigit():
        raise UserError(f"'{text}' is not a count: use auto or a whole number >= 0", field="--spare-workers")
    return int(text)


def free_memory_gib(devices: Sequence[str]) -> float:
    """The least free memory (GiB) over `devices` (ids as CUDA_VISIBLE_DEVICES spells them), or 0. NVML answers
    where it can (an index is taken as NVML's only under CUDA_DEVICE_ORDER=PCI_BUS_ID or on a one-GPU machine:
    `select_visible`), so the driver need not import torch and start CUDA."""
    nvml = visible_nvml_gpus()
    if nvml is not None:
        frees = [nvml[d].free / GIB for d in devices if d in nvml]
        return min(frees) if frees else 0.0
    import torch

    if not torch.cuda.is_available():
        return 0.0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    order = [d.strip() for d in visible.split(",")] if visible else [str(i) for i in range(torch.cuda.device_count())]
    frees = [torch.cuda.mem_get_info(order.index(d))[0] / GIB for d in devices if d in order]
    return min(frees) if frees else 0.0
