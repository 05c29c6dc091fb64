"""One trial as a job: train (if the arm trains), score every suite, write everything to the store."""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness import tracing
from harness.arms._artifacts import load_trial_model, trial_base
from harness.arms._dpo_data import load_pairs
from harness.arms._prompting import shaper_for
from harness.arms._train import TrainingFailed, train_dpo, train_sft
from harness.base._data import file_sha256, load_examples
from harness.base._errors import UserError
from harness.evaluation import _suite as suite_registry
from harness.evaluation._evaluate import evaluate
from harness.model._load import DISK_LOADS, default_device, resolve
from harness.plan._parts import TRAINED, RagArm
from harness.plan._schema import Plan
from harness.plan._sweep import trial_arms
from harness.run._jobs import TrialJob, TrialResult
from harness.run._provenance import device_name, git_sha, stamp, versions
from harness.scorers import _judge_client as judge
from harness.store._store import Store

OWNER_MARK = ".tunegate-trial.json"  # in a trial folder: which run and trial wrote it (what a rerun may clean)


_TRIALS_IN_THIS_PROCESS = 0
EXECUTOR_FILES = ("worker.log", "unit.json")  # what an executor writes into a trial's folder before the trial starts


_READY_AT: float | None = None  # a persistent worker's age when its imports were done (`mark_ready`)


def _process_age() -> float:
    """Seconds since this process started (interpreter start and imports, for the first trial it runs)."""
    return max(0.0, time.time() - psutil.Process().create_time())


def mark_ready() -> None:
    """A persistent worker has imported everything and waits for its first job: its first trial's 'start' phase
    is then split into the imports (`start_imports`) and the wait for the driver (`start_waiting`)."""
    global _READY_AT
    _READY_AT = _process_age()


def run_trial(
    job: TrialJob, console: Console | None = None, on_trained: Callable[[], None] | None = None
) -> TrialResult:
    """Train (if needed) and score one trial, writing status, curves, artifacts and scores to the store.
    `on_trained` is called once the adapter and the manifest are on disk, before the evaluation (a trial that
    continues this one may start then)."""
    return _TrialExecution(job, console or Console(), on_trained).run()


def has_trained(trial: Any) -> bool:
    """The trial is past its training (still evaluating, say): its adapter and a manifest with its training are on
    disk."""
    if not trial.folder or trial.status != "running":
        return False
    manifest = Path(trial.folder) / "manifest.json"
    try:
        return (Path(trial.folder) / "adapter").is_dir() and bool(json.loads(manifest.read_text()).get("training"))
    except (OSError, ValueError):
        return False


class _TrialExecution:
    def __init__(self, job: TrialJob, console: Console, on_trained: Callable[[], None] | None = None) -> None:

        self.job, self.console, self.on_trained = job, console, on_trained
        self.store = Store(job.store_url)
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = os.environ.get("LOCAL_RANK")
        self.device = job.device or default_device()
        if local_rank is not None and self.device == "cuda":
            import torch

            torch.cuda.set_device(int(local_rank))
        run = self.store.get_run(job.run_id)
        self.plan = Plan.model_validate(run.plan)
        matches = [a for a in trial_arms(self.plan) if a.name == job.trial]
        if not matches:
            raise UserError(f"run {job.run_id} has no trial '{job.trial}'")
        self.arm = matches[0]
        self.trial = self.store.get_trial(f"{job.run_id}/{job.trial}")
        self.folder = Path(job.folder)
        self.base_model = self.plan.model
        self.training: dict[str, Any] = {}
        global _TRIALS_IN_THIS_PROCESS
        # phases of this trial, in seconds: 'start' is the process's start-up and imports when this is the first
        # trial a process runs (0 for a persistent worker's later trials), then load, train, eval:<suite>, store
        first = _TRIALS_IN_THIS_PROCESS == 0
        self.phases: dict[str, float] = {"start": _process_age() if first else 0.0}
        if first and _READY_AT is not None:
            self.phases |= {"start_imports": _READY_AT, "start_waiting": max(0.0, self.phases["start"] - _READY_AT)}
        self.trials_before = _TRIALS_IN_THIS_PROCESS
        _TRIALS_IN_THIS_PROCESS += 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def run(self) -> TrialResult:
        arm = self.arm
        trained_earlier = self.trial.status == "trained" and (self.folder / "adapter").exists()
        if trained_earlier and self.job.defer_eval:
            return TrialResult(arm.name, "trained")
        if self.main and not trained_earlier and (problem := self._start()):
            self.store.update_trial(self.trial.id, status="failed", error=problem, finished_at=stamp())
            return TrialResult(arm.name, "failed", problem)
        try:
            if arm.type in TRAINED and not trained_earlier:
                self._train()
            if not self.main:
                return TrialResult(arm.name, "worker")
            if trained_earlier:  # resumed after training: the adapter and its manifest are on disk
                self._reload_manifest()
                self.store.update_trial(self.trial.id, status="running", error=None)
            self._write_manifest(finished=False)
            if self.job.defer_eval:
                self.store.update_trial(self.trial.id, status="trained", error=None)
                return TrialResult(arm.name, "trained")
            if self.on_trained is not None and arm.type in TRAINED:
                self.on_trained()
            self._evaluate()
            self._write_manifest(finished=True)
        except Exception as exc:
            if not self.main:
                raise
            return self._fail(self._reason(exc))
        finally:
            _free_memory()
        self.store.update_trial(self.trial.id, status="finished", error=None, finished_at=stamp())
        return TrialResult(arm.name, "finished")

    def _reload_manifest(self) -> None:
        manifest = json.loads((self.folder / "manifest.json").read_text())
        self.training = manifest.get("training") or {}
        self.base_model = manifest.get("base_model") or self.base_model
        self.phases = (manifest.get("phases") or {}) | {k: v for k, v in self.phases.items() if k.startswith("start")}

    def _start(self) -> str | None:
        """Claim the trial's folder; None, or why the trial cannot run there. A rerun (resume after a kill,
        retry after a failure) starts from a clean folder, but only files this trial wrote are removed: the
        folder must carry this trial's owner mark (or, from older runs, its manifest)."""
        if self.folder.exists() and (
            not self.folder.is_dir() or any(p.name not in EXECUTOR_FILES for p in self.folder.iterdir())
        ):
            if not self._owns_folder():
                return (
                    f"{self.folder} holds files tunegate did not write for this trial; move them away or "
                    "start a new run"
                )
            for stale in ("adapter", "checkpoints", "train_log.jsonl", "error.log", "manifest.json"):
                path = self.folder / stale
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / OWNER_MARK).write_text(json.dumps(self._owner()))
        self.store.update_trial(
            self.trial.id, status="running", error=None, folder=str(self.folder), started_at=stamp(), finished_at=None
        )
        self.console.rule(f"[bold]{self.arm.name}[/] ({self.arm.type})")

    def _owner(self) -> dict[str, Any]:
        return {"run_id": self.job.run_id, "trial": self.arm.name, "store": self.store.where}

    def _owns_folder(self) -> bool:
        for name in (OWNER_MARK, "manifest.json"):
            try:
                found = json.loads((self.folder / name).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(found, dict) and all(found.get(k) == self._owner()[k] for k in ("run_id", "trial")):
                return True
        return False

    def _reason(self, exc: Exception) -> str:

        if isinstance(exc, (TrainingFailed, UserError)):
            return str(exc)
        if out_of_memory(exc):
            return f"out of memory: {(str(exc) or type(exc).__name__).splitlines()[0]}"
        (self.folder / "error.log").write_text(traceback.format_exc())
        return f"{type(exc).__name__}: {exc} (traceback in {self.folder / 'error.log'})"

    def _fail(self, reason: str) -> TrialResult:
        self.store.update_trial(self.trial.id, status="failed", error=reason, finished_at=stamp())
        self.console.print(f"  [red]{self.arm.name}: failed[/] — {escape(reason)}", highlight=False)
        return TrialResult(self.arm.name, "failed", reason)

    def _train(self) -> None:

        arm, plan = self.arm, self.plan
        init: Path | None = None
        if arm.type == "dpo":
            if arm.from_arm:
                parent = self.store.get_trial(f"{self.job.run_id}/{arm.from_arm}")
                if parent.status not in ("finished", "trained") and not has_trained(parent):
                    raise TrainingFailed(f"from_arm '{arm.from_arm}' has not finished (status {parent.status})")
                parent_weights = Path(parent.folder) / "adapter"
                if parent.arm_type == "full":
                    self.base_model = str(parent_weights)  # LoRA-DPO on top of the fully fine-tuned weights
                else:
                    self.base_model = trial_base(plan.model, parent.folder)
                    init = parent_weights
            prefs = load_pairs(plan.data.preference or "")
            started = time.perf_counter()
            result = train_dpo(
                arm,
                self.base_model,
                prefs,
                self.folder,
                self.device,
                init_adapter=init,
                data_file=plan.data.preference or "",
            )
        else:
            examples = load_examples(plan.data.train or "", plan.data.format)
            started = time.perf_counter()
            result = train_sft(arm, plan.model, examples, self.folder, self.device)
        self.phases["train"] = result.seconds
        self.phases["train_setup"] = max(0.0, time.perf_counter() - started - result.seconds)  # load, wrap, save
        if not self.main:
            return
        self.training = {
            "seconds": result.seconds,
            "tokens_per_second": result.tokens_per_second,
            "peak_memory_gib": result.peak_memory_gib,
            "final_loss": result.final_loss,
            "steps": len(result.steps),
            "init_adapter": str(init) if init else None,
            "fastpath": getattr(result, "fastpath", {}),
        }
        (self.folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in result.steps))
        self.store.add_train_steps(self.trial.id, result.steps)
        self.store.update_trial(
            self.trial.id,
            train_seconds=result.seconds,
            tokens_per_second=result.tokens_per_second,
            peak_memory_gib=result.peak_memory_gib,
            final_loss=result.final_loss,
        )

    def _evaluate(self) -> None:

        arm, plan = self.arm, self.plan
        examples = (
            load_examples(plan.data.train, plan.data.format)
            if arm.type in ("prompt", "rag") and plan.data.train
            else []
        )
        started = time.perf_counter()
        model, tok = load_trial_model(self.base_model, self.folder if arm.type in TRAINED else "", self.device)
        self.phases["load"] = time.perf_counter() - started
        shaper = shaper_for(arm, examples)
        for name in plan.suites:
            suite = suite_registry.load(name)
            with (
                _progress(self.console, f"{arm.name} · {suite.name}", len(suite.items)) as advance,
                tracing.attributes(run_id=self.job.run_id, trial=arm.name),
                judge.using_store(self.store),
            ):
                result = evaluate(
                    model,
                    tok,
                    suite,
                    shaper=shaper,
                    progress=advance,
                    device_batch=self.job.device_batch,
                    numerics=self.job.eval_numerics,
                )
            self.phases[f"eval:{suite.name}"] = result.seconds
            started = time.perf_counter()
            self.store.save_evaluation(self.trial.id, result)
            self.phases["store"] = self.phases.get("store", 0.0) + time.perf_counter() - started
            summary = ", ".join(f"{m}={v[0]:.3f}" for m, v in result.metrics.items())
            self.console.print(f"  {suite.name}: {summary}  ({result.seconds:.1f}s)", highlight=False)
        del model

    def _write_manifest(self, *, finished: bool) -> None:

        plan, arm = self.plan, self.arm
        data_files = {k: v for k, v in (("train", plan.data.train), ("preference", plan.data.preference)) if v}
        if isinstance(arm, RagArm) and arm.documents:
            data_files["documents"] = arm.documents
        artifacts = sorted(
            str(p.relative_to(self.folder))
            for p in self.folder.rglob("*")
            if p.is_file() and "checkpoints" not in p.parts and p.name != "manifest.json"
        )
        manifest = {
            "plan": plan.name,
            "run_id": self.job.run_id,
            "trial": arm.name,
            "arm": json.loads(arm.model_dump_json()),
            "resolved_plan": json.loads(plan.model_dump_json()),
            "model": plan.model,
            "model_source": resolve(plan.model).source,
            "base_model": self.base_model,
            "device": self.device,
            "device_name": device_name(self.device),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "data": {k: {"path": v, "sha256": file_sha256(v)} for k, v in data_files.items()},
            "suites": {s: suite_registry.load(s).version for s in plan.suites},
            "seed": getattr(arm, "seed", plan.seed),
            "plan_seed": plan.seed,
            "versions": versions(),
            "git_sha": git_sha(),
            "created_at": stamp(),
            "training": self.training,
            "phases": self.phases,
            "process": {
                "pid": os.getpid(),
                "trials_before": self.trials_before,
                "model_reads_from_disk": dict(DISK_LOADS),
            },
            "status": "finished" if finished else "running",
            "artifacts": artifacts + ["manifest.json"],
        }
        (self.folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error, Python's MemoryError, or the CPU allocator's refusal (a RuntimeError)."""
    import torch

    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    )


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _progress(console: Console, label: str, total: int) -> Any:
    class _Bar:
        def __enter__(self) -> Callable[[int], None]:
            self.p = Progress(
                TextColumn("  {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self.p.start()
            task = self.p.add_task(label, total=total)
            return lambda n: self.p.advance(task, n)

        def __exit__(self, *exc: object) -> None:
            self.p.stop()

    return _Bar()
