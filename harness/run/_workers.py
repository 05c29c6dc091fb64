"""Persistent GPU workers: the default way a run uses its GPUs.

One long-lived worker process per slot (`trials_per_gpu` slots on each GPU, each pinned to its GPU with
CUDA_VISIBLE_DEVICES) imports torch, transformers, TRL and PEFT once and keeps the base model loaded across
trials (`keep_models_loaded`: every trial gets a device-side copy of it instead of a read from disk). The
driver hands each free slot the next trial as one JSON line on the worker's stdin; the worker runs it
exactly as a one-off worker would (`run_trial`: status, curves, artifacts and scores go to the store) and
answers on a pipe of its own (and, before the answer, says when the trial has trained: a trial that continues
it, DPO after SFT, starts then instead of after the evaluation; with `--spare-workers`, on a spare worker when no
slot is free, see `spare_workers`). A free worker on the GPU with the fewest trials running takes the next trial
(`Dispatch`). With `--shared-eval`, trained LoRA adapters whose evaluation was deferred are then scored together,
several adapters per pass (`harness/run/_shared_eval.py`), spread over the slots. The workers are started while the
driver checks the plan (`WarmWorkers`).

A worker that dies (a segfault, the OOM killer, kill -9) is replaced by a fresh one; the trial it held is
recorded as failed with the exit code and the tail of its log, and the sweep goes on. A CUDA out-of-memory
error inside a trial is caught by the trial itself and recorded as that trial's failure. Nothing here
changes what a finished trial means, so `--resume` works as with any executor.

This module is the driver side: the worker processes, the warm pool and the executor. The capacity rules are in
`harness/run/_capacity.py`, who takes which job in `harness/run/_dispatch.py`, and the worker's own loop
(`python -m harness.run --serve REPLY_FD`) in `harness/run/_worker_loop.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.markup import escape

from harness.run._dispatch import Dispatch
from harness.run._executors import (
    Done,
    Executor,
    PoolExecutor,
    SerialExecutor,
    outcome_from_store,
    worker_env,
)
from harness.run._jobs import TrialJob, TrialResult
from harness.store._store import Store

MIN_SHARED_GROUP = 2


class Worker:
    """One long-lived worker process on one device set; runs one job (a trial, or a shared evaluation) at a time."""

    def __init__(self, slot: str, devices: list[str], threads: int | None = None, spare: bool = False) -> None:
        self.slot, self.devices, self.threads = slot, devices, threads
        self.spare = spare  # runs only trials that continue another (`spare_workers`)
        self.proc: subprocess.Popen[str] | None = None
        self.replies: IO[str] | None = None
        self.jobs = 0
        self.log: Path | None = None

    def start(self, log: Path) -> None:
        """Start the process; what it prints outside a job (start-up, a crash while idle) goes to `log`."""
        self.log = log
        read_fd, write_fd = os.pipe()
        cmd = [sys.executable, "-m", "harness.run", "--serve", str(write_fd)]
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=worker_env(self.devices, threads=self.threads),
                pass_fds=(write_fd,),
                text=True,
            )
        os.close(write_fd)
        self.replies = os.fdopen(read_fd, "r")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def submit(
        self, kind: str, units: list[TrialJob], on_trained: Callable[[str], None] | None = None
    ) -> list[TrialResult] | None:
        """Run one job; None when the process died before answering (it is then gone: start a new one).
        `on_trained(trial)` is called when the worker says a trial has trained (its evaluation still to come)."""
        log = Path(units[0].folder).parent / "workers" / f"{self.slot}.log"
        if not self.alive():
            self.stop()
            self.start(log)
        elif self.log != log:
            self.move_log(log)  # started before the run had a folder (WarmWorkers)
        assert self.proc is not None and self.proc.stdin is not None and self.replies is not None
        try:
            self.proc.stdin.write(json.dumps({"kind": kind, "units": [asdict(u) for u in units]}) + "\n")
            self.proc.stdin.flush()
            line = self.replies.readline()
            while line and (reply := json.loads(line)) and isinstance(reply, dict):  # an event before the result
                if reply.get("event") == "trained" and on_trained is not None:
                    on_trained(reply["trial"])
                line = self.replies.readline()
        except (BrokenPipeError, OSError):
            line = ""
        self.jobs += 1
        if not line:
            self.proc.wait()
            return None
        return [TrialResult(**r) for r in json.loads(line)]

    def move_log(self, log: Path) -> None:
        """Move the log file (the process keeps writing to it: same file); left where it is if that fails."""
        if self.log is None:
            return
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.log, log)
            self.log = log
        except OSError:
            pass

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def ask_to_stop(self) -> None:
        """Close the process's input: it ends its loop and exits (`stop` then waits for it)."""
        if self.proc is not None and self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def stop(self) -> int | None:
        """End the process (closing its input ends its loop) and close its pipes; a dead one is just cleaned up.
        Returns its exit code (None: there was no process)."""
        if self.proc is None:
            return None
        try:
            self.ask_to_stop()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        if self.replies is not None:
            self.replies.close()
        code = self.proc.returncode
        self.proc, self.replies = None, None
        return code


def stop_all(workers: Sequence[Worker]) -> list[int | None]:
    """Stop the workers together: every one is asked first, then each is waited for, so their exits (each tears
    down its CUDA context and its libraries) overlap instead of adding up at the end of a sweep."""
    for worker in workers:
        worker.ask_to_stop()
    return [worker.stop() for worker in workers]


def worker_threads(slots: int) -> int | None:
    """Each worker's share of the CPU cores when several run at once (None: one worker, no limit)."""
    return max(1, (os.cpu_count() or 1) // slots) if slots > 1 else None


def worker_slots(devices: Sequence[str], per_device: int) -> list[tuple[str, list[str]]]:
    """(slot name, devices) of every worker: `per_device` on each GPU, or `per_device` CPU workers."""
    return [(f"gpu{d}.{k}", [d]) for k in range(per_device) for d in devices] or [
        (f"cpu.{k}", []) for k in range(per_device)
    ]


def spare_slots(devices: Sequence[str], spares: int) -> list[tuple[str, list[str]]]:
    """(slot name, devices) of the spare workers: one GPU each, in turn (CPU spares: none visible)."""
    return [
        (f"gpu{devices[k % len(devices)]}.spare{k}", [devices[k % len(devices)]]) if devices else (f"cpu.spare{k}", [])
        for k in range(spares)
    ]


class WarmWorkers:
    """Worker processes started before the run's checks, so that their imports (torch, transformers, TRL, PEFT,
    which take seconds) overlap the driver's own start (plan checks, token counts, the store). As many as the
    run could use are started (`per_device` on each device, and `spares`); the executor adopts those it needs,
    `close` ends the rest. Their start-up output goes to `log_dir` (the run's folder does not exist yet)."""

    def __init__(self, devices: Sequence[str], per_device: int, log_dir: Path, spares: int = 0) -> None:
        slots = [(*s, False) for s in worker_slots(devices, per_device)] + [
            (*s, True) for s in spare_slots(devices, spares)
        ]
        threads = worker_threads(len(slots))
        self.idle: dict[str, Worker] = {}
        for slot, slot_devices, spare in slots:
            worker = Worker(slot, slot_devices, threads, spare)
            worker.start(log_dir / f"{slot}-{os.getpid()}.log")
            self.idle[slot] = worker

    def take(self, slot: str, devices: list[str]) -> Worker | None:
        worker = self.idle.pop(slot, None)
        if worker is not None and worker.devices == devices and worker.alive():
            return worker
        if worker is not None:
            worker.stop()
        return None

    def close(self) -> None:
        """Stop the workers no run adopted; the start-up log of one that ended cleanly is removed."""
        workers = list(self.idle.values())
        for worker, code in zip(workers, stop_all(workers), strict=True):
            if code == 0 and worker.log is not None:
                worker.log.unlink(missing_ok=True)
        self.idle.clear()


class WorkerExecutor(Executor):
    """Persistent workers, `trials_per_gpu` per GPU; with shared evaluation, deferred adapters scored together last.
    A data-parallel trial (gpus_per_trial > 1) runs after the others through a one-off `accelerate` launcher."""

    name = "workers"
    shares_evaluation = True

    def __init__(
        self,
        store: Store,
        console: Console,
        devices: Sequence[str],
        trials_per_gpu: int,
        warm: WarmWorkers | None = None,
        spares: int = 0,
    ) -> None:
        super().__init__(store, console)
        self.devices = list(devices)  # none: CPU workers (every GPU hidden from them)
        self.trials_per_gpu = trials_per_gpu
        slots = worker_slots(self.devices, trials_per_gpu)
        extra = spare_slots(self.devices, spares)
        threads = worker_threads(len(slots) + len(extra))

        def adopt(slot: str, slot_devices: list[str], spare: bool) -> Worker:
            return (warm.take(slot, slot_devices) if warm else None) or Worker(slot, slot_devices, threads, spare)

        self.workers = [adopt(slot, slot_devices, False) for slot, slot_devices in slots]
        self.spares = [adopt(slot, slot_devices, True) for slot, slot_devices in extra]
        if warm is not None:
            warm.close()  # started for a larger run than this one turned out to be

    def max_gpus_per_trial(self) -> int:
        return len(self.devices)

    def run(self, units: list[TrialJob], done: Done) -> None:
        self.run_phases([units], done)

    def run_phases(self, phases: list[list[TrialJob]], done: Done) -> None:
        """Every phase's trials in one queue: a trial that continues another (`after`) starts as soon as that one
        has trained, not when the whole first phase has; trained adapters are scored together at the end."""
        units = [u for phase in phases for u in phase]
        single = [u for u in units if u.gpus_per_trial <= 1]
        parallel = [u for u in units if u.gpus_per_trial > 1]
        trained: list[TrialJob] = []
        released: set[str] = set()  # trials whose followers were queued when they had trained
        lock = threading.Lock()

        def ready(trial: str) -> list[TrialJob]:
            """A trial has trained (its evaluation goes on): the trials that continue it may start now."""
            with lock:
                released.add(trial)
            return [u for u in single if u.after == trial]

        def finish(unit: TrialJob, result: TrialResult, worker: Worker) -> list[TrialJob]:
            """Record one trial's end; return the trials that were waiting for it (none if queued already)."""
            with lock:
                if result.status == "trained":
                    trained.append(unit)
                    self.console.print(
                        f"  [cyan]{escape(unit.trial)}: trained[/] on {worker.slot}; scored with "
                        "the other adapters at the end",
                        highlight=False,
                    )
                else:
                    self.report(unit, result, f" ({worker.slot})")
                    done(result)
                if unit.trial in released:
                    return []
            return [u for u in single if u.after == unit.trial]

        names = {u.trial for u in single}
        first = [u for u in single if u.after is None or u.after not in names]
        self._drain([("trial", [u]) for u in first], finish, ready=ready)
        for unit, result in self._score_trained(trained):
            self.report(unit, result, " (shared evaluation)")
            done(result)
        if parallel and self.devices:
            PoolExecutor(self.store, self.console, self.devices).run(parallel, done)
        elif parallel:  # no GPU: the launcher runs the data-parallel ranks on the CPU
            SerialExecutor(self.store, self.console).run(parallel, done)

    def _score_trained(self, trained: list[TrialJob]) -> list[tuple[TrialJob, TrialResult]]:
        if not trained:
            return []
        n_groups = max(1, min(len(self.workers), len(trained) // MIN_SHARED_GROUP))
        groups = [trained[k::n_groups] for k in range(n_groups)]
        out: list[tuple[TrialJob, TrialResult]] = []
        lock = threading.Lock()

        def finish_group(group: list[TrialJob], results: list[TrialResult]) -> None:
            by_trial = {r.trial: r for r in results}
            with lock:
                out.extend((u, by_trial.get(u.trial) or TrialResult(u.trial, "failed", "no result")) for u in group)

        self._drain([("group", g) for g in groups], lambda g, results, _w: finish_group(g, results), grouped=True)
        return out

    def _drain(
        self,
        jobs: list[tuple[str, list[TrialJob]]],
        finish: Any,
        grouped: bool = False,
        ready: Callable[[str], list[TrialJob]] | None = None,
    ) -> None:
        """Hand the jobs to the workers, one job per free worker, until none is left and none is running. For a
        single trial, `finish` returns the trials that were waiting for it; they are handed out first, or earlier,
        when the worker says the trial has trained (`ready` returns them then). See `Dispatch` for who takes what."""
        spares = [] if grouped else self.spares
        dispatch = Dispatch(jobs, self.workers, spares)

        def loop(worker: Worker) -> None:
            def trained(trial: str) -> None:  # the worker says a trial has trained: its followers may start
                follow = ready(trial) if ready is not None else []
                if follow:
                    dispatch.follow([("trial", [u]) for u in follow])

            while (job := dispatch.next_for(worker)) is not None:
                kind, units = job
                if not grouped:
                    self.console.print(escape(f"  {units[0].trial}: started on {worker.slot}"), highlight=False)
                results = worker.submit(kind, units, trained)
                if results is None:  # the process died: its trials fail with the reason, a new worker takes over
                    code = worker.exit_code()
                    results = [
                        outcome_from_store(
                            self.store, u, f"worker process died (exit code {code})", Path(u.folder) / "worker.log"
                        )
                        for u in units
                    ]
                    worker.stop()
                follow = finish(units, results, worker) if grouped else finish(units[0], results[0], worker)
                dispatch.done(worker, [("trial", [u]) for u in follow or []])

        threads = [threading.Thread(target=loop, args=(w,), name=w.slot, daemon=True) for w in self.workers + spares]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def close(self) -> None:
        stop_all(self.workers + self.spares)
