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

The worker entry point is `python -m harness.run --serve REPLY_FD`.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.markup import escape

from harness._nvml import visible_nvml_gpus
from harness.base._errors import UserError
from harness.model._load import keep_models_loaded
from harness.run._executors import (
    Done,
    Executor,
    PoolExecutor,
    SerialExecutor,
    outcome_from_store,
    run_here,
    worker_env,
)
from harness.run._jobs import TrialJob, TrialResult
from harness.store._store import Store

GIB = 1024**3
CONTEXT_GIB = 0.75          # what a CUDA context, the allocator's slack and the libraries take per process
HEADROOM = 0.85             # plan for this share of the free memory
MAX_AUTO_TRIALS_PER_GPU = 4  # beyond this, processes mostly queue for the same GPU
MIN_SHARED_GROUP = 2


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


def spare_workers(devices: Sequence[str], trials_per_gpu: int, continuing: int, free_gib: float,
                  per_trial_gib: float) -> int:
    """Worker processes beyond the slots, for trials that continue another (DPO after SFT): one per such parent,
    at most one per GPU, and only where the free memory fits one trial more than the slots (`trials_that_fit`). A
    continuing trial is on the sweep's longest path: it starts as soon as its parent has trained, on a spare when
    every slot is busy, instead of waiting for a slot while the parent is scored. None on CPU workers (their slots
    are the cores). `--spare-workers auto` asks for this count; the default is none: on one H200, where the
    12-trial GPU plan keeps the GPU busy, a fifth process slowed the other trials more than the continuing trial
    gained (README, Multi-GPU)."""
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


class Worker:
    """One long-lived worker process on one device set; runs one job (a trial, or a shared evaluation) at a time."""

    def __init__(self, slot: str, devices: list[str], threads: int | None = None, spare: bool = False) -> None:
        self.slot, self.devices, self.threads = slot, devices, threads
        self.spare = spare   # runs only trials that continue another (`spare_workers`)
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
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                         env=worker_env(self.devices, threads=self.threads), pass_fds=(write_fd,),
                                         text=True)
        os.close(write_fd)
        self.replies = os.fdopen(read_fd, "r")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def submit(self, kind: str, units: list[TrialJob],
               on_trained: Callable[[str], None] | None = None) -> list[TrialResult] | None:
        """Run one job; None when the process died before answering (it is then gone: start a new one).
        `on_trained(trial)` is called when the worker says a trial has trained (its evaluation still to come)."""
        log = Path(units[0].folder).parent / "workers" / f"{self.slot}.log"
        if not self.alive():
            self.stop()
            self.start(log)
        elif self.log != log:
            self.move_log(log)   # started before the run had a folder (WarmWorkers)
        assert self.proc is not None and self.proc.stdin is not None and self.replies is not None
        try:
            self.proc.stdin.write(json.dumps({"kind": kind, "units": [asdict(u) for u in units]}) + "\n")
            self.proc.stdin.flush()
            line = self.replies.readline()
            while line and (reply := json.loads(line)) and isinstance(reply, dict):   # an event before the result
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
    return [(f"gpu{d}.{k}", [d]) for k in range(per_device) for d in devices] or \
        [(f"cpu.{k}", []) for k in range(per_device)]


def spare_slots(devices: Sequence[str], spares: int) -> list[tuple[str, list[str]]]:
    """(slot name, devices) of the spare workers: one GPU each, in turn (CPU spares: none visible)."""
    return [(f"gpu{devices[k % len(devices)]}.spare{k}", [devices[k % len(devices)]]) if devices
            else (f"cpu.spare{k}", []) for k in range(spares)]


class WarmWorkers:
    """Worker processes started before the run's checks, so that their imports (torch, transformers, TRL, PEFT:
    ~18 s on a GPU host) overlap the driver's own start (plan checks, token counts, the store). As many as the
    run could use are started (`per_device` on each device, and `spares`); the executor adopts those it needs,
    `close` ends the rest. Their start-up output goes to `log_dir` (the run's folder does not exist yet)."""

    def __init__(self, devices: Sequence[str], per_device: int, log_dir: Path, spares: int = 0) -> None:
        slots = [(*s, False) for s in worker_slots(devices, per_device)] + \
            [(*s, True) for s in spare_slots(devices, spares)]
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


Job = tuple[str, list[TrialJob]]


class Dispatch:
    """Who runs which job next, for worker threads that each ask `next_for(worker)` when free.

    Trials that continue another (`follow`) go before the queue. A free worker on the device with the fewest jobs
    running takes the next job (ties: the slots' order), so two GPUs share the work evenly when fewer trials than
    slots are left. A spare worker takes only continuing trials, and only when no slot is free for them while the
    queue waits; a slot takes a continuing trial when the queue is empty (no process more than needed)."""

    def __init__(self, jobs: list[Job], workers: Sequence[Worker], spares: Sequence[Worker] = ()) -> None:
        self.queue: deque[Job] = deque(jobs)
        self.following: deque[Job] = deque()
        self.order = {id(w): k for k, w in enumerate([*workers, *spares])}
        self.free: list[Worker] = []
        self.assigned: dict[int, Job] = {}
        self.load: dict[tuple[str, ...], int] = {}
        self.running = 0
        self.cond = threading.Condition()

    def next_for(self, worker: Worker) -> Job | None:
        """Block until `worker` is given a job (returned) or nothing is left to do (None)."""
        with self.cond:
            self.free.append(worker)
            self._assign()
            self.cond.wait_for(lambda: id(worker) in self.assigned or self._finished())
            if id(worker) not in self.assigned:
                self.free.remove(worker)
                return None
            return self.assigned.pop(id(worker))

    def follow(self, jobs: list[Job]) -> None:
        """Continuing trials, ready now: before the queue."""
        with self.cond:
            self.following.extend(jobs)
            self._assign()

    def done(self, worker: Worker, follow: list[Job]) -> None:
        """`worker` finished its job; `follow`: continuing trials that were waiting for it."""
        with self.cond:
            self.running -= 1
            key = tuple(worker.devices)
            self.load[key] -= 1
            self.following.extend(follow)
            self._assign()

    def _finished(self) -> bool:
        return not self.queue and not self.following and self.running == 0

    def _assign(self) -> None:
        while (pick := self._pick()) is not None:
            worker, source = pick
            self.free.remove(worker)
            self.assigned[id(worker)] = source.popleft()
            self.running += 1
            key = tuple(worker.devices)
            self.load[key] = self.load.get(key, 0) + 1
        self.cond.notify_all()

    def _pick(self) -> tuple[Worker, deque[Job]] | None:
        slots = [w for w in self.free if not w.spare]
        spares = [w for w in self.free if w.spare]
        if self.following:
            # a slot when the queue is empty or no spare is free; else a spare, leaving the slots to the queue
            candidates = slots if (slots and (not self.queue or not spares)) else spares
            source = self.following
        elif self.queue:
            candidates, source = slots, self.queue
        else:
            return None
        if not candidates:
            return None
        return min(candidates, key=lambda w: (self.load.get(tuple(w.devices), 0), self.order[id(w)])), source


class WorkerExecutor(Executor):
    """Persistent workers, `trials_per_gpu` per GPU; with shared evaluation, deferred adapters scored together last.
    A data-parallel trial (gpus_per_trial > 1) runs after the others through a one-off `accelerate` launcher."""
    name = "workers"
    shares_evaluation = True

    def __init__(self, store: Store, console: Console, devices: Sequence[str], trials_per_gpu: int,
                 warm: WarmWorkers | None = None, spares: int = 0) -> None:
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
            warm.close()   # started for a larger run than this one turned out to be

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
        released: set[str] = set()   # trials whose followers were queued when they had trained
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
                    self.console.print(f"  [cyan]{escape(unit.trial)}: trained[/] on {worker.slot}; scored with "
                                       "the other adapters at the end", highlight=False)
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

    def _drain(self, jobs: list[tuple[str, list[TrialJob]]], finish: Any, grouped: bool = False,
               ready: Callable[[str], list[TrialJob]] | None = None) -> None:
        """Hand the jobs to the workers, one job per free worker, until none is left and none is running. For a
        single trial, `finish` returns the trials that were waiting for it; they are handed out first, or earlier,
        when the worker says the trial has trained (`ready` returns them then). See `Dispatch` for who takes what."""
        spares = [] if grouped else self.spares
        dispatch = Dispatch(jobs, self.workers, spares)

        def loop(worker: Worker) -> None:
            def trained(trial: str) -> None:   # the worker says a trial has trained: its followers may start
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
                    results = [outcome_from_store(self.store, u, f"worker process died (exit code {code})",
                                                  Path(u.folder) / "worker.log") for u in units]
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


@contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (Python's and the C libraries') to `log` for the duration."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("a") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _exit_with_parent() -> None:
    """A worker ends when its driver does (kill -9 included), so a resumed run never races an orphaned worker.
    (PR_SET_PDEATHSIG would fire when the driver *thread* that started the worker ends, so it is not used.)"""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serve(reply_fd: int) -> int:
    """The worker's loop: read jobs from stdin, run each, answer with one JSON line on `reply_fd`."""
    from harness.run._shared_eval import score_together  # worker side only: the driver never loads torch or PEFT
    from harness.run._trial import mark_ready  # heavy (torch, TRL, PEFT): the driver imports this module too

    _exit_with_parent()
    keep_models_loaded()
    mark_ready()
    with os.fdopen(reply_fd, "w") as replies:
        for line in sys.stdin:
            job = json.loads(line)
            units = [TrialJob(**u) for u in job["units"]]
            log = Path(units[0].folder) / "worker.log" if job["kind"] == "trial" else \
                Path(units[0].folder).parent / "shared-eval.log"
            with _output_to(log):
                console = Console(file=sys.stdout, width=120, force_terminal=False)
                if job["kind"] == "trial":
                    def trained(trial: str = units[0].trial) -> None:   # a trial that continues it may start
                        replies.write(json.dumps({"event": "trained", "trial": trial}) + "\n")
                        replies.flush()

                    results = [run_here(units[0], console, trained)]
                else:
                    results = score_together(units, console)
            replies.write(json.dumps([asdict(r) for r in results]) + "\n")
            replies.flush()
    return 0
