"""The GPUs as NVML sees them, without importing torch or starting CUDA (both take seconds in a process that only
wants to know which GPUs exist, their names and how much memory they have free).

NVML (`pynvml`, from the gpu extra's nvidia-ml-py) is started once per process, on first use. Every answer is
None where NVML cannot be used (not installed, no driver, an error) or where the GPUs CUDA would see cannot be
told safely (MIG, an enumeration order other than the PCI bus order): the caller then asks torch, as before.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NvmlGpu:
    index: int  # NVML's index: the PCI bus order
    uuid: str  # 'GPU-...', as CUDA_VISIBLE_DEVICES may name it
    name: str
    total: int  # bytes, as CUDA counts them: without what the driver reserves
    free: int  # bytes
    mig: bool = False  # MIG mode on: CUDA would see its instances, not this GPU


@functools.cache
def _nvml() -> Any | None:
    """The initialised pynvml module, or None; tried once per process."""
    try:
        import pynvml  # heavy: loads the driver's library, and is there only with the gpu extra
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError, OSError):  # no driver (NVMLError_LibraryNotFound), a driver/library mismatch, ...
        return None
    return pynvml


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value  # older pynvml returns bytes


def _memory(nvml: Any, handle: Any) -> tuple[int, int]:
    """(total, free) bytes. NVML's total is the physical memory; CUDA's (torch's total_memory) leaves out what the
    driver reserves, which only the v2 query tells; the usable total is the physical memory less that reserve."""
    try:
        memory = nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
        return int(memory.total - memory.reserved), int(memory.free)
    except nvml.NVMLError:  # a driver older than the v2 query
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        return int(memory.total), int(memory.free)


def nvml_gpus() -> list[NvmlGpu] | None:
    """Every GPU on the machine, in NVML's order, with its free memory now; None when NVML is unusable."""
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            total, free = _memory(nvml, handle)
            try:
                mig = nvml.nvmlDeviceGetMigMode(handle)[0] == nvml.NVML_DEVICE_MIG_ENABLE
            except nvml.NVMLError:  # NVMLError_NotSupported: a GPU without MIG
                mig = False
            gpus.append(
                NvmlGpu(
                    index,
                    _text(nvml.nvmlDeviceGetUUID(handle)),
                    _text(nvml.nvmlDeviceGetName(handle)),
                    total,
                    free,
                    mig,
                )
            )
    except (nvml.NVMLError, OSError):
        return None
    return gpus


def select_visible(
    gpus: list[NvmlGpu], cuda_visible_devices: str | None, device_order: str | None
) -> dict[str, NvmlGpu] | None:
    """The GPUs CUDA would see, in its order, keyed by their ids as CUDA_VISIBLE_DEVICES spells them ('0'..'n-1'
    when it is unset); None when that cannot be told safely from NVML.

    CUDA's rules (as torch.cuda._parse_visible_devices mimics them): the first entry decides whether the list holds
    indices or UUIDs ('GPU-' and a unique prefix of one); the first entry that is not of that kind or names no GPU
    ends the list; a GPU named twice leaves none. NVML counts GPUs in PCI bus order, CUDA by default fastest
    first: an index means the same GPU in both only with CUDA_DEVICE_ORDER=PCI_BUS_ID (which bench/gpu_env.sh
    sets) or a single GPU, so indices are not mapped otherwise. MIG instances are not mapped at all.
    """
    if any(g.mig for g in gpus):
        return None
    if cuda_visible_devices is None:
        entries = [str(g.index) for g in gpus]
    else:
        entries = [e.strip() for e in cuda_visible_devices.split(",")] if cuda_visible_devices.strip() else []
    by_uuid = bool(entries) and entries[0].startswith("GPU-")
    if entries and entries[0].startswith("MIG-"):
        return None
    if entries and not by_uuid and len(gpus) > 1 and device_order != "PCI_BUS_ID":
        return None
    out: dict[str, NvmlGpu] = {}
    for entry in entries:
        if by_uuid:
            found = [g for g in gpus if entry.startswith("GPU-") and g.uuid.startswith(entry)]
        elif entry.isdigit():
            found = [g for g in gpus if g.index == int(entry)]
        else:
            return None  # CUDA reads '1x' as 1 and '' or 'x' as the end: leave such lists to torch
        if len(found) != 1:
            break
        if found[0] in out.values():
            return {}
        out[entry] = found[0]
    return out


def visible_nvml_gpus() -> dict[str, NvmlGpu] | None:
    """`select_visible` for this process's NVML GPUs and environment; None means: ask torch."""
    gpus = nvml_gpus()
    if gpus is None:
        return None
    return select_visible(gpus, os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("CUDA_DEVICE_ORDER"))


def visible_nvml_gpus_before_torch() -> dict[str, NvmlGpu] | None:
    """`visible_nvml_gpus`, but None once this process has imported torch: torch then answers, as the CUDA this
    process will use sees it."""
    return None if "torch" in sys.modules else visible_nvml_gpus()
