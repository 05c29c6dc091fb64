"""Console rendering shared by commands: a run's comparison table and a gate decision."""
from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.analysis._compare import compare_trials
from harness.errors import printable

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
        table = Table("suite", "metric", safe(baseline), safe(cand.name), "Δ", "95% CI (paired bootstrap)",
                      "McNemar p", "n", title=f"{safe(cand.name)} vs {safe(baseline)}")
        for c in compare_trials(st, base, cand):
            s = c.stats
            if s is None:
                table.add_row(safe(c.suite), safe(c.metric), "—", "—", "—", safe(c.problem or ""), "", "")
                continue
            style = {"better": "green", "worse": "red"}.get(c.verdict, "")
            table.add_row(safe(c.suite), safe(c.metric) + (" *" if c.primary else ""), f"{s.mean_a:.3f}", f"{s.mean_b:.3f}",
                          f"[{style}]{s.delta:+.3f}[/]" if style else f"{s.delta:+.3f}", f"[{s.lo:+.3f}, {s.hi:+.3f}]",
                          "—" if s.mcnemar_p is None else f"{s.mcnemar_p:.3g}", str(s.n))
        out.print(table)


def print_decision(decision: Any, out: Console | None = None) -> None:
    out = out or console
    color = {"promote": "green", "reject": "red", "error": "yellow"}[decision.verdict]
    table = Table("rule", "result", "detail", title=safe(f"gate: {decision.candidate} vs {decision.baseline}"))
    for r in decision.rules:
        table.add_row(safe(r.name), "[yellow]error[/]" if r.error else ("[green]pass[/]" if r.passed else "[red]FAIL[/]"),
                      safe(r.message))
    out.print(table)
    word = {"promote": "PASS — promote", "reject": "FAIL — reject", "error": "ERROR — cannot decide"}[decision.verdict]
    out.print(f"[bold {color}]Gate: {word}[/] (exit {decision.exit_code}): {safe(decision.reason)}")
