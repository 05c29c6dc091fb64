"""`tunegate demo`: the whole product on the default model, on a laptop CPU, in a few minutes.

advise (shipped answers) -> run the demo plan (baseline vs LoRA) -> compare with paired intervals
-> gate with the shipped policy -> static HTML report -> how to open the app.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.panel import Panel

from advisor.cli import advise_command
from harness.bundled import demo_dir, suites_dir
from harness.cli._console import print_decision, print_run_comparison
from harness.gate._decide import decide
from harness.run._runner import Runner
from harness.store._store import Store
from harness.ui._report import write_html

DEMO = demo_dir()
TASK = suites_dir() / "json_extract"


def demo_plan(steps: int | None, folder: Path) -> Path:
    """The shipped plan with absolute data paths (and optionally fewer steps), so it runs from any directory."""
    plan = yaml.safe_load((DEMO / "plan.yaml").read_text())
    plan["data"]["train"] = str(TASK / "train.jsonl")
    plan["gate"] = str(DEMO / plan["gate"])
    for arm in plan["arms"]:
        if steps and "max_steps" in arm:
            arm["max_steps"] = steps
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def run_demo(
    console: Console,
    store_ref: str | None = None,
    steps: int | None = None,
    report_path: Path | None = None,
    runs_dir: Path = Path("runs"),
) -> int:

    started = time.perf_counter()
    console.print(
        Panel.fit(
            "[bold]tunegate demo[/]: should we fine-tune SmolLM2-135M for compact-JSON extraction, and did it work?",
            border_style="cyan",
        )
    )
    console.rule("[bold]1. Advisor[/]")
    code = advise_command(
        answers_file=DEMO / "answers.yaml",
        interactive=False,
        train=TASK / "train.jsonl",
        test=TASK / "items.jsonl",
        write=None,
        json_out=False,
        console=console,
    )
    if code != 0:
        return code

    console.rule("[bold]2. Experiment: baseline vs LoRA[/]")
    store = Store(store_ref)
    plan_path = demo_plan(steps, runs_dir / "demo-plan")
    outcome = Runner(store, console, runs_dir=runs_dir).run(plan_path)
    if outcome.failed:
        console.print(f"[red]trials failed:[/] {outcome.failed}")
        return 1

    console.rule("[bold]3. Comparison[/]")
    print_run_comparison(store, outcome.run_id, out=console)

    console.rule("[bold]4. Gate[/]")
    decision = decide(store, DEMO / "gate.yaml", f"{outcome.run_id}/lora")
    print_decision(decision, out=console)

    console.rule("[bold]5. Report[/]")

    report = write_html(store, str(outcome.run_id), report_path or runs_dir / "demo" / "report.html")
    console.print(f"HTML report: [bold]{report}[/]")
    console.print(
        f"Streamlit app on the same store: [bold]tunegate app --store {store.url}[/]  "
        f"(or: TUNEGATE_STORE={store.url} streamlit run app.py in a checkout)"
    )
    console.print(
        f"Gate in CI: tunegate gate --policy {DEMO / 'gate.yaml'} --candidate {outcome.run_id}/lora "
        f"--store {store.url} --junit gate.xml"
    )
    console.print(f"demo finished in {time.perf_counter() - started:.0f}s")
    return decision.exit_code
