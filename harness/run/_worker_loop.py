"""The worker side of the persistent workers: `python -m harness.run --serve REPLY_FD` reads jobs (one JSON line
each) from stdin, runs each (a trial, or a shared evaluation) and answers with one JSON line on REPLY_FD, saying
before the answer when a trial has trained. Its output goes to the trial's log for the job's duration, and it ends
when its driver does."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from harness.model._load import keep_models_loaded
from harness.run._executors import run_here
from harness.run._jobs import TrialJob


@contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (Python's and the C libraries') to `log` for the duration."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("a") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _exit_with_parent() -> None:
    """A worker ends when its driver does (kill -9 included), so a resumed run never races an orphaned worker.
    (PR_SET_PDEATHSIG would fire when the driver *thread* that started the worker ends, so it is not used.)"""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serve(reply_fd: int) -> int:
    """The worker's loop: read jobs from stdin, run each, answer with one JSON line on `reply_fd`."""
    from harness.run._shared_eval import score_together  # worker side only: the driver never loads torch or PEFT
    from harness.run._trial import mark_ready  # heavy (torch, TRL, PEFT): the driver imports this module too

    _exit_with_parent()
    keep_models_loaded()
    mark_ready()
    with os.fdopen(reply_fd, "w") as replies:
        for line in sys.stdin:
            job = json.loads(line)
            units = [TrialJob(**u) for u in job["units"]]
            log = (
                Path(units[0].folder) / "worker.log"
                if job["kind"] == "trial"
                else Path(units[0].folder).parent / "shared-eval.log"
            )
            with _output_to(log):
                console = Console(file=sys.stdout, width=120, force_terminal=False)
                if job["kind"] == "trial":

                    def trained(trial: str = units[0].trial) -> None:  # a trial that continues it may start
                        replies.write(json.dumps({"event": "trained", "trial": trial}) + "\n")
                        replies.flush()

                    results = [run_here(units[0], console, trained)]
                else:
                    results = score_together(units, console)
            replies.write(json.dumps([asdict(r) for r in results]) + "\n")
            replies.flush()
    return 0
