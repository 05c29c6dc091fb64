"""What this machine can train on: GPUs (through torch, when installed), CPU cores, RAM, free disk."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
from pathlib import Path

import psutil
from pydantic import BaseModel, Field
from rich.console import Console

GIB = 1024**3


class GpuInfo(BaseModel):
    index: int
    name: str
    memory_gib: float


class HardwareReport(BaseModel):
    gpus: list[GpuInfo] = Field(default_factory=list)
    gpu_backend: str | None = None  # "cuda", or None when torch or CUDA is missing
    torch_version: str | None = None
    cpu_count: int
    ram_gib: float
    ram_available_gib: float
    disk_free_gib: float
    disk_path: str

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def min_vram_gib(self) -> float:
        return min((g.memory_gib for g in self.gpus), default=0.0)

    def summary(self) -> str:
        gpus = ", ".join(f"{g.name} ({g.memory_gib:.0f} GiB)" for g in self.gpus) or "no GPU"
        return (
            f"{gpus}; {self.cpu_count} CPU cores; {self.ram_gib:.0f} GiB RAM "
            f"({self.ram_available_gib:.0f} free); {self.disk_free_gib:.0f} GiB free disk at {self.disk_path}"
        )

    def render(self, console: Console) -> None:
        console.print(f"[bold]This machine:[/] {self.summary()}", highlight=False)


def _cuda_gpus() -> tuple[list[GpuInfo], str | None, str | None]:
    if importlib.util.find_spec("torch") is None:
        return [], None, None
    version = importlib.metadata.version("torch")
    if version.endswith("+cpu"):  # a CPU-only build: no need to pay for importing torch
        return [], None, version
    import torch

    if not torch.cuda.is_available():
        return [], None, torch.__version__
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append(GpuInfo(index=i, name=props.name, memory_gib=round(props.total_memory / GIB, 1)))
    return gpus, "cuda", torch.__version__


def probe_hardware(disk_path: str | Path = ".") -> HardwareReport:
    gpus, backend, torch_version = _cuda_gpus()
    vm = psutil.virtual_memory()
    path = Path(disk_path).resolve()
    while not path.exists():
        path = path.parent
    return HardwareReport(
        gpus=gpus,
        gpu_backend=backend,
        torch_version=torch_version,
        cpu_count=os.cpu_count() or psutil.cpu_count() or 1,
        ram_gib=round(vm.total / GIB, 1),
        ram_available_gib=round(vm.available / GIB, 1),
        disk_free_gib=round(shutil.disk_usage(path).free / GIB, 1),
        disk_path=str(path),
    )
