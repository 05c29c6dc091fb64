"""The `tunegate` command line: advise, run, eval, gate, report, app, demo, runs, show."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from harness.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="tunegate: should we fine-tune, and did it work? Plan, train, score, compare and gate.")
console = Console()
err_console = Console(stderr=True)
StoreOpt = Annotated[Optional[str], typer.Option("--store", help="Store path or SQLAlchemy URL "
                                                 "(default: $TUNEGATE_STORE or runs/tunegate.db).")]
REPO = Path(__file__).resolve().parent.parent


def _store(store: str | None) -> Any:
    from harness.store import Store

    return Store(store)


def _fail(exc: UserError) -> None:
    err_console.print("error: " + str(exc), style="bold red", highlight=False, markup=False, soft_wrap=True)
    sys.exit(2)


@app.command()
def advise(answers: Annotated[Optional[Path], typer.Option("--answers", "-a", help="Answers YAML (skip the questions).")] = None,
           train: Annotated[Optional[Path], typer.Option(help="Training JSONL to audit.")] = None,
           test: Annotated[Optional[Path], typer.Option(help="Test JSONL, checked for overlap with train.")] = None,
           write: Annotated[Optional[Path], typer.Option("--write", "-w", help="Write the experiment plan YAML here.")] = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False) -> None:
    """Ask about data, volatility, latency, privacy and hardware; recommend prompting, RAG or fine-tuning."""
    from advisor.cli import advise_command

    code = advise_command(answers_file=answers, interactive=answers is None, train=train, test=test, write=write,
                          json_out=as_json, console=console)
    raise typer.Exit(code)


@app.command()
def run(plan: Annotated[Path, typer.Argument(help="Experiment plan YAML.")],
        resume: Annotated[bool, typer.Option(help="Continue the latest run of this plan; skip finished trials.")] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="List the trials and exit.")] = False,
        only: Annotated[Optional[list[str]], typer.Option(help="Run only these arms/trials.")] = None,
        store: StoreOpt = None) -> None:
    """Run a plan: every arm trained (if needed) and scored on every suite; results go to the store."""
    from harness.plan import load_plan, trials
    from harness.runner import Runner

    if dry_run:
        p, _ = load_plan(plan)
        table = Table("trial", "type", "config", title=f"{p.name}: {len(trials(p))} trials")
        for arm in trials(p):
            cfg = {k: v for k, v in arm.model_dump().items() if k not in ("name", "type")}
            table.add_row(arm.name, arm.type, json.dumps(cfg)[:100])
        console.print(table)
        return
    outcome = Runner(_store(store), console).run(plan, resume=resume, only=only)
    print_run_comparison(_store(store), outcome.run_id)
    raise typer.Exit(1 if outcome.failed else 0)


@app.command("eval")
def eval_(target: Annotated[str, typer.Argument(help="A model spec (alias, folder, .gguf, hub id) or a trial RUN/TRIAL.")],
          suite: Annotated[list[str], typer.Option("--suite", "-s", help="Suite name or path (repeatable).")],
          store: StoreOpt = None) -> None:
    """Score a model or a finished trial on suites; results land in the store."""
    from harness.evaluation import evaluate
    from harness.models import resolve
    from harness.runner import load_trial_model
    from harness.suites import load

    st = _store(store)
    suites = [load(s) for s in suite]
    if "/" in target and not Path(target).exists() and _looks_like_trial(st, target):
        trial = st.trial(target)
        base = st.run(trial.run_id).base_model
        model, tok = load_trial_model(base, trial.folder if trial.arm_type not in ("baseline", "prompt", "rag") else "")
        trial_id = trial.id
    else:
        resolve(target)
        from harness.models import load_model
        from harness.plan import plan_hash  # noqa: F401  (keeps the import graph explicit)

        model, tok = load_model(target)
        run_id = st.create_run(f"eval-{Path(target).name}", {"eval": target, "suites": suite}, "", target, "")
        trial_id = st.ensure_trial(run_id, "model", "model", "baseline", {"model": target}).id
    for s in suites:
        result = evaluate(model, tok, s)
        st.save_evaluation(trial_id, result)
        console.print(f"{s.name}: " + ", ".join(f"{m}={v[0]:.3f}±{v[1]:.3f} (n={v[2]})" for m, v in result.metrics.items()))
    st.update_trial(trial_id, status="finished")


def _looks_like_trial(st: Any, ref: str) -> bool:
    try:
        st.trial(ref)
        return True
    except UserError:
        return False


@app.command()
def gate(policy: Annotated[Path, typer.Option(help="Gate policy YAML.")],
         candidate: Annotated[str, typer.Option(help="Candidate trial: RUN/TRIAL or t<id>.")],
         baseline: Annotated[Optional[str], typer.Option(help="Baseline trial (default: the policy's baseline arm in the candidate's run).")] = None,
         junit: Annotated[Optional[Path], typer.Option(help="Write JUnit XML here.")] = None,
         json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the decision as JSON here.")] = None,
         markdown: Annotated[Optional[Path], typer.Option(help="Write a Markdown summary here (for a PR comment).")] = None,
         store: StoreOpt = None) -> None:
    """Decide promotion: exit 0 promote, 1 reject, 2 error (missing or mismatched evidence)."""
    from harness.gate import decide, to_junit, to_markdown

    decision = decide(_store(store), policy, candidate, baseline)
    print_decision(decision)
    if junit:
        junit.write_text(to_junit(decision))
    if json_out:
        json_out.write_text(decision.to_json())
    if markdown:
        markdown.write_text(to_markdown(decision))
    raise typer.Exit(decision.exit_code)


@app.command()
def report(run_ref: Annotated[str, typer.Argument(help="Run id or name.")],
           html: Annotated[Path, typer.Option(help="Output HTML file.")] = Path("reports/report.html"),
           store: StoreOpt = None) -> None:
    """Write one self-contained HTML report of a run (tables, curves, per-item outputs)."""
    from harness.report import write_html

    path = write_html(_store(store), run_ref, html)
    console.print(f"report written: {path}")


@app.command("app")
def app_(store: StoreOpt = None, port: int = 8501) -> None:
    """Open the Streamlit comparison app on the store."""
    from harness.store import store_url

    env = os.environ | {"TUNEGATE_STORE": store_url(store)}
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    raise typer.Exit(subprocess.call(cmd, env=env))


@app.command()
def runs(name: Annotated[Optional[str], typer.Option(help="Filter by name (substring).")] = None,
         status: Annotated[Optional[str], typer.Option(help="running | finished | failed")] = None,
         store: StoreOpt = None) -> None:
    """List runs in the store."""
    table = Table("id", "name", "model", "status", "created", "trials")
    st = _store(store)
    for r in st.runs(name, status):
        trials = st.trials(r.id)
        done = sum(t.status == "finished" for t in trials)
        table.add_row(str(r.id), r.name, r.base_model, r.status, r.created_at, f"{done}/{len(trials)}")
    console.print(table)


@app.command()
def show(run_ref: Annotated[str, typer.Argument(help="Run id or name.")], store: StoreOpt = None) -> None:
    """Print a run: its trials, their metrics, and each arm compared with the baseline."""
    st = _store(store)
    run = st.run(run_ref)
    table = Table("trial", "type", "status", "train s", "tok/s", "peak GiB", "final loss", "error",
                  title=f"run {run.id}: {run.name} ({run.status})")
    for t in st.trials(run.id):
        table.add_row(t.name, t.arm_type, t.status, _f(t.train_seconds, 1), _f(t.tokens_per_second, 0),
                      _f(t.peak_memory_gib, 2), _f(t.final_loss, 3), (t.error or "")[:60])
    console.print(table)
    print_run_comparison(st, run.id)


def _f(x: float | None, digits: int) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def print_run_comparison(st: Any, run_id: int, baseline: str = "baseline") -> None:
    from harness.compare import compare_trials

    trials = st.trials(run_id)
    base = next((t for t in trials if t.name == baseline and t.status == "finished"), None)
    if base is None:
        return
    for cand in trials:
        if cand.id == base.id or cand.status != "finished":
            continue
        table = Table("suite", "metric", baseline, cand.name, "Δ", "95% CI (paired bootstrap)", "McNemar p", "n",
                      title=f"{cand.name} vs {baseline}")
        for c in compare_trials(st, base, cand):
            s = c.stats
            if s is None:
                table.add_row(c.suite, c.metric, "—", "—", "—", c.problem or "", "", "")
                continue
            style = "green" if s.lo > 0 else ("red" if s.hi < 0 else "")
            table.add_row(c.suite, c.metric + (" *" if c.primary else ""), f"{s.mean_a:.3f}", f"{s.mean_b:.3f}",
                          f"[{style}]{s.delta:+.3f}[/]" if style else f"{s.delta:+.3f}", f"[{s.lo:+.3f}, {s.hi:+.3f}]",
                          "—" if s.mcnemar_p is None else f"{s.mcnemar_p:.3g}", str(s.n))
        console.print(table)


def print_decision(decision: Any) -> None:
    color = {"promote": "green", "reject": "red", "error": "yellow"}[decision.verdict]
    table = Table("rule", "result", "detail", title=f"gate: {decision.candidate} vs {decision.baseline}")
    for r in decision.rules:
        table.add_row(r.name, "[yellow]error[/]" if r.error else ("[green]pass[/]" if r.passed else "[red]FAIL[/]"),
                      r.message)
    console.print(table)
    word = {"promote": "PASS — promote", "reject": "FAIL — reject", "error": "ERROR — cannot decide"}[decision.verdict]
    console.print(f"[bold {color}]Gate: {word}[/] (exit {decision.exit_code}): {decision.reason}")


@app.command()
def demo(steps: Annotated[int, typer.Option(help="LoRA optimizer steps.")] = 0,
         store: StoreOpt = None) -> None:
    """The whole path on the default model: advise -> train LoRA -> evaluate -> compare -> gate -> report."""
    from harness.demo import run_demo

    raise typer.Exit(run_demo(console, store, steps or None))


def main() -> None:
    try:
        app()
    except UserError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
