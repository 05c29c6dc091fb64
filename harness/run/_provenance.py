"""Where a result came from: timestamps, library versions, git commit, device name."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from harness._nvml import visible_nvml_gpus_before_torch

LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "lm_eval", "ray")


def stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib.replace("_", "-"))
        except metadata.PackageNotFoundError:
            pass
    return out


def git_sha() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def device_name(device: str) -> str:
    if device == "cuda":
        nvml = visible_nvml_gpus_before_torch()
        if nvml:
            return next(iter(nvml.values())).name
        import torch

        return torch.cuda.get_device_name(torch.cuda.current_device())
    return f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} cores)"
