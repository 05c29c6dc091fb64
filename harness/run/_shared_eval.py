"""Scoring several trained LoRA adapters of one run together: one base model, every adapter loaded beside the
others, each suite's items for all adapters in shared batches (PEFT mixed-adapter inference).

A trial whose adapter can share a pass (a LoRA adapter, no DoRA, on the plan's own base model) is trained with
`defer_eval` and left `trained`; the executor then hands the group to one worker, which scores it here and
marks each trial finished. Per item the results are those of scoring each adapter alone; if the shared pass
breaks, each trial is scored alone instead, so a problem here never costs a trial its result.
"""

from __future__ import annotations

import json
import time

from peft import PeftModel
from rich.console import Console

from harness import tracing
from harness.evaluation import _suite as suite_registry
from harness.evaluation._evaluate import evaluate_adapters
from harness.model._load import load_model
from harness.run._jobs import TrialJob, TrialResult
from harness.run._provenance import stamp
from harness.run._trial import _free_memory, _progress, _TrialExecution, run_trial
from harness.scorers import _judge_client as judge


def _adapter_is_plain_lora(execution: _TrialExecution) -> bool:
    config_file = execution.folder / "adapter" / "adapter_config.json"
    if not config_file.exists():
        return False
    config = json.loads(config_file.read_text())
    return (
        config.get("peft_type") == "LORA"
        and not config.get("use_dora")
        and execution.base_model == execution.plan.model
    )


def score_together(jobs: list[TrialJob], console: Console | None = None) -> list[TrialResult]:
    """Score the trained adapters of `jobs` (one run) in one pass; trials that cannot share are scored alone."""
    console = console or Console()
    executions = []
    results: list[TrialResult] = []
    for job in jobs:
        execution = _TrialExecution(job, console)
        if execution.trial.status != "trained" or not (execution.folder / "manifest.json").exists():
            results.append(run_trial(job, console))  # not trained yet (or nothing on disk): the full trial
            continue
        execution._reload_manifest()
        if _adapter_is_plain_lora(execution):
            executions.append(execution)
        else:
            results.append(run_trial(job, console))
    if len(executions) == 1:
        results.append(run_trial(executions[0].job, console))
    elif executions:
        try:
            results += _shared_pass(executions, console)
        except Exception as exc:  # noqa: BLE001 - score each alone instead; say why once
            console.print(
                f"  [yellow]shared evaluation failed ({type(exc).__name__}: {exc}); scoring each adapter alone[/]",
                highlight=False,
            )
            _free_memory()
            results += [run_trial(execution.job, console) for execution in executions]
    return results


def _shared_pass(executions: list[_TrialExecution], console: Console) -> list[TrialResult]:
    first = executions[0]
    plan, store, device = first.plan, first.store, first.device
    names = [f"trial{k}" for k in range(len(executions))]  # adapter names are module keys: no dots allowed
    console.rule(f"[bold]{len(executions)} adapters scored together[/] ({', '.join(e.arm.name for e in executions)})")
    started = time.perf_counter()
    base, tok = load_model(plan.model, device)
    model = PeftModel.from_pretrained(base, str(first.folder / "adapter"), adapter_name=names[0])
    for name, execution in zip(names[1:], executions[1:], strict=True):
        model.load_adapter(str(execution.folder / "adapter"), adapter_name=name)
    model.eval()
    load_share = (time.perf_counter() - started) / len(executions)
    for execution in executions:
        execution.phases["load"] = load_share
        store.update_trial(execution.trial.id, status="running", error=None)
    for suite_name in plan.suites:
        suite = suite_registry.load(suite_name)
        label = f"{len(executions)} adapters · {suite.name}"
        with (
            _progress(console, label, len(suite.items) * len(executions)) as advance,
            tracing.attributes(run_id=first.job.run_id, trial="shared"),
            judge.using_store(store),
        ):
            by_name = evaluate_adapters(
                model,
                tok,
                suite,
                names,
                progress=advance,
                device_batch=first.job.device_batch,
                numerics=first.job.eval_numerics,
            )
        for name, execution in zip(names, executions, strict=True):
            result = by_name[name]
            execution.phases[f"eval:{suite.name}"] = result.seconds
            saved = time.perf_counter()
            store.save_evaluation(execution.trial.id, result)
            execution.phases["store"] = execution.phases.get("store", 0.0) + time.perf_counter() - saved
            summary = ", ".join(f"{m}={v[0]:.3f}" for m, v in result.metrics.items())
            console.print(f"  {execution.arm.name} · {suite.name}: {summary}", highlight=False)
    del model, base
    _free_memory()
    out = []
    for execution in executions:
        execution.phases["shared_eval_with"] = float(len(executions))
        execution._write_manifest(finished=True)
        store.update_trial(execution.trial.id, status="finished", error=None, finished_at=stamp())
        out.append(TrialResult(execution.arm.name, "finished"))
    return out
