"""torch.profiler over a few training steps: where a step's time goes, on the host and on the device.

`TUNEGATE_PROFILE=FIRST:COUNT` in a trial's environment profiles optimizer steps FIRST .. FIRST+COUNT-1 of its
training and writes `profile.json` (`profile-rank{N}.json` per data-parallel rank) into the trial's folder: the
wall time per step, the device's busy time per step and its share of the wall (kernels, NCCL collectives apart),
the top ops by device and by host time, kernel launches and host-device synchronisations per step. The training
bench's `profile` section reads the same table. The profiled steps run slower than the others (the profiler's
own cost), so measure throughput with it off.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from harness.base._errors import UserError

PROFILE_ENV = "TUNEGATE_PROFILE"
SYNC_EVENTS = (
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
    "aten::_local_scalar_dense",
    "aten::nonzero",
    "Memcpy DtoH",
)


def profile_steps(text: str | None = None) -> tuple[int, int] | None:
    """(first step, steps) from `TUNEGATE_PROFILE` (or `text`): 'FIRST:COUNT', both whole numbers, COUNT >= 1."""
    text = os.environ.get(PROFILE_ENV) if text is None else text
    if not text:
        return None
    first, _, count = text.partition(":")
    if not (first.strip().isdigit() and count.strip().isdigit() and int(count) >= 1):
        raise UserError(
            f"'{text}' is not FIRST:COUNT (say 10:5: profile five optimizer steps from step 10)", field=PROFILE_ENV
        )
    return int(first), int(count)


def step_profiler(first_step: int, steps: int, device: str) -> Any:
    """A TrainerCallback that records torch.profiler over steps [first_step, first_step + steps) and keeps their
    table (`top_ops`, plus the wall time per step and the device's busy share of it) as `.table`."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    class StepProfiler(TrainerCallback):
        def __init__(self) -> None:
            self.prof: Any = None
            self.table: dict[str, Any] | None = None
            self.started = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == first_step and self.prof is None:
                if device == "cuda":
                    torch.cuda.synchronize()
                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
                self.prof = profile(activities=activities, record_shapes=False)
                self.prof.__enter__()
                self.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.prof is not None and self.table is None and state.global_step >= first_step + steps:
                self.finish()

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.prof is not None and self.table is None:  # training ended inside the window
                self.finish(max(1, state.global_step - first_step))

        def finish(self, done: int = steps) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
            wall_ms = (time.perf_counter() - self.started) * 1000 / done
            self.prof.__exit__(None, None, None)
            self.table = top_ops(self.prof, device, done) | {"first_step": first_step, "wall_ms_per_step": wall_ms}
            if device == "cuda":
                self.table["device_busy_share"] = self.table["kernel_ms_per_step"] / wall_ms

    return StepProfiler()


def top_ops(prof: Any, device: str, steps: int, limit: int = 25) -> dict[str, Any]:
    """The top-`limit` ops by self device time (CPU time on a CPU) per step and the total; on a GPU also the top
    ops by self CPU time, the NCCL kernels' time, the kernel launches and host-device synchronisations per step."""

    def attr(evt: Any, *names: str) -> float:
        for n in names:
            if hasattr(evt, n):
                return float(getattr(evt, n))
        return 0.0

    def table(events: list[Any], key: tuple[str, ...]) -> list[dict[str, Any]]:
        total = sum(attr(e, *key) for e in events)
        rows = sorted(events, key=lambda e: attr(e, *key), reverse=True)[:limit]
        return [
            {
                "name": e.key,
                "calls_per_step": e.count / steps,
                "self_ms_per_step": attr(e, *key) / 1000 / steps,
                "share": attr(e, *key) / total if total else 0.0,
                "self_cpu_ms_per_step": attr(e, "self_cpu_time_total") / 1000 / steps,
            }
            for e in rows
        ]

    events = list(prof.key_averages())
    key = ("self_device_time_total", "self_cuda_time_total") if device == "cuda" else ("self_cpu_time_total",)
    total = sum(attr(e, *key) for e in events)
    out: dict[str, Any] = {
        "sorted_by": key[0],
        "steps": steps,
        "total_ms_per_step": total / 1000 / steps,
        "ops": table(events, key),
    }
    if device == "cuda":
        # kernels only: a record_function's range also shows on the device's timeline (DDP's forward, NCCL's
        # all_reduce), over kernels counted already
        kernels = [
            e
            for e in events
            if "CUDA" in str(getattr(e, "device_type", "")) and not getattr(e, "is_user_annotation", False)
        ]
        out["kernel_ms_per_step"] = sum(attr(e, *key) for e in kernels) / 1000 / steps  # GPU busy time
        out["nccl_ms_per_step"] = sum(attr(e, *key) for e in kernels if "nccl" in e.key.lower()) / 1000 / steps
        out["kernels"] = table(kernels, key)
        out["cpu_ops"] = table(events, ("self_cpu_time_total",))
        out["cpu_total_ms_per_step"] = sum(attr(e, "self_cpu_time_total") for e in events) / 1000 / steps
        out["kernel_launches_per_step"] = (
            sum(
                e.count
                for e in events
                if e.key in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
            )
            / steps
        )
        out["graph_launches_per_step"] = sum(e.count for e in events if e.key == "cudaGraphLaunch") / steps
        out["syncs_per_step"] = {name: sum(e.count for e in events if name in e.key) / steps for name in SYNC_EVENTS}
    return out


def profile_file(out_dir: Path, rank: int, world: int) -> Path:
    return out_dir / ("profile.json" if world <= 1 else f"profile-rank{rank}.json")


def write_profile(profiler: Any, out_dir: Path, rank: int, world: int) -> Path | None:
    """Write the profiler's table to the trial's folder; None when the window was never reached."""
    if profiler is None or profiler.table is None:
        return None
    path = profile_file(out_dir, rank, world)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profiler.table | {"rank": rank, "world_size": world}, indent=1) + "\n")
    return path
