"""Issue 31, item 7: one process drives a run. The run's lock is in the store (so it holds on PostgreSQL and
across hosts): a second `--resume` exits 2 naming the holder; a holder that is gone (dead pid on this host) or
silent (no heartbeat for the stale timeout, any host) is taken over, and the message says so."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.base._errors import UserError
from harness.plan._load import load_plan, plan_hash
from harness.run._runner import RunHeartbeat
from harness.store import Store
from harness.store._tables import Run
from tests.support.storekit import tunegate
from tests.support.tiny_plans import REPO, write_data, write_plan, write_suites

CLAIM = """\
import sys, time
from pathlib import Path
from harness.base._errors import UserError
from harness.store import Store
url, run_id, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
store = Store(url)
while not go.exists():
    time.sleep(0.01)
try:
    took = store.claim_run(run_id)
    print("claimed", took or "", flush=True)
except UserError as exc:
    print("refused", exc, flush=True)
    sys.exit(2)
time.sleep(float(sys.argv[4]))   # hold the lock while alive
"""


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )


def _race(url: str, tmp_path: Path) -> None:
    store = Store(url)
    run_id = store.create_run("raced", {}, "h", "m", str(tmp_path / "raced"))
    store.finish_run(run_id, "interrupted")
    go = tmp_path / "go"
    procs = [_spawn(CLAIM, url, str(run_id), str(go), "30") for _ in range(2)]
    go.touch()  # both claim at once
    lines = []
    for proc in procs:
        assert proc.stdout is not None
        lines.append(proc.stdout.readline().strip())
    try:
        assert sorted(line.split()[0] for line in lines) == ["claimed", "refused"], lines
        winner = procs[[line.split()[0] for line in lines].index("claimed")]
        loser = procs[1 - procs.index(winner)]
        assert loser.wait(timeout=20) == 2
        refusal = next(line for line in lines if line.startswith("refused"))
        assert f"is being run by process {winner.pid} on {socket.gethostname()}" in refusal, refusal
        assert store.get_run(run_id).driver_pid == winner.pid
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=20)
    # the winner was killed: its lock is taken over by the next claim, which says so
    took = Store(url).claim_run(run_id)
    assert took is not None and "that process is gone" in took and str(winner.pid) in took


def test_two_processes_claiming_one_run_on_sqlite(tmp_path: Path) -> None:
    _race(f"sqlite:///{tmp_path / 'lock.db'}", tmp_path)


def test_two_processes_claiming_one_run_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    _race(pg_url, tmp_path)


def _set(store: Store, run_id: int, **fields: object) -> None:
    with store.session() as s:
        row = s.get(Run, run_id)
        for key, value in fields.items():
            setattr(row, key, value)


def test_a_driver_on_another_host_holds_the_lock_until_stale(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = store.create_run("remote", {}, "h", "m", "/r")
    _set(store, run_id, driver_host="another-host.example", driver_pid=4242)  # heartbeat: now
    with pytest.raises(UserError, match="is being run by process 4242 on another-host.example; its last heartbeat"):
        store.claim_run(run_id)
    _set(store, run_id, driver_heartbeat="2000-01-01T00:00:00+00:00")
    took = store.claim_run(run_id)
    assert took is not None and "its last heartbeat is" in took and "another-host.example" in took
    row = store.get_run(run_id)
    assert (row.driver_pid, row.driver_host, row.status) == (os.getpid(), socket.gethostname(), "running")
    assert store.claim_run(run_id) is None  # this process holds it already
    monkeypatch.setenv("TUNEGATE_RUN_LOCK_STALE_S", "nope")
    with pytest.raises(UserError, match="TUNEGATE_RUN_LOCK_STALE_S must be a number"):
        store.claim_run(run_id)


def test_the_heartbeat_thread_keeps_the_lock_fresh(store: Store) -> None:
    run_id = store.create_run("beating", {}, "h", "m", "/b")
    _set(store, run_id, driver_heartbeat="2000-01-01T00:00:00+00:00")
    with RunHeartbeat(store, run_id, every=0.05):
        deadline = time.monotonic() + 30  # a hang guard, not a speed check
        while store.get_run(run_id).driver_heartbeat.startswith("2000") and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not store.get_run(run_id).driver_heartbeat.startswith("2000")
    _set(store, run_id, driver_pid=1)  # another process took it: the heartbeat stops claiming it
    assert store.heartbeat(run_id) is False


HOLD = """\
import json, sys, time
from harness.store import Store
store = Store(sys.argv[1])
run_id = store.create_run(sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6])
print(run_id, flush=True)
time.sleep(60)
"""


def test_a_second_resume_exits_2_naming_the_holder(tmp_path: Path, tiny_model_dir: Path) -> None:
    write_suites(tmp_path, items=2)
    train, _ = write_data(tmp_path, rows=4)
    plan_path = write_plan(
        tmp_path / "plan.yaml",
        tiny_model_dir,
        [{"name": "baseline", "type": "baseline"}],
        train=train,
        name="locked",
        suites=["tiny_mc"],
    )
    plan, _ = load_plan(plan_path)
    db = tmp_path / "s.db"
    (tmp_path / "work").mkdir()
    holder = _spawn(
        HOLD,
        str(db),
        plan.name,
        plan.model_dump_json(),
        plan_hash(plan),
        plan.model,
        str(tmp_path / "work" / "locked-1"),
    )
    env = {"TUNEGATE_SUITES": str(tmp_path / "suites")}
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "1"
        second = tunegate("run", str(plan_path), "--resume", "--store", str(db), cwd=tmp_path / "work", env=env)
        assert second.returncode == 2, second.stdout + second.stderr
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and f"is being run by process {holder.pid} on {socket.gethostname()}" in lines[0]
        assert "Resuming" not in second.stdout and not (tmp_path / "work" / "locked-1" / "baseline").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: the lock is left behind, stale
        holder.wait(timeout=20)
    third = tunegate("run", str(plan_path), "--resume", "--store", str(db), cwd=tmp_path / "work", env=env)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "Resuming run 1" in third.stdout
    run = Store(str(db)).get_run(1)
    assert run.status == "finished" and json.dumps(run.plan)
