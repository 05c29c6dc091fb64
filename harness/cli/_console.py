"""Console rendering shared by commands: a run's comparison table and a gate decision."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.analysis._compare import compare_trials
from harness.base._errors import printable
from harness.gate._closeness import phrase
from harness.gate._numerics import UNKNOWN, numerics_of, recorded

console = Console() if sys.stdout.isatty() else Console(width=max(120, int(os.environ.get("COLUMNS") or 0)))
err_console = Console(stderr=True)


def safe(text: object) -> str:
    """`printable` text for a Rich string: its markup (`[link=...]`, `[bold]`) shown literally, not applied."""
    return escape(printable(text))


def _f(x: float | None, digits: int) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def print_run_comparison(st: Any, run_id: int, baseline: str = "baseline", out: Console | None = None) -> None:
    out = out or console

    trials = st.trials(run_id)
    base = next((t for t in trials if t.name == baseline and t.status == "finished"), None)
    if base is None:
        return
    for cand in trials:
        if cand.id == base.id or cand.status != "finished":
            continue
        table = Table(
            "suite",
            "metric",
            safe(baseline),
            safe(cand.name),
            "Δ",
            "95% CI (paired bootstrap)",
            "McNemar p",
            "n",
            title=f"{safe(cand.name)} vs {safe(baseline)}",
        )
        for c in compare_trials(st, base, cand):
            s = c.stats
            if s is None:
                table.add_row(safe(c.suite), safe(c.metric), "—", "—", "—", safe(c.problem or ""), "", "")
                continue
            style = {"better": "green", "worse": "red"}.get(c.verdict, "")
            table.add_row(
                safe(c.suite),
                safe(c.metric) + (" *" if c.primary else ""),
                f"{s.mean_a:.3f}",
                f"{s.mean_b:.3f}",
                f"[{style}]{s.delta:+.3f}[/]" if style else f"{s.delta:+.3f}",
                f"[{s.lo:+.3f}, {s.hi:+.3f}]",
                "—" if s.mcnemar_p is None else f"{s.mcnemar_p:.3g}",
                str(s.n),
            )
        out.print(table)


def print_decision(decision: Any, out: Console | None = None) -> None:
    out = out or console
    color = {"promote": "green", "reject": "red", "error": "yellow"}[decision.verdict]
    table = Table(
        "rule", "result", "flips to change", "detail", title=safe(f"gate: {decision.candidate} vs {decision.baseline}")
    )
    for r in decision.rules:
        table.add_row(
            safe(r.name),
            "[yellow]error[/]" if r.error else ("[green]pass[/]" if r.passed else "[red]FAIL[/]"),
            "—" if r.flips_to_change is None else str(r.flips_to_change),
            safe(r.message),
        )
    out.print(table)
    print_numerics(decision, out)
    word = {"promote": "promote", "reject": "reject", "error": "cannot decide"}[decision.verdict]
    out.print(
        f"[bold {color}]Gate: {safe(phrase(decision.verdict, decision.flips_to_change))} — {word}[/] "
        f"(exit {decision.exit_code}): {safe(decision.reason)}"
    )


def print_numerics(decision: Any, out: Console) -> None:
    """What baseline and candidate were scored under, a differing key in yellow."""
    if not decision.numerics:
        return
    if not recorded(decision.numerics):
        out.print("numerics: not recorded (scored before tunegate kept them)")
        return
    base, cand = decision.numerics.get("baseline", {}), decision.numerics.get("candidate", {})
    table = Table("numerics", "baseline", "candidate", title="scored under")
    for key in sorted(set(base) | set(cand)):
        style = "yellow" if key in decision.numerics_differ else ""
        cells = [safe(key), safe(base.get(key, "—")), safe(cand.get(key, "—"))]
        table.add_row(*(f"[{style}]{c}[/]" if style else c for c in cells))
    out.print(table)


def print_numerics_by_trial(st: Any, run_id: int, out: Console | None = None) -> None:
    """What each trial's suites were scored under, when the store recorded it for any of them."""
    out = out or console
    rows = [(t.name, suite.name, numerics_of(ev)) for t in st.trials(run_id) for ev, suite in st.evaluations(t.id)]
    if not any(record for _, _, record in rows):
        return
    table = Table("trial", "suite", "numerics", title="scored under")
    for trial, suite, record in rows:
        table.add_row(safe(trial), safe(suite), safe(", ".join(f"{k}={v}" for k, v in record.items()) or UNKNOWN))
    out.print(table)
