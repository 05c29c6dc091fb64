"""`tunegate advise`: the command-line front end (the harness's typer CLI calls `advise_command`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from advisor.advice import AdviceResult, advise
from advisor.agent import AgentConfig, AgentError, explain
from advisor.errors import AdvisorInputError
from advisor.hardware import probe_hardware
from advisor.planner import save_plan, write_plan
from advisor.questions import Answers, ask_answers, load_answers
from harness.base._data import load_preferences
from harness.base._errors import UserError, printable
from harness.plan import Plan
from harness.redact import redact


def _interactive_defaults(answers_file: Path | None) -> Answers:
    """Defaults for the questions: the answers file if given, else this machine's GPUs."""
    if answers_file is not None:
        return load_answers(answers_file)
    hw = probe_hardware()
    if hw.gpu_count:
        return Answers(gpu_count=hw.gpu_count, vram_gib_per_gpu=hw.min_vram_gib)
    return Answers()


def _check_plan(plan: dict[str, Any], console: Console) -> None:
    """Validate against the harness's plan schema."""
    try:
        Plan.model_validate(plan)
    except ValidationError as exc:
        console.print(
            f"[yellow]warning: the written plan does not validate: {exc.errors()[0]['msg']}[/]", highlight=False
        )


def advise_command(
    answers_file: Path | None,
    interactive: bool,
    train: Path | None,
    test: Path | None,
    write: Path | None,
    json_out: bool,
    console: Console,
    *,
    explain: bool = False,
    preference: Path | None = None,
    model: str | None = None,
    suites: list[str] | None = None,
    rules: Path | None = None,
) -> int:
    """Ask or load the answers, audit the files, recommend, optionally write a plan. Returns the exit code:
    0 on success, 2 for bad input (with a message naming file, line and field, no traceback)."""
    try:
        if interactive:
            try:
                answers = ask_answers(console, _interactive_defaults(answers_file))
            except EOFError:
                raise AdvisorInputError(
                    "no answer on standard input; pass --answers FILE when not in a terminal"
                ) from None
        elif answers_file is not None:
            answers = load_answers(answers_file)
        else:
            raise AdvisorInputError("give an answers file (--answers FILE) or answer the questions interactively")
        if write is not None and train is None:
            raise AdvisorInputError(
                "writing a plan needs the training file (--train) for its data.train", field="write"
            )
        result = advise(answers, train, test, rules=rules)
        if preference is not None:  # read as `tunegate run` reads it, before it goes into a plan
            load_preferences(preference)
        plan: dict[str, Any] | None = None
        notes: list[str] = []
        if write is not None and train is not None:
            plan = write_plan(
                result.recommendation,
                result.answers,
                train,
                suites,
                model=model,
                preference_path=preference,
                notes=notes,
            )
            _check_plan(plan, console)
            save_plan(write, plan, result.recommendation, notes)
        explanation = _explain(result, train, test, console) if explain else None
    except UserError as exc:  # one line, however narrow the terminal
        console.print(f"[bold red]error:[/] {_shown(exc)}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except OSError as exc:  # unreadable file, a folder given as a file, no permission ...
        console.print(f"[bold red]error:[/] {_shown(exc)}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130

    if json_out:
        payload = result.model_dump(mode="json") | {
            "plan": plan,
            "plan_path": str(write) if write else None,
            "notes": notes,
            "explanation": explanation,
        }
        console.print(json.dumps(payload, indent=2), markup=False, highlight=False, emoji=False, soft_wrap=True)
        return 0
    result.render(console)
    for note in notes:
        console.print(f"[yellow]note:[/] {_shown(note)}", highlight=False)
    if write is not None:
        console.print(
            f"Plan written to [bold]{_shown(write)}[/]: run it with `tunegate run {_shown(write)}`", highlight=False
        )
    if explanation:
        console.print(f"\n[bold]Advisor's explanation:[/]\n{_shown(explanation, keep=chr(10))}", highlight=False)
    return 0


def _shown(text: object, keep: str = "") -> str:
    """Text from a file, a file name or a model for the terminal: credentials redacted, control characters
    (ESC, BEL: a window-title escape) shown as escapes, Rich markup shown literally."""
    return escape(printable(redact(str(text)), keep=keep))


def _explain(result: AdviceResult, train: Path | None, test: Path | None, console: Console) -> str | None:
    config = AgentConfig.from_env()
    if config is None:
        console.print(
            "[yellow]--explain needs TUNEGATE_ADVISOR_BASE_URL and TUNEGATE_ADVISOR_MODEL; skipping the explanation.[/]"
        )
        return None
    try:
        text = explain(result, config, train_path=train, test_path=test).text
    except AgentError as exc:
        console.print(f"[yellow]explanation unavailable: {_shown(exc)}[/]", highlight=False)
        return None
    return None if text is None else redact(text, [config.api_key or ""])


def main(argv: list[str] | None = None) -> int:
    """`python -m advisor`: the same command without the harness's CLI."""
    parser = argparse.ArgumentParser(prog="python -m advisor", description="Recommend prompting, RAG or fine-tuning.")
    parser.add_argument("--answers", "-a", type=Path, help="answers YAML (skip the questions)")
    parser.add_argument(
        "--interactive", "-i", action="store_true", help="ask the questions (default without --answers)"
    )
    parser.add_argument("--train", type=Path, help="training JSONL to audit")
    parser.add_argument("--test", type=Path, help="test JSONL, checked for overlap with train")
    parser.add_argument("--preference", type=Path, help="preference JSONL for a dpo arm")
    parser.add_argument("--write", "-w", type=Path, help="write the experiment plan YAML here")
    parser.add_argument(
        "--model", default=None, help="model spec for the plan (default: the known model of model_params_b's size)"
    )
    parser.add_argument("--rules", type=Path, help="rules YAML to use instead of advisor/rules.yaml")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--explain", action="store_true", help="ask the configured LLM to explain the result")
    args = parser.parse_args(argv)
    console = Console()
    return advise_command(
        args.answers,
        args.interactive or args.answers is None,
        args.train,
        args.test,
        args.write,
        args.json,
        console,
        explain=args.explain,
        preference=args.preference,
        model=args.model,
        rules=args.rules,
    )


if __name__ == "__main__":
    sys.exit(main())
