"""The `tunegate` command line: advise, run, eval, gate, report, app, demo, runs, show."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import typer
from rich.table import Table

from advisor.cli import advise_command
from harness import tracing, ui
from harness.base._errors import UserError
from harness.base._kinds import UNTRAINED
from harness.cli._console import (
    _f,
    console,
    err_console,
    print_decision,
    print_numerics_by_trial,
    print_run_comparison,
    printable,
    safe,
)
from harness.cli._safety import app as safety_app
from harness.evaluation._suite import load
from harness.gate._decide import decide
from harness.gate._outputs import to_junit, to_markdown
from harness.model._load import load_model, resolve
from harness.redact import redact
from harness.scorers import _judge_client as judge
from harness.store._engine import store_url
from harness.store._export import export_results as write
from harness.store._store import Store
from harness.ui._report import write_html

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="tunegate: should we fine-tune, and did it work? Plan, train, score, compare and gate.",
)
# logs and CI output are read in wide windows: do not squeeze tables into 80 columns when not on a terminal
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="Store path or SQLAlchemy URL (default: $TUNEGATE_STORE or runs/tunegate.db)."),
]
EvalNumericsOpt = Annotated[
    str | None,
    typer.Option(
        "--eval-numerics",
        help="invariant: every score bit-identical whatever shares its batch (docs/numerics.md) | "
        "fast: the batched path, whose last bits depend on the batch. Default: "
        "$TUNEGATE_EVAL_NUMERICS, else invariant.",
    ),
]


def _eval_numerics(value: str | None) -> str:
    from harness.model._numerics import resolve_mode  # torch-free

    return resolve_mode(value)


def _store(store: str | None, *, must_exist: bool = False) -> Any:
    """The store; `must_exist` for commands that only read it (or, like the gate, only judge what it holds): a
    mistyped path is an error, never a new empty store."""
    return Store(store, must_exist=must_exist)


def _fail(exc: UserError) -> None:
    err_console.print(
        "error: " + printable(redact(str(exc))), style="bold red", highlight=False, markup=False, soft_wrap=True
    )
    sys.exit(2)


@app.command()
def advise(
    answers: Annotated[Path | None, typer.Option("--answers", "-a", help="Answers YAML (skip the questions).")] = None,
    train: Annotated[Path | None, typer.Option(help="Training JSONL to audit.")] = None,
    test: Annotated[Path | None, typer.Option(help="Test JSONL, checked for overlap with train.")] = None,
    write: Annotated[Path | None, typer.Option("--write", "-w", help="Write the experiment plan YAML here.")] = None,
    preference: Annotated[
        Path | None, typer.Option(help="Preference JSONL (prompt/chosen/rejected) for a DPO arm.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Base model spec for the plan (default: a model of the size the answers give)."),
    ] = None,
    explain: Annotated[
        bool, typer.Option(help="Ask the configured LLM (TUNEGATE_ADVISOR_*) to explain, using the advisor's tools.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Ask about data, volatility, latency, privacy and hardware; recommend prompting, RAG or fine-tuning."""

    code = advise_command(
        answers_file=answers,
        interactive=answers is None,
        train=train,
        test=test,
        write=write,
        json_out=as_json,
        console=console,
        explain=explain,
        preference=preference,
        model=model,
    )
    raise typer.Exit(code)


@app.command()
def run(
    plan: Annotated[Path, typer.Argument(help="Experiment plan YAML.")],
    resume: Annotated[bool, typer.Option(help="Continue the latest run of this plan; skip finished trials.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the trials with a GPU memory estimate for each; train nothing.")
    ] = False,
    only: Annotated[list[str] | None, typer.Option(help="Run only these arms/trials.")] = None,
    executor: Annotated[
        str,
        typer.Option(
            help="local: in this process on a CPU, persistent workers on GPUs | "
            "workers: persistent workers (CPU too) | process: a fresh "
            "process per trial | ray: Ray tasks."
        ),
    ] = "local",
    gpus: Annotated[
        str | None, typer.Option(help="GPUs to use: all (default), none, a count (4) or ids (0,2,3).")
    ] = None,
    trials_per_gpu: Annotated[
        str,
        typer.Option(help="Trials at once on each GPU: auto (from free memory and the memory estimate) or a count."),
    ] = "auto",
    spare_workers: Annotated[
        str,
        typer.Option(
            help="Persistent workers beyond the slots for trials that continue "
            "another (DPO after SFT), started as soon as the parent has "
            "trained: auto (one per GPU where memory fits) or a count "
            "(default 0: none)."
        ),
    ] = "0",
    eval_batch: Annotated[
        str,
        typer.Option(
            help="device: on a GPU, size generation batches from free memory | suite: each suite's batch_size."
        ),
    ] = "device",
    shared_eval: Annotated[
        bool,
        typer.Option(
            help="Persistent workers: score the trained LoRA adapters together "
            "in mixed-adapter batches (PEFT adapter_names) at the end."
        ),
    ] = False,
    eval_numerics: EvalNumericsOpt = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: start a local one).")] = None,
    store: StoreOpt = None,
) -> None:
    """Run a plan: every arm trained (if needed) and scored on every suite; results go to the store."""
    from harness.run._capacity import parse_spare_workers, parse_trials_per_gpu  # with the runner, off the fast paths
    from harness.run._devices import parse_gpus  # heavy: the runner pulls torch; keeps `tunegate --help` fast
    from harness.run._preflight import dry_run as plan_table  # heavy: torch via the runner
    from harness.run._runner import EXECUTORS, Runner  # heavy: torch via the runner

    if executor not in EXECUTORS:  # the dry run refuses what the run would
        raise UserError(f"unknown executor '{executor}': use {', '.join(EXECUTORS)}", field="--executor")
    if eval_batch not in ("device", "suite"):
        raise UserError(f"'{eval_batch}' is not an eval batch rule: use device or suite", field="--eval-batch")
    numerics = _eval_numerics(eval_numerics)
    per_gpu = parse_trials_per_gpu(trials_per_gpu)
    spares = parse_spare_workers(spare_workers)
    if dry_run:
        console.print(plan_table(plan, console, executor=executor, gpus=parse_gpus(gpus)))
        return
    outcome = Runner(_store(store), console).run(
        plan,
        resume=resume,
        only=only,
        executor=executor,
        gpus=parse_gpus(gpus),
        ray_address=ray_address,
        trials_per_gpu=per_gpu,
        device_batch=eval_batch == "device",
        shared_eval=shared_eval,
        spares=spares,
        eval_numerics=numerics,
    )
    print_run_comparison(_store(store), outcome.run_id)
    raise typer.Exit(1 if outcome.failed else 0)


@app.command("eval")
def eval_(
    target: Annotated[str, typer.Argument(help="A model spec (alias, folder, .gguf, hub id) or a trial RUN/TRIAL.")],
    suite: Annotated[list[str], typer.Option("--suite", "-s", help="Suite name or path (repeatable).")],
    eval_numerics: EvalNumericsOpt = None,
    store: StoreOpt = None,
) -> None:
    """Score a model or a finished trial on suites; results land in the store."""
    numerics = _eval_numerics(eval_numerics)
    from harness.arms._artifacts import load_trial_model  # heavy: torch via the trial's model
    from harness.evaluation._evaluate import evaluate  # heavy: torch via generation

    st = _store(store)
    suites = [load(s) for s in suite]
    run_id = None
    if "/" in target and not Path(target).exists() and _looks_like_trial(st, target):
        trial = st.get_trial(target)
        base = st.get_run(trial.run_id).base_model
        model, tok = load_trial_model(base, trial.folder if trial.arm_type not in UNTRAINED else "")
        trial_id = trial.id
    else:
        if resolve(target).kind == "hub" and not _hub_can_serve(target):
            raise UserError(
                f"'{target}' is neither a trial in the store ({st.where}) nor a local model, and the "
                "Hugging Face hub cannot be reached (HF_HUB_OFFLINE is set or there is no network) to "
                "fetch it; for a trial give RUN/TRIAL or t<id> (see `tunegate runs`)",
                field="target",
            )
        model, tok = load_model(target)
        run_id = st.create_run(f"eval-{Path(target).name}", {"eval": target, "suites": suite}, "", target, "")
        trial_id = st.ensure_trial(run_id, "model", "model", "baseline", {"model": target}).id
    unscored: list[str] = []
    try:
        for s in suites:
            with tracing.attributes(trial_id=trial_id), judge.using_store(st):
                result = evaluate(model, tok, s, numerics=numerics)
            st.save_evaluation(trial_id, result)
            console.print(
                f"{safe(s.name)}: "
                + ", ".join(
                    f"{m}={v[0]:.3f} (corpus-level, n={v[2]})"
                    if m in result.corpus
                    else f"{m}={v[0]:.3f}±{v[1]:.3f} (n={v[2]})"
                    for m, v in result.metrics.items()
                )
            )
            unscored += [_unscored(s.name, m, result) for m in s.scorer_names if m not in result.metrics]
    except BaseException:
        if run_id is not None:
            st.finish_run(run_id, "failed")
        raise
    status = "failed" if unscored else "finished"
    st.update_trial(trial_id, status=status, error="; ".join(unscored) or None)
    if run_id is not None:
        st.finish_run(run_id, status)
    for problem in unscored:
        err_console.print(
            "error: " + printable(redact(problem)), style="bold red", highlight=False, markup=False, soft_wrap=True
        )
    raise typer.Exit(1 if unscored else 0)


def _unscored(suite: str, metric: str, result: Any) -> str:
    """Why no item got a score for `metric` (every judge call failed, say), for the user."""
    why = next((d[metric] for r in result.items if (d := getattr(r, "details", {})).get(metric)), "")
    return f"{suite}: no item got a '{metric}' score" + (f" (first failure: {why})" if why else "")


def _hub_can_serve(repo_id: str) -> bool:
    """Whether a hub id can be loaded now: it is in the local cache, or the hub is online and reachable
    (checked with one short connection instead of the libraries' minute of retries)."""
    from huggingface_hub import constants, try_to_load_from_cache  # heavy: keeps `tunegate --help` fast

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return True
    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection(
            (endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme == "https" else 80)),
            timeout=3,
        ):
            return True
    except OSError:
        return False


def _looks_like_trial(st: Any, ref: str) -> bool:
    try:
        st.get_trial(ref)
        return True
    except UserError:
        return False


@app.command()
def gate(
    policy: Annotated[Path, typer.Option(help="Gate policy YAML.")],
    candidate: Annotated[str, typer.Option(help="Candidate trial: RUN/TRIAL or t<id>.")],
    baseline: Annotated[
        str | None, typer.Option(help="Baseline trial (default: the policy's baseline arm in the candidate's run).")
    ] = None,
    junit: Annotated[Path | None, typer.Option(help="Write JUnit XML here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the decision as JSON here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write a Markdown summary here (for a PR comment).")] = None,
    store: StoreOpt = None,
) -> None:
    """Decide promotion: exit 0 promote, 1 reject, 2 error (missing or mismatched evidence)."""

    renderers = {"--junit": to_junit, "--json": lambda d: d.to_json(), "--markdown": to_markdown}
    outputs = [
        (path, flag)
        for path, flag in ((junit, "--junit"), (json_out, "--json"), (markdown, "--markdown"))
        if path is not None
    ]
    for path, flag in outputs:  # before anything is decided or recorded: a path it cannot write is exit 2
        check_output_path(path, field=flag)
    st = _store(store, must_exist=True)
    decision = decide(st, policy, candidate, baseline)
    failed = _write_outputs(decision, outputs, renderers)
    if failed:  # the audit row carries the exit code this process returns, and so do the files that were written
        reason = "the gate's output could not be written: " + "; ".join(failed)
        if decision.decision_id is not None:
            st.amend_gate_decision(decision.decision_id, verdict="error", exit_code=2, reason=reason)
        decision.verdict, decision.exit_code, decision.reason = "error", 2, reason
        _write_outputs(decision, outputs, renderers)
    print_decision(decision)
    raise typer.Exit(decision.exit_code)


def _write_outputs(decision: Any, outputs: list[tuple[Path, str]], renderers: dict[str, Any]) -> list[str]:
    """Write each output file; returns what could not be written ('--flag path: why')."""
    failed = []
    for path, flag in outputs:
        try:
            path.write_text(renderers[flag](decision), encoding="utf-8")
        except OSError as exc:
            failed.append(f"{flag} {path}: {exc.strerror or exc}")
    return failed


def check_output_path(path: Path, *, field: str) -> None:
    """A file path this process can write: not a folder, in a folder that exists, writable. Otherwise one
    UserError naming the option (exit 2)."""
    if path.is_dir():
        raise UserError("is a folder; give a file path", file=path, field=field)
    parent = path.parent
    if not parent.is_dir():
        raise UserError(f"the folder {parent} does not exist", file=path, field=field)
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise UserError("cannot write here: permission denied", file=path, field=field)


@app.command()
def report(
    run_ref: Annotated[str, typer.Argument(help="Run id or name.")],
    html: Annotated[Path, typer.Option(help="Output HTML file.")] = Path("runs/report.html"),
    store: StoreOpt = None,
) -> None:
    """Write one self-contained HTML report of a run (tables, curves, per-item outputs)."""

    path = write_html(_store(store, must_exist=True), run_ref, html)
    console.print(f"report written: {path}")


@app.command("app")
def app_(
    store: StoreOpt = None,
    port: int = 8501,
    address: Annotated[
        str, typer.Option(help="Interface to listen on (0.0.0.0 to share on the network).")
    ] = "127.0.0.1",
) -> None:
    """Open the Streamlit comparison app on the store."""

    env = os.environ | {"TUNEGATE_STORE": store_url(store, must_exist=True)}
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(Path(ui.__file__).with_name("app.py")),
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]
    raise typer.Exit(subprocess.call(cmd, env=env))


@app.command()
def runs(
    name: Annotated[str | None, typer.Option(help="Filter by name (substring).")] = None,
    status: Annotated[str | None, typer.Option(help="running | finished | failed")] = None,
    store: StoreOpt = None,
) -> None:
    """List runs in the store."""
    table = Table("id", "name", "model", "status", "created", "trials")
    st = _store(store, must_exist=True)
    for r in st.runs(name, status):
        trials = st.trials(r.id)
        done = sum(t.status == "finished" for t in trials)
        table.add_row(
            str(r.id), safe(r.name), safe(r.base_model), safe(r.status), safe(r.created_at), f"{done}/{len(trials)}"
        )
    console.print(table)


@app.command()
def show(run_ref: Annotated[str, typer.Argument(help="Run id or name.")], store: StoreOpt = None) -> None:
    """Print a run: its trials, their metrics, and each arm compared with the baseline."""
    st = _store(store, must_exist=True)
    run = st.get_run(run_ref)
    table = Table(
        "trial",
        "type",
        "status",
        "train s",
        "tok/s",
        "peak GiB",
        "final loss",
        "error",
        title=f"run {run.id}: {safe(run.name)} ({safe(run.status)})",
    )
    for t in st.trials(run.id):
        table.add_row(
            safe(t.name),
            safe(t.arm_type),
            safe(t.status),
            _f(t.train_seconds, 1),
            _f(t.tokens_per_second, 0),
            _f(t.peak_memory_gib, 2),
            _f(t.final_loss, 3),
            safe((t.error or "")[:60]),
        )
    console.print(table)
    print_numerics_by_trial(st, run.id)
    print_run_comparison(st, run.id)


@app.command("export")
def export(
    trial: Annotated[str, typer.Argument(help="A finished trained trial: RUN/TRIAL or t<id>.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (must be new or empty).")],
    merge: Annotated[
        bool, typer.Option(help="Merge the adapter into the base weights (a plain model folder).")
    ] = False,
    store: StoreOpt = None,
) -> None:
    """Export a trial for serving: its adapter alone, or (--merge) base weights with the adapter merged in."""
    from harness.arms._artifacts import export_trial  # heavy: torch via the trial's model

    done = export_trial(_store(store, must_exist=True), trial, out, merge=merge)
    console.print(f"exported {safe(done.trial)} ({done.kind}, base {safe(done.base_model)}) to {safe(done.folder)}")


@app.command("export-results")
def export_results(
    out: Annotated[Path, typer.Argument(help="Output file: .csv, .parquet or .json.")],
    run_ref: Annotated[
        list[str] | None, typer.Option("--run", help="Run id or name (repeatable; default: every run).")
    ] = None,
    level: Annotated[
        str,
        typer.Option(help="metrics: a row per trial, suite and metric; items: a row per item with output and scores."),
    ] = "metrics",
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv | parquet | json (default: from the file suffix).")
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Write results from the store as CSV, Parquet or JSON, for analysis elsewhere."""

    rows = write(_store(store, must_exist=True), out, runs=run_ref, level=level, fmt=fmt)
    console.print(f"{rows} rows written to {out}")


@app.command()
def rollback(
    reason: Annotated[str, typer.Option(help="Why (recorded with the rollback).")] = "", store: StoreOpt = None
) -> None:
    """Promote again the model promoted before the current one (recorded as a rollback)."""
    st = _store(store, must_exist=True)
    p = st.rollback(reason)

    def label(trial_id: int | None) -> str:
        t = st.get_trial(f"t{trial_id}")
        return safe(f"{st.get_run(t.run_id).name}/{t.name} (t{t.id})")

    console.print(
        f"rolled back: {label(p.previous_trial_id)} -> {label(p.trial_id)} is the promoted model again "
        f"(promotion #{p.id})"
    )


@app.command()
def demo(steps: Annotated[int, typer.Option(help="LoRA optimizer steps.")] = 0, store: StoreOpt = None) -> None:
    """The whole path on the default model: advise -> train LoRA -> evaluate -> compare -> gate -> report."""
    from harness.cli._demo import run_demo  # heavy: torch via the runner

    raise typer.Exit(run_demo(console, store, steps or None))


def _add_subcommands() -> None:

    app.add_typer(
        safety_app, name="safety", help="Refusal classifier accuracy and AdvBench/XSTest/HarmBench converters."
    )


_add_subcommands()


def main() -> None:
    try:
        app()
    except UserError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
