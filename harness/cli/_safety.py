"""`tunegate safety`: the refusal classifier's accuracy and converters for public safety sets."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from harness.base._errors import UserError
from harness.scorers._safety import (
    HARMBENCH_TEXT_CATEGORIES,
    LABELS_PATH,
    advbench_to_suite,
    classifier_accuracy,
    classify,
    harmbench_to_suite,
    xstest_to_suites,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Safety probes: the refusal classifier and loaders for AdvBench, XSTest and HarmBench.",
)
Out = Annotated[Path, typer.Argument(help="Suite folder to write.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing suite there.")]


@app.command()
def accuracy(
    labels: Annotated[Path | None, typer.Option(help="Labelled JSONL (output, is_refusal).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Accuracy, precision and recall of the refusal classifier on a labelled set."""
    report = classifier_accuracy(labels or LABELS_PATH)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "path": str(report.path),
                    "n": report.n,
                    "accuracy": report.accuracy,
                    "precision": report.precision,
                    "recall": report.recall,
                    "confusion": report.confusion,
                    "mistakes": [{k: m[k] for k in ("id", "is_refusal", "reason", "output")} for m in report.mistakes],
                },
                indent=2,
            )
        )
    else:
        typer.echo(report.text())


@app.command("classify")
def classify_command(
    text: Annotated[str | None, typer.Argument(help="Model output (default: stdin).")] = None,
) -> None:
    """Say whether one output is a refusal, and which rule decided."""
    verdict = classify(text if text is not None else sys.stdin.read())
    typer.echo(
        f"{'refusal' if verdict.refusal else 'compliance'}: {verdict.reason}"
        + (f" ({verdict.evidence!r})" if verdict.evidence else "")
    )


@app.command()
def advbench(
    csv_file: Annotated[Path, typer.Argument(help="AdvBench harmful_behaviors.csv (goal,target).")],
    out: Out,
    name: Annotated[str | None, typer.Option(help="Suite name (default: folder name).")] = None,
    limit: Annotated[int | None, typer.Option(help="Keep the first N behaviors.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Turn AdvBench into a harmful-request suite (metric refusal)."""
    typer.echo(f"wrote {advbench_to_suite(csv_file, out, name=name, limit=limit, overwrite=overwrite)}")


@app.command()
def xstest(
    csv_file: Annotated[Path, typer.Argument(help="XSTest prompts CSV (prompt,type,label,...).")],
    out: Annotated[Path, typer.Argument(help="Folder to hold <name>_safe and <name>_unsafe.")],
    name: Annotated[str, typer.Option(help="Suite name prefix.")] = "xstest",
    overwrite: Overwrite = False,
) -> None:
    """Turn XSTest into an over-refusal suite (metric complied) and its unsafe contrasts (metric refusal)."""
    for group, path in xstest_to_suites(csv_file, out, name=name, overwrite=overwrite).items():
        typer.echo(f"wrote {group}: {path}")


@app.command()
def harmbench(
    csv_file: Annotated[Path, typer.Argument(help="HarmBench behaviors CSV.")],
    out: Out,
    name: Annotated[str | None, typer.Option(help="Suite name (default: folder name).")] = None,
    category: Annotated[
        list[str] | None,
        typer.Option(help="FunctionalCategory to keep (repeatable; default standard and contextual)."),
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Turn HarmBench behaviors into a harmful-request suite (metric refusal)."""
    cats = tuple(category) if category else HARMBENCH_TEXT_CATEGORIES
    typer.echo(f"wrote {harmbench_to_suite(csv_file, out, name=name, functional_categories=cats, overwrite=overwrite)}")


def main() -> None:
    try:
        app()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
