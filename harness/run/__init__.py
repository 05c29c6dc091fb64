"""Running a plan: preflight, one trial as a job, devices, executors and the driver.

Names are imported on first use (PEP 562), so importing one light part does not load the heavy ones."""

from __future__ import annotations

from harness._lazy import lazy_getattr

_EXPORTS = {
    "DevicePool": "harness.run._devices",
    "parse_gpus": "harness.run._devices",
    "PoolExecutor": "harness.run._executors",
    "RayExecutor": "harness.run._executors",
    "SerialExecutor": "harness.run._executors",
    "outcome_from_store": "harness.run._executors",
    "ray_gpus": "harness.run._executors",
    "worker_command": "harness.run._executors",
    "worker_env": "harness.run._executors",
    "check_gpus_per_trial": "harness.run._preflight",
    "memory_estimate": "harness.run._preflight",
    "model_shape": "harness.run._preflight",
    "versions": "harness.run._provenance",
    "Runner": "harness.run._runner",
    "longest_first": "harness.run._runner",
    "make_executor": "harness.run._runner",
    "phases": "harness.run._runner",
    "TrialResult": "harness.run._jobs",
    "TrialJob": "harness.run._jobs",
    "WorkerExecutor": "harness.run._workers",
    "auto_trials_per_gpu": "harness.run._workers",
    "parse_spare_workers": "harness.run._workers",
    "parse_trials_per_gpu": "harness.run._workers",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
