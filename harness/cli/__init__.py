"""The `tunegate` command line: advise, run, eval, gate, report, app, runs, show, export, rollback, demo, safety."""

from harness.cli._commands import app, main

__all__ = ["app", "main"]
