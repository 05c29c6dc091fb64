"""Issue 18, items 1 and 8: a resume never deletes files the harness did not write, a run's folder is on record
from the moment the run is, and a run whose process is gone reads `interrupted`, not `running`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.plan._load import load_plan, plan_hash
from harness.run._trial import OWNER_MARK, TrialJob, run_trial
from harness.store import Store
from tests.support.storekit import tunegate
from tests.support.tiny_plans import REPO, write_data, write_plan, write_suites

USER_FILES = (
    "baseline/adapter/weights.bin",
    "baseline/checkpoints/c1",
    "baseline/train_log.jsonl",
    "baseline/error.log",
    "baseline/manifest.json",
)


def _plan(tmp_path: Path, model: Path) -> Path:
    write_suites(tmp_path, items=2)
    train, _ = write_data(tmp_path, rows=4)
    return write_plan(
        tmp_path / "plan.yaml",
        model,
        [{"name": "baseline", "type": "baseline"}],
        train=train,
        name="keep",
        suites=["tiny_mc"],
    )


def _user_files(root: Path) -> list[Path]:
    paths = [root / p for p in USER_FILES]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("the user's own file")
    return paths


def test_resume_of_a_run_without_a_folder_refuses_and_deletes_nothing(tmp_path: Path, tiny_model_dir: Path) -> None:
    plan_path = _plan(tmp_path, tiny_model_dir)
    plan, _ = load_plan(plan_path)
    db = tmp_path / "s.db"
    # a run row left by a `run` killed between creating the run and recording its folder (older tunegate)
    Store(str(db)).create_run(plan.name, json.loads(plan.model_dump_json()), plan_hash(plan), plan.model, "")
    work = tmp_path / "work"
    files = _user_files(work)
    result = tunegate(
        "run",
        str(plan_path),
        "--resume",
        "--store",
        str(db),
        cwd=work,
        env={"TUNEGATE_SUITES": str(tmp_path / "suites")},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "has no recorded folder" in result.stderr and "Resuming" not in result.stdout
    assert all(p.read_text() == "the user's own file" for p in files)


def test_a_new_run_records_its_folder_in_the_same_transaction(store: Store, tmp_path: Path) -> None:
    seen: list[int] = []

    def folder(run_id: int) -> str:
        seen.append(run_id)
        with pytest.raises(Exception):  # noqa: B017 (a lock timeout, whichever error the driver raises) the run is not visible to anyone before its folder is set
            Store(store.url, timeout=0.2).create_run("other", {}, "h", "m", "")
        return str(tmp_path / f"r-{run_id}")

    run_id = store.create_run("r", {}, "h", "m", folder)
    assert seen == [run_id] and store.get_run(run_id).folder == str(tmp_path / f"r-{run_id}")


def _unit(store: Store, tmp_path: Path, model: Path, folder: Path) -> TrialJob:
    plan, _ = load_plan(_plan(tmp_path, model))
    run_id = store.create_run(
        plan.name, json.loads(plan.model_dump_json()), plan_hash(plan), plan.model, str(folder.parent)
    )
    store.ensure_trial(run_id, "baseline", "baseline", "baseline", {})
    return TrialJob(store.url, run_id, "baseline", str(folder), device="cpu")


def test_a_trial_never_cleans_a_folder_it_did_not_write(
    store: Store, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNEGATE_SUITES", str(tmp_path / "suites"))
    folder = tmp_path / "run" / "baseline"
    files = _user_files(tmp_path / "run")
    unit = _unit(store, tmp_path, tiny_model_dir, folder)
    result = run_trial(unit)
    assert result.status == "failed" and "did not write" in (result.error or "")
    assert all(p.read_text() == "the user's own file" for p in files)
    assert store.get_trial(f"{unit.run_id}/baseline").status == "failed"


def test_a_rerun_cleans_only_its_own_folder(
    store: Store, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNEGATE_SUITES", str(tmp_path / "suites"))
    folder = tmp_path / "run" / "baseline"
    unit = _unit(store, tmp_path, tiny_model_dir, folder)
    _user_files(tmp_path / "run")
    (folder / OWNER_MARK).write_text(json.dumps({"run_id": unit.run_id, "trial": "baseline"}))
    assert run_trial(unit).status == "finished"
    assert not (folder / "adapter").exists() and not (folder / "checkpoints").exists()
    assert json.loads((folder / "manifest.json").read_text())["trial"] == "baseline"  # rewritten by the trial


def test_a_run_whose_process_is_gone_reads_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    code = (
        f"from harness.store import Store; s = Store({str(db)!r}); r = s.create_run('gone', {{}}, 'h', 'm', '/x');"
        "t = s.ensure_trial(r, 'a', 'a', 'lora', {}); s.update_trial(t.id, status='running')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={"PYTHONPATH": str(REPO)})
    store = Store(str(db))
    mine = store.create_run("alive", {}, "h", "m", "/y")
    by_name = {r.name: r for r in store.runs()}
    assert by_name["gone"].status == "interrupted" and by_name["gone"].finished_at
    assert by_name["alive"].status == "running" and by_name["alive"].id == mine
    assert store.trials(by_name["gone"].id)[0].status == "interrupted"
    assert [r.name for r in store.runs(status="running")] == ["alive"]


def test_runs_from_another_host_are_left_alone(store: Store) -> None:
    from harness.store._tables import Run

    run_id = store.create_run("elsewhere", {}, "h", "m", "/z")
    with store.session() as s:
        row = s.get(Run, run_id)
        row.driver_host, row.driver_pid = "another-host.example", 2**22 + 12345
    assert store.get_run(run_id).status == "running"
