"""Which GPUs a run may use, and a pool that hands each trial its own."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from harness._nvml import visible_nvml_gpus
from harness.base._errors import UserError


def parse_gpus(text: str | None) -> list[str] | None:
    """`--gpus`: None (auto: every visible GPU), 'none'/'cpu' (no GPU), 'all', '4' (the first four) or '0,2,3'."""
    if text is None or text.strip().lower() in ("", "all", "auto"):
        return None
    text = text.strip().lower()
    if text in ("none", "cpu", "0-gpus"):
        return []
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise UserError(f"'{text}' is not a GPU list: use e.g. 0,1,3, a count like 4, all, or none", field="--gpus")
    if len(parts) == 1 and "," not in text:
        visible = visible_gpus()
        count = int(parts[0])
        if count > len(visible):
            raise UserError(f"asked for {count} GPUs but {len(visible)} are visible", field="--gpus")
        return visible[:count]
    return parts


def visible_gpus() -> list[str]:
    """The GPU ids this process may use, as CUDA_VISIBLE_DEVICES spells them (so workers can be pinned); NVML
    answers where it can, so the driver need not import torch and start CUDA."""
    nvml = visible_nvml_gpus()
    if nvml is not None:
        return list(nvml)
    import torch

    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and env.strip():
        return [d.strip() for d in env.split(",") if d.strip()][: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def plan_devices(gpus: list[str] | None) -> list[str]:
    return visible_gpus() if gpus is None else list(gpus)


class DevicePool:
    """Hands out sets of device ids, first come first served: a trial that needs k devices waits until
    k are free and every trial submitted before it has got its own."""

    def __init__(self, devices: Sequence[str]) -> None:
        if not devices:
            raise ValueError("a device pool needs at least one device")
        self.devices = list(devices)
        self.free = list(devices)
        self.cond = threading.Condition()
        self.next_ticket = 0
        self.serving = 0

    def ticket(self) -> int:
        with self.cond:
            self.next_ticket += 1
            return self.next_ticket - 1

    def acquire(self, k: int, ticket: int) -> list[str]:
        if not 1 <= k <= len(self.devices):
            raise ValueError(f"a trial needs {k} devices; the pool has {len(self.devices)}")
        with self.cond:
            self.cond.wait_for(lambda: self.serving == ticket and len(self.free) >= k)
            taken, self.free = self.free[:k], self.free[k:]
            self.serving += 1
            self.cond.notify_all()
            return taken

    def release(self, ids: Sequence[str]) -> None:
        with self.cond:
            self.free = sorted(self.free + list(ids), key=self.devices.index)
            self.cond.notify_all()
