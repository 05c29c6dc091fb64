"""Running a plan: preflight, one trial as a unit of work, devices, executors and the driver.

Names are imported on first use (PEP 562), so importing one light part does not load the heavy ones."""
from __future__ import annotations

from typing import TYPE_CHECKING

from harness._lazy import lazy_getattr

if TYPE_CHECKING:
    from harness.run._capacity import (
        CONTEXT_GIB,
        HEADROOM,
        MAX_AUTO_TRIALS_PER_GPU,
        auto_trials_per_gpu,
        free_memory_gib,
        parse_spare_workers,
        parse_trials_per_gpu,
        spare_workers,
    )
    from harness.run._devices import (
        DevicePool,
        parse_gpus,
        plan_devices,
        visible_gpus,
    )
    from harness.run._executors import (
        WORKER_ENV_PREFIXES,
        Done,
        Executor,
        PoolExecutor,
        RayExecutor,
        SerialExecutor,
        free_port,
        launch_worker,
        main,
        outcome_from_store,
        ray_gpus,
        run_here,
        worker_command,
        worker_env,
    )
    from harness.run._preflight import (
        GIB,
        Checked,
        check_gpus_per_trial,
        dry_run,
        gpu_capacity_gib,
        memory_estimate,
        model_shape,
        preflight,
    )
    from harness.run._provenance import (
        LIBRARIES,
        device_name,
        git_sha,
        stamp,
        versions,
    )
    from harness.run._runner import (
        DEFAULT_TRIAL_GIB,
        EXECUTORS,
        Runner,
        RunOutcome,
        absolute_store_url,
        expected_steps,
        longest_first,
        make_executor,
        phases,
    )
    from harness.run._shared_eval import (
        score_together,
    )
    from harness.run._trial import (
        EXECUTOR_FILES,
        OWNER_MARK,
        out_of_memory,
        run_trial,
    )
    from harness.run._units import (
        SHAREABLE,
        TrialResult,
        TrialUnit,
        can_share,
    )
    from harness.run._worker_loop import (
        serve,
    )
    from harness.run._workers import (
        MIN_SHARED_GROUP,
        Worker,
        WorkerExecutor,
        stop_all,
    )

_EXPORTS = {
    "CONTEXT_GIB": "harness.run._capacity",
    "Checked": "harness.run._preflight",
    "DEFAULT_TRIAL_GIB": "harness.run._runner",
    "DevicePool": "harness.run._devices",
    "Done": "harness.run._executors",
    "EXECUTORS": "harness.run._runner",
    "EXECUTOR_FILES": "harness.run._trial",
    "Executor": "harness.run._executors",
    "GIB": "harness.run._preflight",
    "HEADROOM": "harness.run._capacity",
    "LIBRARIES": "harness.run._provenance",
    "MAX_AUTO_TRIALS_PER_GPU": "harness.run._capacity",
    "MIN_SHARED_GROUP": "harness.run._workers",
    "OWNER_MARK": "harness.run._trial",
    "PoolExecutor": "harness.run._executors",
    "RayExecutor": "harness.run._executors",
    "ray_gpus": "harness.run._executors",
    "RunOutcome": "harness.run._runner",
    "Runner": "harness.run._runner",
    "SHAREABLE": "harness.run._units",
    "SerialExecutor": "harness.run._executors",
    "TrialResult": "harness.run._units",
    "TrialUnit": "harness.run._units",
    "WORKER_ENV_PREFIXES": "harness.run._executors",
    "Worker": "harness.run._workers",
    "WorkerExecutor": "harness.run._workers",
    "absolute_store_url": "harness.run._runner",
    "auto_trials_per_gpu": "harness.run._capacity",
    "can_share": "harness.run._units",
    "check_gpus_per_trial": "harness.run._preflight",
    "device_name": "harness.run._provenance",
    "dry_run": "harness.run._preflight",
    "expected_steps": "harness.run._runner",
    "free_memory_gib": "harness.run._capacity",
    "free_port": "harness.run._executors",
    "git_sha": "harness.run._provenance",
    "gpu_capacity_gib": "harness.run._preflight",
    "launch_worker": "harness.run._executors",
    "longest_first": "harness.run._runner",
    "main": "harness.run._executors",
    "make_executor": "harness.run._runner",
    "memory_estimate": "harness.run._preflight",
    "model_shape": "harness.run._preflight",
    "out_of_memory": "harness.run._trial",
    "outcome_from_store": "harness.run._executors",
    "parse_gpus": "harness.run._devices",
    "parse_spare_workers": "harness.run._capacity",
    "parse_trials_per_gpu": "harness.run._capacity",
    "phases": "harness.run._runner",
    "plan_devices": "harness.run._devices",
    "preflight": "harness.run._preflight",
    "run_here": "harness.run._executors",
    "run_trial": "harness.run._trial",
    "score_together": "harness.run._shared_eval",
    "serve": "harness.run._worker_loop",
    "spare_workers": "harness.run._capacity",
    "stamp": "harness.run._provenance",
    "stop_all": "harness.run._workers",
    "versions": "harness.run._provenance",
    "visible_gpus": "harness.run._devices",
    "worker_command": "harness.run._executors",
    "worker_env": "harness.run._executors",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
