"""`tunegate run`: execute a plan's trials in order, score each on every suite, record all in the store.

A trial is marked finished only after its evaluations are committed, so a run killed at any moment
resumes (`--resume`) without losing or repeating a finished trial. A trial that diverges, runs out
of memory or breaks is marked failed with its reason and the run goes on.
"""
from __future__ import annotations

import json
import platform
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness import suites as suite_registry
from harness.arms import shaper_for
from harness.data import Example, Preference, file_sha256, load_examples, load_preferences
from harness.evaluation import evaluate
from harness.models import default_device, load_model, resolve
from harness.plan import TRAINED, Plan, load_plan, plan_hash, trials
from harness.store import Store
from harness.train import TrainingFailed, train_dpo, train_sft

LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "lm_eval")


@dataclass
class RunOutcome:
    run_id: int
    finished: list[str]
    failed: dict[str, str]
    skipped: list[str]


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
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def ordered(arms: list[Any]) -> list[Any]:
    """DPO arms that continue an SFT arm run after it; everything else keeps plan order."""
    first = [a for a in arms if not (a.type == "dpo" and a.from_arm)]
    return first + [a for a in arms if a.type == "dpo" and a.from_arm]


def load_trial_model(base_spec: str, trial_folder: str | Path, device: str | None = None) -> tuple[Any, Any]:
    """The model a trial produced: base + LoRA adapter, a full fine-tuned folder, or the base itself."""
    folder = Path(trial_folder) / "adapter" if trial_folder else None
    if folder is None or not folder.exists():
        return load_model(base_spec, device)
    if (folder / "adapter_config.json").exists():
        from peft import PeftModel

        model, tok = load_model(base_spec, device)
        return PeftModel.from_pretrained(model, str(folder)).eval(), tok
    return load_model(str(folder), device)


class Runner:
    def __init__(self, store: Store, console: Console | None = None, device: str | None = None,
                 runs_dir: str | Path = "runs") -> None:
        self.store, self.console = store, console or Console()
        self.device = device or default_device()
        self.runs_dir = Path(runs_dir).resolve()  # stored paths must not depend on the cwd

    def run(self, plan_path: str | Path, *, resume: bool = False, only: list[str] | None = None) -> RunOutcome:
        plan, _ = load_plan(plan_path)
        arms = ordered(trials(plan))
        if only:
            arms = [a for a in arms if a.name in only]
        # validate everything the trials will need before any training starts
        resolve(plan.model)
        examples = load_examples(plan.data.train, plan.data.format)
        prefs = load_preferences(plan.data.preference) if plan.data.preference else []
        suites = [suite_registry.load(s) for s in plan.suites]

        phash = plan_hash(plan)
        existing = self.store.latest_run(plan.name, phash) if resume else None
        if existing is not None:
            run_id, folder = existing.id, Path(existing.folder)
            self.console.print(f"[bold]Resuming run {run_id}[/] ({plan.name}) in {folder}")
        else:
            plan_dump = json.loads(plan.model_dump_json())
            run_id = self.store.create_run(plan.name, plan_dump, phash, plan.model, "", git_sha())
            folder = self.runs_dir / f"{plan.name}-{run_id}"
            self.store.update_run_folder(run_id, str(folder))
            self.console.print(f"[bold]Run {run_id}[/] ({plan.name}): {len(arms)} trials -> {folder}")
        folder.mkdir(parents=True, exist_ok=True)

        outcome = RunOutcome(run_id, [], {}, [])
        for arm in arms:
            trial = self.store.ensure_trial(run_id, arm.name, arm.name, arm.type, json.loads(arm.model_dump_json()))
            if trial.status == "finished":
                outcome.skipped.append(arm.name)
                self.console.print(f"  [dim]{arm.name}: finished earlier, skipped[/]")
                continue
            error = self._trial(plan, arm, trial.id, run_id, folder / arm.name, examples, prefs, suites)
            if error:
                outcome.failed[arm.name] = error
                self.console.print(f"  [red]{arm.name}: failed[/] — {error}")
            else:
                outcome.finished.append(arm.name)
        status = "failed" if outcome.failed else "finished"
        self.store.finish_run(run_id, status)
        return outcome

    def _trial(self, plan: Plan, arm: Any, trial_id: int, run_id: int, folder: Path, examples: list[Example],
               prefs: list[Preference], suites: list[Any]) -> str | None:
        folder.mkdir(parents=True, exist_ok=True)
        self.store.update_trial(trial_id, status="running", error=None, folder=str(folder),
                                started_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.console.rule(f"[bold]{arm.name}[/] ({arm.type})")
        try:
            if arm.type in TRAINED:
                self._train(plan, arm, trial_id, run_id, folder, examples, prefs)
            self._write_manifest(plan, arm, folder)
            model, tok = load_trial_model(plan.model, folder if arm.type in TRAINED else "", self.device)
            shaper = shaper_for(arm, examples)
            for suite in suites:
                with self._progress(f"{arm.name} · {suite.name}", len(suite.items)) as advance:
                    result = evaluate(model, tok, suite, shaper=shaper, progress=advance)
                self.store.save_evaluation(trial_id, result)
                summary = ", ".join(f"{m}={v[0]:.3f}" for m, v in result.metrics.items())
                self.console.print(f"  {suite.name}: {summary}  ({result.seconds:.1f}s)")
        except TrainingFailed as exc:
            return self._fail(trial_id, folder, str(exc))
        except Exception as exc:  # noqa: BLE001 - one broken trial must not stop the sweep
            (folder / "error.log").write_text(traceback.format_exc())
            return self._fail(trial_id, folder, f"{type(exc).__name__}: {exc} (traceback in {folder / 'error.log'})")
        self.store.update_trial(trial_id, status="finished", finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        return None

    def _fail(self, trial_id: int, folder: Path, reason: str) -> str:
        self.store.update_trial(trial_id, status="failed", error=reason)
        return reason

    def _train(self, plan: Plan, arm: Any, trial_id: int, run_id: int, folder: Path, examples: list[Example],
               prefs: list[Preference]) -> None:
        if arm.type == "dpo":
            init = None
            if arm.from_arm:
                parent = self.store.trial(f"{run_id}/{arm.from_arm}")
                if parent.status != "finished":
                    raise TrainingFailed(f"from_arm '{arm.from_arm}' has not finished (status {parent.status})")
                init = Path(parent.folder) / "adapter"
            result = train_dpo(arm, plan.model, prefs, folder, self.device, init_adapter=init)
        else:
            result = train_sft(arm, plan.model, examples, folder, self.device)
        (folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in result.steps))
        self.store.add_train_steps(trial_id, result.steps)
        self.store.update_trial(trial_id, train_seconds=result.seconds, tokens_per_second=result.tokens_per_second,
                                peak_memory_gib=result.peak_memory_gib, final_loss=result.final_loss)

    def _write_manifest(self, plan: Plan, arm: Any, folder: Path) -> None:
        data_files = {k: v for k, v in (("train", plan.data.train), ("preference", plan.data.preference)) if v}
        manifest = {
            "plan": plan.name, "arm": json.loads(arm.model_dump_json()), "model": plan.model,
            "model_source": resolve(plan.model).source, "device": self.device,
            "data": {k: {"path": v, "sha256": file_sha256(v)} for k, v in data_files.items()},
            "suites": {s: suite_registry.load(s).version for s in plan.suites},
            "seed": getattr(arm, "seed", plan.seed), "versions": versions(), "git_sha": git_sha(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))

    def _progress(self, label: str, total: int) -> Any:
        console = self.console

        class _Bar:
            def __enter__(self) -> Callable[[int], None]:
                self.p = Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console, transient=True)
                self.p.start()
                task = self.p.add_task(label, total=total)
                return lambda n: self.p.advance(task, n)

            def __exit__(self, *exc: Any) -> None:
                self.p.stop()

        return _Bar()
