"""A real `tunegate run` killed with SIGKILL in the middle of a sweep, then `--resume`: finished trials are
kept as they were (not rerun), the interrupted one is redone, and the run completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.store import Store
from tests.support.tiny_plans import train_arm, write_data, write_plan, write_suites


def tunegate(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def statuses(store: Store) -> dict[str, tuple[str, str | None]]:
    runs = store.runs()
    if not runs:
        return {}
    return {t.name: (t.status, t.started_at) for t in store.trials(runs[0].id)}


@pytest.mark.slow
def test_killed_run_resumes_without_losing_or_rerunning_finished_trials(tmp_path: Path, tiny_model_dir: Path):
    suites = write_suites(tmp_path, items=2)
    train, _ = write_data(tmp_path, rows=6)
    arms = [
        {"name": "baseline", "type": "baseline"},
        {"name": "prompt", "type": "prompt", "k_shot": 1},
        train_arm("lora", max_steps=3),
    ]
    plan = write_plan(
        tmp_path / "plan.yaml",
        tiny_model_dir,
        arms,
        train=train,
        name="resume",
        sweep={"arm": "lora", "params": {"r": [2, 4]}},
    )
    db = tmp_path / "store.db"
    env = os.environ | {"TUNEGATE_SUITES": str(suites), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    proc = tunegate("run", str(plan), "--store", str(db), cwd=tmp_path, env=env)
    store = None
    deadline = time.monotonic() + 300
    before: dict[str, tuple[str, str | None]] = {}
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            store = store or Store(str(db))
            before = statuses(store)
            states = {n: st for n, (st, _) in before.items()}
            if "finished" in states.values() and any(
                st == "running" for n, st in states.items() if n.startswith("lora")
            ):
                break  # killed while a sweep trial trains, after another trial finished
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stdout.read() if proc.stdout else ''}"
    proc.send_signal(signal.SIGKILL)  # kill -9: no cleanup, no atexit, mid-trial
    proc.wait(timeout=30)
    assert store is not None
    at_kill = statuses(store)
    finished = {n: started for n, (s, started) in at_kill.items() if s == "finished"}
    unfinished = {n for n, (s, _) in at_kill.items() if s != "finished"}
    killed = next(n for n, (st, _) in before.items() if st == "running" and n.startswith("lora"))
    assert finished and killed in unfinished, at_kill
    assert store.runs()[0].status == "interrupted"  # its process is gone: not "running" forever

    resumed = tunegate("run", str(plan), "--store", str(db), "--resume", cwd=tmp_path, env=env)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    for name in finished:
        assert f"{name}: finished earlier, skipped" in out
    assert "Resuming run" in out

    assert len(store.runs()) == 1  # the same run continued, no new one
    after = statuses(store)
    assert set(after) == {"baseline", "prompt", "lora-r2", "lora-r4"}
    assert all(s == "finished" for s, _ in after.values()), after
    for name, started in finished.items():
        assert after[name][1] == started, f"{name} was rerun"
    for name in unfinished:
        if at_kill[name][1] is not None:  # it had started before the kill: it was redone from scratch
            assert after[name][1] != at_kill[name][1]
    run = store.runs()[0]
    assert run.status == "finished"
    for t in store.trials(run.id):
        assert sorted(s.name for _, s in store.evaluations(t.id)) == ["tiny_json", "tiny_mc"]
    lora = next(t for t in store.trials(run.id) if t.name == killed)
    assert [s.step for s in store.train_steps(lora.id)] == [1, 2, 3]  # redone: its curve recorded once, not twice
