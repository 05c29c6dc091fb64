"""Where trials run. The executors share one interface, `run(jobs, done)` (and `close()`):

* `SerialExecutor` — one trial after another in this process (the CPU default);
* `WorkerExecutor` — persistent worker processes, several per GPU, that keep the base model loaded
                     (harness/run/_workers.py; the GPU default);
* `PoolExecutor`   — one fresh worker process per trial, each pinned to its own GPU set with
                     CUDA_VISIBLE_DEVICES (`--executor process`; also the launcher of data-parallel trials);
* `RayExecutor`    — each trial a Ray task (`num_gpus`: a share of one GPU, `trials_per_gpu` to a GPU, or the
                     trial's GPUs when it spans several), for users past one box.

Each trial goes to its worker as a job (a `TrialJob`), run by `harness.run._trial.run_trial`, which writes its
own status and results to the store (SQLite in WAL mode takes concurrent writers; use PostgreSQL
when the workers are on other machines). A trial with `gpus_per_trial > 1` is data parallel: its
worker is started with `accelerate launch --num_processes N --multi_gpu`, rank 0 records the results.

The worker entry point is `python -m harness.run UNIT.json`.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import socket
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from harness.base._errors import UserError
from harness.run._devices import DevicePool
from harness.run._jobs import TrialJob, TrialResult
from harness.store._store import Store

Done = Callable[[TrialResult], None]
WORKER_ENV_PREFIXES = ("TUNEGATE_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "PYTORCH_", "NCCL_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_command(
    job_file: str | Path, num_processes: int = 1, *, port: int | None = None, python: str = sys.executable
) -> list[str]:
    """The command that runs one trial: a plain worker, or `accelerate launch` for data parallel training with
    one process per GPU (torch.distributed; on a machine without CUDA the processes train on the CPU over gloo)."""
    if num_processes <= 1:
        return [python, "-m", "harness.run", str(job_file)]
    return [
        python,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--multi_gpu",
        "--main_process_port",
        str(port or free_port()),
        "--dynamo_backend",
        "no",
        "-m",
        "harness.run",
        str(job_file),
    ]


def run_here(job: TrialJob, console: Console, on_trained: Callable[[], None] | None = None) -> TrialResult:
    """Run one trial in this process. The training stack is imported here, where a trial runs, so a driver that
    only schedules workers starts in a second instead of importing torch, TRL and PEFT it never uses."""
    from harness.run._trial import run_trial  # heavy (torch, TRL, PEFT): only in processes that run trials

    return run_trial(job, console, on_trained)


def worker_env(
    devices: Sequence[str] | None, base: dict[str, str] | None = None, threads: int | None = None
) -> dict[str, str]:
    """The worker's environment, pinned to `devices` (an empty list hides every GPU); `threads`: its share of the
    CPU cores when several workers run at once (unless the user set OMP_NUM_THREADS), so their CPU-side work
    (tokenising, retrieval, the optimizer's launches) does not oversubscribe the cores."""
    env = dict(os.environ if base is None else base)
    if devices is not None:  # CPU slots ("cpu0", ...) see no GPU at all
        env["CUDA_VISIBLE_DEVICES"] = ",".join(d for d in devices if not d.startswith("cpu"))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads is not None:
        env.setdefault("OMP_NUM_THREADS", str(max(1, threads)))
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the worker gets SIGKILL when the driver dies (kill -9 included), so a resumed run never
    races an orphaned worker for the same trial."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def launch_worker(job: TrialJob, devices: Sequence[str] | None, store: Store) -> TrialResult:
    """Run one job in a fresh process (pinned to `devices`) and read its outcome back from the store."""
    folder = Path(job.folder)
    folder.mkdir(parents=True, exist_ok=True)
    job_file = folder / "unit.json"
    job_file.write_text(job.to_json())
    n = job.gpus_per_trial if devices else 1
    cmd = worker_command(job_file, n)
    log = folder / "worker.log"
    with log.open("a") as out:
        out.write(f"$ CUDA_VISIBLE_DEVICES={','.join(devices or [])} {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(
            cmd,
            env=worker_env(devices),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if os.name == "posix" else None,
        )
    return outcome_from_store(store, job, f"worker exited with code {proc.returncode}", log)


def outcome_from_store(store: Store, job: TrialJob, crash: str, log: Path | None = None) -> TrialResult:
    """What the worker recorded; if it died before recording anything, mark the trial failed with `crash`."""
    trial = store.get_trial(f"{job.run_id}/{job.trial}")
    if trial.status == "finished":
        return TrialResult(job.trial, "finished")
    if trial.status == "failed" and trial.error:
        return TrialResult(job.trial, "failed", trial.error)
    reason = crash
    if log is not None and log.exists():
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-3:]
        reason += f" before recording a result ({log}): " + " | ".join(tail)[-400:]
    store.update_trial(trial.id, status="failed", error=reason)
    return TrialResult(job.trial, "failed", reason)


class Executor(ABC):
    name = "executor"

    def __init__(self, store: Store, console: Console) -> None:
        self.store, self.console = store, console

    @abstractmethod
    def run(self, jobs: list[TrialJob], done: Done) -> None:
        """Run every job; call `done` once per job with its result, as each one ends."""

    def max_gpus_per_trial(self) -> int:
        return 1

    def run_phases(self, phases: list[list[TrialJob]], done: Done) -> None:
        """Run the phases in order (a DPO trial that continues an SFT trial is in a later phase than it)."""
        for phase in phases:
            self.run(phase, done)

    def close(self) -> None:
        """Release what the executor holds (worker processes); called once the run's last phase is done."""
        return None

    def report(self, job: TrialJob, result: TrialResult, where: str = "") -> None:
        if result.status == "finished":
            self.console.print(f"  [green]{job.trial}: finished[/]{escape(where)}", highlight=False)
        else:
            self.console.print(
                f"  [red]{job.trial}: failed[/]{escape(where)} — {escape(result.error or '')}", highlight=False
            )


class SerialExecutor(Executor):
    """One trial after another in this process (a data-parallel trial still gets its own launcher)."""

    name = "serial"

    def __init__(self, store: Store, console: Console, devices: Sequence[str] = ()) -> None:
        super().__init__(store, console)
        self.devices = list(devices)

    def max_gpus_per_trial(self) -> int:
        return max(len(self.devices), 1)

    def run(self, jobs: list[TrialJob], done: Done) -> None:
        for job in jobs:
            if job.gpus_per_trial > 1 and self.devices:
                result = launch_worker(job, self.devices[: job.gpus_per_trial], self.store)
                self.report(job, result, f" (log: {Path(job.folder) / 'worker.log'})")
            else:
                try:
                    result = run_here(job, self.console)
                except Exception as exc:  # noqa: BLE001 - the trial could not even start: record why
                    result = outcome_from_store(self.store, job, f"{type(exc).__name__}: {exc}")
            done(result)


class PoolExecutor(Executor):
    """One worker process per trial, each pinned to its own device set; as many at once as sets are free."""

    name = "pool"

    def __init__(
        self,
        store: Store,
        console: Console,
        devices: Sequence[str],
        launch: Callable[[TrialJob, list[str]], TrialResult] | None = None,
    ) -> None:
        super().__init__(store, console)
        if not devices:
            raise UserError("the process pool needs at least one GPU id", field="--gpus")
        self.devices = list(devices)
        self.launch = launch or (lambda job, ids: launch_worker(job, ids, self.store))

    def max_gpus_per_trial(self) -> int:
        return len(self.devices)

    def run(self, jobs: list[TrialJob], done: Done) -> None:
        pool = DevicePool(self.devices)

        def work(job: TrialJob, ticket: int) -> tuple[TrialResult, list[str]]:
            ids = pool.acquire(job.gpus_per_trial, ticket)
            try:
                self.console.print(
                    escape(f"  {job.trial}: started on GPU {','.join(ids)} (log: {Path(job.folder) / 'worker.log'})"),
                    highlight=False,
                )
                return self.launch(job, ids), ids
            finally:
                pool.release(ids)

        with ThreadPoolExecutor(max_workers=len(self.devices), thread_name_prefix="trial") as threads:
            futures = {threads.submit(work, job, pool.ticket()): job for job in jobs}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    result, ids = future.result()
                    where = f" (GPU {','.join(ids)})"
                except Exception as exc:  # noqa: BLE001 - launching failed: record it, go on
                    result = outcome_from_store(self.store, job, f"could not start the worker: {exc}")
                    where = ""
                self.report(job, result, where)
                done(result)


def _ray_trial(job_json: str) -> dict[str, Any]:
    """The Ray task: run one job on the node Ray chose, writing to the shared store."""

    import ray

    job = TrialJob.from_json(job_json)
    gpu_ids = [str(int(g)) for g in ray.get_gpu_ids()]
    Path(job.folder).mkdir(parents=True, exist_ok=True)
    if job.gpus_per_trial > 1 and gpu_ids:
        return dataclasses.asdict(launch_worker(job, gpu_ids, Store(job.store_url)))
    with (Path(job.folder) / "worker.log").open("a") as log:
        return dataclasses.asdict(run_here(job, Console(file=log, width=120)))


def ray_gpus(gpus_per_trial: int, trials_per_gpu: int) -> float:
    """The GPUs a trial's Ray task asks for: a 1/trials_per_gpu share of one GPU for a one-GPU trial (Ray then
    packs that many on each GPU, as the local workers do), whole GPUs for a data-parallel one."""
    return float(gpus_per_trial) if gpus_per_trial > 1 else 1.0 / max(1, trials_per_gpu)


class RayExecutor(Executor):
    """Each trial a Ray task on a Ray cluster (an existing one at `address`, or a local one started here).
    Ray places the task on a node with the trial's GPUs free and pins it to them; the run folder and the
    store must be reachable from every node (a shared filesystem and a PostgreSQL store)."""

    name = "ray"

    def __init__(self, store: Store, console: Console, address: str | None = None, trials_per_gpu: int = 1) -> None:
        super().__init__(store, console)
        self.trials_per_gpu = trials_per_gpu
        try:
            import ray
        except ImportError:
            raise UserError("the ray executor needs Ray: pip install 'ray>=2.9'", field="--executor") from None
        if store.is_sqlite and address not in (None, "local"):
            console.print(
                "[yellow]note: a SQLite store is only shared by Ray workers on this machine; "
                "use a PostgreSQL store (--store postgresql+psycopg://...) for a multi-node cluster[/]"
            )
        self.ray = ray
        if not ray.is_initialized():
            env = {k: v for k, v in os.environ.items() if k.startswith(WORKER_ENV_PREFIXES)}
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": env} if env else None,
            )
        self.task = ray.remote(_ray_trial)

    def max_gpus_per_trial(self) -> int:
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        return int(max((n.get("Resources", {}).get("GPU", 0) for n in nodes), default=0))

    def run(self, jobs: list[TrialJob], done: Done) -> None:
        ray = self.ray
        use_gpus = self.max_gpus_per_trial() > 0
        refs = {}
        for job in jobs:
            gpus = ray_gpus(job.gpus_per_trial, self.trials_per_gpu) if use_gpus else 0
            options = {"num_cpus": 1, "num_gpus": gpus, "max_retries": 0}
            refs[self.task.options(**options).remote(job.to_json())] = job
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            job = refs[ready[0]]
            try:
                result = TrialResult(**ray.get(ready[0]))
            except ray.exceptions.RayError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                result = outcome_from_store(
                    self.store, job, f"ray task failed: {first}", Path(job.folder) / "worker.log"
                )
            self.report(job, result, f" (ray; log: {Path(job.folder) / 'worker.log'})")
            done(result)


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: run the job described by a JSON file; the trial's outcome goes to the store."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m harness.run UNIT.json", file=sys.stderr)
        return 2
    job = TrialJob.from_json(Path(args[0]).read_text())
    result = run_here(job, Console(width=120))
    return 0 if result.status in ("finished", "failed", "worker") else 1
