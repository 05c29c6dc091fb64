"""`tunegate run`: check a plan, expand its trials, hand them to an executor, record everything in the store."""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from rich.console import Console
from rich.markup import escape

from harness.base._errors import UserError, ensure_folder
from harness.model._load import default_device
from harness.plan._load import load_plan, plan_hash
from harness.plan._parts import TRAINED
from harness.plan._schema import Plan
from harness.plan._sweep import trial_arms
from harness.run._capacity import auto_trials_per_gpu, free_memory_gib, spare_workers
from harness.run._devices import plan_devices
from harness.run._executors import Executor, PoolExecutor, RayExecutor, SerialExecutor
from harness.run._jobs import TrialJob, TrialResult, can_share
from harness.run._preflight import check_gpus_per_trial, preflight
from harness.run._provenance import git_sha
from harness.run._workers import WarmWorkers, WorkerExecutor
from harness.store._run_lock import run_lock_stale_after
from harness.store._store import Store


@dataclass
class RunOutcome:
    run_id: int
    finished: list[str]
    failed: dict[str, str]
    skipped: list[str]


def absolute_store_url(url: str) -> str:
    """A SQLite URL with an absolute path, so workers in other folders open the same file."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str(Path(url[len(prefix) :]).resolve())
    return url


class Runner:
    def __init__(
        self, store: Store, console: Console | None = None, device: str | None = None, runs_dir: str | Path = "runs"
    ) -> None:
        self.store, self.console = store, console or Console()
        self.device = device
        self.runs_dir = Path(runs_dir)

    def run(
        self,
        plan_path: str | Path,
        *,
        resume: bool = False,
        only: list[str] | None = None,
        executor: str = "local",
        gpus: list[str] | None = None,
        ray_address: str | None = None,
        trials_per_gpu: int | None = None,
        device_batch: bool = True,
        shared_eval: bool = False,
        spares: int | None = 0,
        eval_numerics: str = "invariant",
    ) -> RunOutcome:
        """Run (or resume) a plan. `trials_per_gpu` None: auto (persistent workers); `spares`: worker processes
        beyond the slots for trials that continue another (None: auto, `spare_workers`; off by default: a spare
        process slows the other trials on its GPU, docs/gpu.md); `device_batch` False keeps each suite's own
        generation batch size on a GPU too; `shared_eval` (persistent workers) scores the trained LoRA adapters
        together, in mixed-adapter batches, instead of each right after its training. Off by default: for a small
        model the mixed batches decode slower than separate trials running side by side. `eval_numerics`: invariant
        (every score bit-identical whatever shares its batch, `harness.model._invariant`) or fast (the batched
        path, whose last bits depend on the batch)."""

        plan, doc = load_plan(plan_path)
        arms = trial_arms(plan)
        if only:
            unknown = [n for n in only if n not in {a.name for a in arms}]
            if unknown:
                raise UserError(
                    f"no trial named {', '.join(unknown)} in this plan (trials: {', '.join(a.name for a in arms)})",
                    field="--only",
                )
            arms = [a for a in arms if a.name in only]
        cpu_only = self.device == "cpu" or gpus == []
        devices = [] if cpu_only else plan_devices(gpus)
        local_device = "cpu" if cpu_only else (self.device or default_device())
        continuing = len(parents_continued(arms))
        warm = self._warm_workers(
            executor,
            devices,
            trials_per_gpu,  # auto spares: as if memory were no bound
            spare_workers(devices, 0, continuing, 1e9, 0.0) if spares is None else spares,
        )
        try:
            checked_gpus = None if executor == "ray" else len(devices)
            checked = preflight(plan, doc, arms, device=local_device, n_gpus=checked_gpus)
            known = [e for e in checked.estimates.values() if e is not None]
            runner = make_executor(
                executor,
                store=self.store,
                console=self.console,
                devices=devices,
                explicit_gpus=gpus is not None,
                ray_address=ray_address,
                trials_per_gpu=trials_per_gpu,
                per_trial_gib=max(known) if known else None,
                warm=warm,
                continuing=continuing,
                spares=spares,
            )
        finally:
            if warm is not None:
                warm.close()  # what the executor did not adopt (all of them, if the checks failed)
        if executor == "ray":
            check_gpus_per_trial(plan, doc, arms, runner.max_gpus_per_trial())
        try:
            run_id, folder = self._open_run(plan, resume, len(arms))
        except BaseException:
            runner.close()  # the run is driven by another process (or cannot be resumed): its workers go
            raise
        with RunHeartbeat(self.store, run_id):
            return self._drive(
                plan, arms, run_id, folder, runner, checked, cpu_only, device_batch, shared_eval, eval_numerics
            )

    def _drive(
        self,
        plan: Plan,
        arms: list[Any],
        run_id: int,
        folder: Path,
        runner: Executor,
        checked: Any,
        cpu_only: bool,
        device_batch: bool,
        shared_eval: bool,
        eval_numerics: str = "invariant",
    ) -> RunOutcome:
        """Every pending trial of the run, handed to the executor; the run's status at the end."""
        jobs: list[TrialJob] = []
        outcome = RunOutcome(run_id, [], {}, [])
        url = absolute_store_url(self.store.url)
        for arm in arms:
            trial = self.store.ensure_trial(run_id, arm.name, arm.name, arm.type, json.loads(arm.model_dump_json()))
            if trial.status == "finished":
                outcome.skipped.append(arm.name)
                self.console.print(f"  [dim]{arm.name}: finished earlier, skipped[/]")
                continue
            jobs.append(
                TrialJob(
                    url,
                    run_id,
                    arm.name,
                    str(folder / arm.name),
                    getattr(arm, "gpus_per_trial", 1) if arm.type in TRAINED else 1,
                    "cpu" if cpu_only else self.device,
                    device_batch=device_batch,
                    eval_numerics=eval_numerics,
                )
            )

        def done(result: TrialResult) -> None:
            if result.status == "finished":
                outcome.finished.append(result.trial)
            else:
                outcome.failed[result.trial] = result.error or "failed"

        by_name = {a.name: a for a in arms}
        for job in jobs:
            job.after = getattr(by_name[job.trial], "from_arm", None) if by_name[job.trial].type == "dpo" else None
        if shared_eval and getattr(runner, "shares_evaluation", False):
            shareable = [u for u in jobs if u.gpus_per_trial <= 1 and can_share(by_name[u.trial])]
            for job in shareable if len(shareable) > 1 else []:
                job.defer_eval = True  # trained now, scored together with the other adapters at the end
        try:
            runner.run_phases(phases(longest_first(jobs, by_name, checked.rows), plan), done)
        finally:
            runner.close()
        self.store.finish_run(run_id, "failed" if outcome.failed else "finished")
        return outcome

    def _warm_workers(
        self, executor: str, devices: list[str], trials_per_gpu: int | None, spares: int
    ) -> WarmWorkers | None:
        """Start the persistent workers now, while the plan is checked, where the run will use them: as many per
        GPU as it could use (the memory estimate may later settle on fewer), or the CPU workers asked for, and
        the `spares` it could use."""
        if not (executor == "workers" or (executor == "local" and devices)):
            return None
        per_device = trials_per_gpu or (
            auto_trials_per_gpu(1e9, 0.0, os.cpu_count() or 1, len(devices)) if devices else 1
        )
        return WarmWorkers(devices, per_device, self.runs_dir.resolve() / ".workers", spares)

    def _open_run(self, plan: Plan, resume: bool, n_trials: int) -> tuple[int, Path]:

        phash = plan_hash(plan)
        existing = self.store.latest_run(plan.name, phash) if resume else None
        if resume and existing is None:
            self.console.print(
                f"[yellow]no earlier run of this plan ({plan.name}, same content) in the store; starting a new run[/]"
            )
        if existing is not None:
            if not existing.folder or not Path(existing.folder).is_absolute():
                raise UserError(
                    f"run {existing.id} ({plan.name}) has no recorded folder (it was stopped while "
                    "starting), so there is nothing to resume; run the plan without --resume",
                    field="--resume",
                )
            run_id, folder = existing.id, Path(existing.folder)
            took_over = self.store.claim_run(run_id)  # exit 2 while another process drives this run
            if took_over:
                self.console.print(f"[yellow]{escape(took_over)}[/]")
            self.console.print(f"[bold]Resuming run {run_id}[/] ({plan.name}) in {escape(str(folder))}")
        else:
            plan_dump = json.loads(plan.model_dump_json())
            run_id = self.store.create_run(
                plan.name,
                plan_dump,
                phash,
                plan.model,
                lambda new_id: str(self._new_folder(plan.name, new_id)),
                git_sha(),
            )
            folder = Path(self.store.get_run(run_id).folder)
            self.console.print(f"[bold]Run {run_id}[/] ({plan.name}): {n_trials} trials -> {escape(str(folder))}")
        ensure_folder(folder)
        return run_id, folder

    def _new_folder(self, name: str, run_id: int) -> Path:
        folder = (self.runs_dir / f"{name}-{run_id}").resolve()
        n = 1
        while folder.exists() and (not folder.is_dir() or any(folder.iterdir())):  # another store's run, same id
            n += 1
            folder = (self.runs_dir / f"{name}-{run_id}.{n}").resolve()
        return folder


class RunHeartbeat:
    """While the run is driven: a thread that refreshes the run's heartbeat in the store (its lock, see
    `Store.claim_run`) every `every` seconds (default: a tenth of the stale timeout, at most 30 s)."""

    def __init__(self, store: Store, run_id: int, every: float | None = None) -> None:
        self.store, self.run_id = store, run_id
        self.every = every if every is not None else min(30.0, run_lock_stale_after() / 10)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"run-{run_id}-heartbeat", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if not self.store.heartbeat(self.run_id):
                    return  # another process took the run over
            except UserError:
                continue  # the store is busy or unreachable for a moment: try again at the next beat


def parents_continued(arms: list[Any]) -> set[str]:
    """The trials of `arms` that another trial of `arms` continues (DPO `from_arm`)."""
    names = {a.name for a in arms}
    return {a.from_arm for a in arms if a.type == "dpo" and getattr(a, "from_arm", None) in names}


def longest_first(jobs: list[TrialJob], arms: dict[str, Any], rows: dict[str, int] | None = None) -> list[TrialJob]:
    """The order trials are handed out in (longest-processing-time first, so a sweep does not end waiting on one
    long trial started last): trials another trial continues, then trained arms (the most optimizer steps first;
    `rows`: the examples in the plan's train and preference files), then retrieval arms (they embed a corpus),
    then the rest. Stable: ties keep the plan's order."""
    continued = {u.after for u in jobs if u.after}

    def rank(job: TrialJob) -> tuple[int, float]:
        arm = arms[job.trial]
        if job.trial in continued:
            return 0, 0.0
        if arm.type in TRAINED:
            n = (rows or {}).get("preference" if arm.type == "dpo" else "train", 1000)
            return 1, -expected_steps(arm, n)
        return (2 if arm.type == "rag" else 3), 0.0

    return sorted(jobs, key=rank)


def expected_steps(arm: Any, n_rows: int) -> float:
    """The optimizer steps a trained arm will take on `n_rows` examples (its max_steps when it sets one)."""
    if getattr(arm, "max_steps", None):
        return float(arm.max_steps)
    per_step = max(int(arm.batch_size) * int(arm.grad_accum), 1)
    return float(arm.epochs) * math.ceil(max(n_rows, 1) * float(arm.data_fraction) / per_step)


def phases(jobs: list[TrialJob], plan: Plan) -> list[list[TrialJob]]:
    """Units in dependency order: DPO trials that continue an SFT trial run after everything else."""
    dependent = {a.name for a in trial_arms(plan) if a.type == "dpo" and getattr(a, "from_arm", None)}
    first = [u for u in jobs if u.trial not in dependent]
    second = [u for u in jobs if u.trial in dependent]
    return [p for p in (first, second) if p]


EXECUTORS = ("local", "workers", "process", "ray")


def make_executor(
    kind: str,
    *,
    store: Store,
    console: Console,
    devices: list[str],
    explicit_gpus: bool = False,
    ray_address: str | None = None,
    trials_per_gpu: int | None = None,
    per_trial_gib: float | None = None,
    warm: WarmWorkers | None = None,
    continuing: int = 0,
    spares: int | None = 0,
) -> Executor:
    """`local`: serially in this process on a CPU, persistent workers on GPUs; `workers`: persistent workers (on
    a CPU too); `process`: one fresh process per trial (pinned to its GPUs); `ray`: Ray tasks.
    `trials_per_gpu` None: as many as the memory estimate fits (`auto_trials_per_gpu`). Persistent workers get
    `spares` extra workers (None: `spare_workers` for `continuing` trials that continue another)."""
    if kind not in EXECUTORS:
        raise UserError(f"unknown executor '{kind}': use {', '.join(EXECUTORS)}", field="--executor")
    if kind == "process":  # on a CPU: one process at a time, every GPU hidden from it
        return PoolExecutor(store, console, devices or ["cpu0"])
    if kind == "local" and not devices:
        return SerialExecutor(store, console, devices)
    free_gib = free_memory_gib(devices) if devices and (trials_per_gpu is None or spares is None) else 0.0
    if trials_per_gpu is None:
        trials_per_gpu = (
            auto_trials_per_gpu(free_gib, per_trial_gib or DEFAULT_TRIAL_GIB, os.cpu_count() or 1, len(devices))
            if devices
            else 1
        )
    if kind == "ray":  # the cluster's GPUs are taken to be like this machine's: --trials-per-gpu says otherwise
        console.print(
            f"[dim]Ray: {trials_per_gpu} one-GPU trial(s) at a time per GPU (num_gpus={1 / trials_per_gpu:.3g} each)[/]"
        )
        return RayExecutor(store, console, ray_address, trials_per_gpu)
    if spares is None:
        spares = spare_workers(devices, trials_per_gpu, continuing, free_gib, per_trial_gib or DEFAULT_TRIAL_GIB)
    spare_note = f", {spares} spare worker(s) for trials that continue another" if spares else ""
    console.print(
        f"[dim]{trials_per_gpu} trial(s) at a time per {'GPU' if devices else 'CPU worker pool'}, "
        f"persistent workers{spare_note}[/]"
    )
    return WorkerExecutor(store, console, devices, trials_per_gpu, warm, spares)


DEFAULT_TRIAL_GIB = 2.0  # a trial the estimator has no figure for (evaluation-only arms of a small model)
