"""The run lock: one process drives a run at a time (its pid, host and heartbeat on the run's row); a driver
that is gone or silent loses it, and runs whose driver died on this host are marked interrupted."""

from __future__ import annotations

import math
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from harness.base._errors import UserError
from harness.store._connection import _Connection
from harness.store._tables import Run, Trial, now


class _RunLock(_Connection):
    """Taking and refreshing a run's lock, and marking runs whose driver is gone interrupted."""

    def reopen_run(self, run_id: int) -> str | None:
        """A resumed run: running again, driven by this process, which takes the run's lock (`claim_run`)."""
        return self.claim_run(run_id)

    def claim_run(self, run_id: int, *, stale_after: float | None = None) -> str | None:
        """Take the run's lock: this process drives it from now on (status running, its pid, host and a fresh
        heartbeat), in one write transaction (SQLite's BEGIN IMMEDIATE, a row lock on PostgreSQL), so of two
        processes resuming one run, one wins. While another live process drives the run, a UserError naming it
        (exit 2). A driver that is gone (its pid dead on this host) or silent (no heartbeat for `stale_after`
        seconds, default $TUNEGATE_RUN_LOCK_STALE_S or 600, from any host) loses the lock: the return value
        then says whose lock was taken over; None when the run was not held."""
        stale_after = run_lock_stale_after() if stale_after is None else stale_after
        me, host = os.getpid(), socket.gethostname()
        with self.session() as s:
            run = s.scalars(select(Run).where(Run.id == run_id).with_for_update()).first()
            if run is None:
                raise UserError(f"no runs row {run_id} in the store")
            took_over = None
            holder = run.driver_pid, run.driver_host
            if run.status == "running" and holder != (me, host) and run.driver_pid is not None:
                age = _age_seconds(run.driver_heartbeat or run.created_at)
                who = f"process {run.driver_pid} on {run.driver_host}"
                if run.driver_host == host and not _process_alive(run.driver_pid):
                    took_over = f"took over run {run_id} from {who}: that process is gone"
                elif age is not None and age > stale_after:
                    took_over = (
                        f"took over run {run_id} from {who}: its last heartbeat is {age:.0f} s old "
                        f"(stale after {stale_after:g} s)"
                    )
                else:
                    beat = f"; its last heartbeat was {age:.0f} s ago" if age is not None else ""
                    raise UserError(
                        f"run {run_id} ({run.name}) is being run by {who}{beat}; wait for it to "
                        f"finish or stop it (a lock silent for {stale_after:g} s is taken over: "
                        "TUNEGATE_RUN_LOCK_STALE_S)",
                        file=self.where,
                        field="--resume",
                    )
            run.status, run.finished_at = "running", None
            run.driver_pid, run.driver_host, run.driver_heartbeat = me, host, now()
            return took_over

    def heartbeat(self, run_id: int) -> bool:
        """This process still drives the run: refresh its heartbeat. False if another process took the run."""
        with self.session() as s:
            run = s.get(Run, run_id)
            if run is None or (run.driver_pid, run.driver_host) != (os.getpid(), socket.gethostname()):
                return False
            run.driver_heartbeat = now()
            return True

    def mark_interrupted(self) -> list[int]:
        """Mark `interrupted` every running run whose driver process on this host is gone (killed, crashed),
        and its unfinished trials with it. Returns their ids. Runs driven from other hosts are left alone."""
        host = socket.gethostname()
        with self.reading() as s:
            running = s.execute(
                select(Run.id, Run.driver_pid).where(
                    Run.status == "running", Run.driver_host == host, Run.driver_pid.is_not(None)
                )
            ).all()
        gone = [(run_id, pid) for run_id, pid in running if not _process_alive(pid)]
        if not gone:
            return []
        with self.session() as s:
            for run_id, pid in gone:
                run = s.get(Run, run_id)
                if run is None or run.status != "running" or run.driver_pid != pid:
                    continue  # resumed by another process meanwhile
                run.status, run.finished_at = "interrupted", now()
                for trial in s.scalars(select(Trial).where(Trial.run_id == run_id, Trial.status == "running")):
                    trial.status = "interrupted"
        return [run_id for run_id, _ in gone]


def _process_alive(pid: int) -> bool:
    """Whether process `pid` on this host still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): the signal said it exists
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


DEFAULT_RUN_LOCK_STALE_S = 600.0


def run_lock_stale_after() -> float:
    """Seconds without a heartbeat after which a run's lock may be taken over ($TUNEGATE_RUN_LOCK_STALE_S)."""
    raw = os.environ.get("TUNEGATE_RUN_LOCK_STALE_S", DEFAULT_RUN_LOCK_STALE_S)
    try:
        seconds = float(raw)
    except ValueError:
        raise UserError(f"TUNEGATE_RUN_LOCK_STALE_S must be a number of seconds, not '{raw}'") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"TUNEGATE_RUN_LOCK_STALE_S must be a positive number of seconds, not '{raw}'")
    return seconds


def _age_seconds(stamp: str | None) -> float | None:
    """Seconds since an ISO timestamp written by `now()` (None if there is none or it cannot be read)."""
    if not stamp:
        return None
    try:
        then = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return (datetime.now(UTC) - then).total_seconds()
