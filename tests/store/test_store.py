"""The results store on real SQLite files: round trips, schema migrations (alembic), bad files, locks,
transactions that fail or are killed half way, writers in several processes, export, CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import Session

from harness.base import UserError
from harness.store import Metric, Store, check_integrity, migrations
from tests.support import storekit as kit
from tests.support.storekit import (
    _alembic_diff,
    _counts,
    _fill_0001,
    check_concurrent_writers,
    check_killed_writer_leaves_nothing,
    check_newer_schema_refused,
    check_upgrade_from_0001,
)


@pytest.fixture
def suite(tmp_path: Path):
    return kit.make_suite(tmp_path / "suites", "task", 12, scorers=("exact_match", "json_valid"))


# --- round trip -------------------------------------------------------------------------------------
def test_round_trip_of_a_run(store: Store, suite) -> None:
    run_id = store.create_run("exp", {"name": "exp"}, "abc", "smollm2-135m", "", git_sha="deadbeef")
    store.update_run_folder(run_id, "/runs/exp-1")
    base = store.ensure_trial(run_id, "baseline", "baseline", "baseline", {"type": "baseline"})
    lora = store.ensure_trial(run_id, "lora", "lora", "lora", {"r": 8})
    assert store.ensure_trial(run_id, "lora", "lora", "lora", {"r": 8}).id == lora.id  # idempotent
    store.update_trial(lora.id, status="running", folder="/runs/exp-1/lora")
    store.add_train_steps(lora.id, [{"step": 1, "loss": 2.0, "lr": 1e-4}, {"step": 2, "loss": 1.5}])
    em = kit.ones(12, {0, 1, 2})
    jv = [1.0] * 11 + [None]  # one failed score
    ev_id = store.save_evaluation(lora.id, kit.suite_result(suite, {"exact_match": em, "json_valid": jv}))
    store.update_trial(lora.id, status="finished", final_loss=1.5)
    store.finish_run(run_id, "finished")

    run = store.get_run("exp")
    assert (run.id, run.status, run.folder, run.git_sha) == (run_id, "finished", "/runs/exp-1", "deadbeef")
    assert run.finished_at is not None
    assert [t.name for t in store.trials(run_id)] == ["baseline", "lora"]
    assert store.get_trial("exp/lora").final_loss == 1.5 and store.get_trial(f"t{lora.id}").name == "lora"
    assert [(s.step, s.loss) for s in store.train_steps(lora.id)] == [(1, 2.0), (2, 1.5)]
    [(ev, suite_row)] = store.evaluations(lora.id)
    assert (ev.id, suite_row.name, suite_row.version, ev.n_items) == (ev_id, "task", suite.version, 12)
    metrics = store.metrics(ev_id)
    assert metrics["exact_match"].value == pytest.approx(0.75) and metrics["exact_match"].n == 12
    assert metrics["json_valid"].value == 1.0 and metrics["json_valid"].n == 11  # the failed score is not counted
    assert all(m.higher_is_better is True and m.binary is True for m in metrics.values())  # how to read them
    assert store.item_scores(ev_id, "json_valid")["q011"] is None
    rows = store.item_rows(ev_id)
    assert len(rows) == 12 and rows[0]["item"] == "q000"
    assert rows[0]["scores"] == {"exact_match": 0.0, "json_valid": 1.0}
    assert rows[0]["output"] == "output q000" and rows[0]["data"]["reference"] == "answer 0"
    assert store.suite_item_count(suite_row.id) == 12

    models = {m.name: m for m in store.models()}
    assert (
        models["smollm2-135m"].kind == "base" and store.get_trial("exp/baseline").model_id == models["smollm2-135m"].id
    )
    lora_model = models[f"exp#{run_id}/lora"]
    assert (lora_model.kind, lora_model.trial_id, lora_model.path) == ("lora", lora.id, "/runs/exp-1/lora")
    assert store.resolve_trial("smollm2-135m").id == base.id
    assert store.resolve_trial(f"exp#{run_id}/lora").id == lora.id
    assert store.resolve_trial("exp").id == lora.id  # the run's only candidate
    assert store.latest_run("exp", "abc").id == run_id and store.latest_run("exp", "other") is None
    with pytest.raises(UserError, match="no trial, model or run"):
        store.resolve_trial("nope")


def test_saving_again_replaces_the_evaluation(store: Store, suite) -> None:
    trial = kit.add_trial(
        store,
        kit.new_run(store),
        "lora",
        [kit.suite_result(suite, {"exact_match": kit.ones(12), "json_valid": kit.ones(12)})],
    )
    before = _counts(store)
    ev2 = store.save_evaluation(
        trial.id, kit.suite_result(suite, {"exact_match": kit.ones(12, range(6)), "json_valid": kit.ones(12)})
    )
    assert _counts(store) == before
    assert store.metrics(ev2)["exact_match"].value == 0.5
    assert len(store.evaluations(trial.id)) == 1


def test_runs_are_listed_and_filtered(store: Store) -> None:
    a = store.create_run("alpha", {}, "h", "model-a", "")
    b = store.create_run("beta", {}, "h", "model-b", "")
    store.create_run("alpha_2", {}, "h", "model-a", "")
    store.finish_run(b, "failed")
    assert [r.name for r in store.runs()] == ["alpha_2", "beta", "alpha"]
    assert [r.id for r in store.runs(name="alpha")][-1] == a
    assert [r.name for r in store.runs(status="failed")] == ["beta"]
    assert [r.name for r in store.runs(model="model-b")] == ["beta"]
    assert [r.name for r in store.runs(name="a_")] == ["alpha_2"]  # '_' is a literal, not a LIKE wildcard
    assert len(store.runs(limit=1)) == 1


def test_judge_calls_are_recorded_and_cached(store: Store, suite) -> None:
    trial = kit.add_trial(
        store,
        kit.new_run(store),
        "lora",
        [kit.suite_result(suite, {"exact_match": kit.ones(12), "json_valid": kit.ones(12)})],
    )
    [(ev, _)] = store.evaluations(trial.id)
    store.record_judge_call("k1", "judge-m", {"q": 1}, None, "failed", error="timeout", evaluation_id=ev.id)
    assert store.cached_judge_response("k1") is None
    store.record_judge_call("k1", "judge-m", {"q": 1}, "8/10", "ok", evaluation_id=ev.id)
    assert store.cached_judge_response("k1") == "8/10"
    assert [c.status for c in store.judge_calls(evaluation_id=ev.id)] == ["failed", "ok"]


def test_promotions_and_rollback(store: Store, suite) -> None:
    run = kit.new_run(store)
    a, b, c = (kit.add_trial(store, run, n, []) for n in ("a", "b", "c"))
    with pytest.raises(UserError, match="no model has been promoted"):
        store.rollback()
    store.promote(a.id, None, evidence={"evaluation_ids": [1]})
    with pytest.raises(UserError, match="only one model"):
        store.rollback()
    store.promote(b.id)
    assert store.promote(b.id) == store.promotions()[0].id  # promoting the promoted model changes nothing
    store.promote(c.id)
    assert store.promoted_trial().id == c.id
    back = store.rollback("c broke production")
    assert (back.kind, back.trial_id, back.previous_trial_id, back.reason) == (
        "rollback",
        b.id,
        c.id,
        "c broke production",
    )
    assert store.promoted_trial().id == b.id
    assert store.rollback().trial_id == a.id  # rollbacks walk back through history, not back and forth
    assert store.promoted_trial().id == a.id
    p = store.promotions()[-1]
    assert p.evidence == {"evaluation_ids": [1]} and p.promoted_by and p.created_at


# --- migrations ----------------------------------------------------------------------------------------
def test_new_store_is_at_head_and_matches_the_models(store: Store) -> None:
    assert _alembic_diff(store) == []
    with store.engine.connect() as conn:
        assert migrations.current(conn) == migrations.head()


def test_an_older_store_is_upgraded_with_its_rows(tmp_path: Path) -> None:
    check_upgrade_from_0001(f"sqlite:///{tmp_path / 'old.db'}")


def test_a_skeleton_store_without_alembic_is_recognized(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'skeleton.db'}"
    migrations.upgrade(url, 10, target="0001")
    _fill_0001(url)
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(text("DROP TABLE alembic_version"))  # exactly what the skeleton's create_all left
    eng.dispose()
    store = Store(url)
    assert store.get_trial("old/lora").model_id is not None and _alembic_diff(store) == []


def test_a_newer_store_is_refused(tmp_path: Path) -> None:
    check_newer_schema_refused(f"sqlite:///{tmp_path / 'new.db'}")
    result = kit.tunegate("runs", "--store", str(tmp_path / "new.db"))
    assert result.returncode == 2 and "newer than this tunegate" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE runs (x INTEGER)")
    with pytest.raises(UserError, match="not a tunegate store"):
        Store(str(path))


def test_downgrade_then_upgrade_again(tmp_path: Path, suite) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    store = Store(url)
    kit.add_trial(
        store,
        kit.new_run(store),
        "lora",
        [kit.suite_result(suite, {"exact_match": kit.ones(12), "json_valid": kit.ones(12)})],
    )
    store.dispose()
    from alembic import command

    eng = create_engine(url)
    with eng.begin() as c:
        command.downgrade(migrations.config(c), "0001")
    eng.dispose()
    store = Store(url)
    assert store.get_trial("exp/lora").model_id is not None and _alembic_diff(store) == []


def test_metric_rows_from_before_0003_are_read_through_the_scorer_registry(tmp_path: Path, suite) -> None:
    from alembic import command

    from harness.analysis import compare_trials, metric_kind
    from harness.scorers import MetricKind

    url = f"sqlite:///{tmp_path / 'old-metrics.db'}"
    store = Store(url)
    run = kit.new_run(store)
    base = kit.add_trial(
        store,
        run,
        "baseline",
        [kit.suite_result(suite, {"exact_match": kit.ones(12, range(8)), "json_valid": kit.ones(12)})],
    )
    lora = kit.add_trial(
        store, run, "lora", [kit.suite_result(suite, {"exact_match": kit.ones(12), "json_valid": kit.ones(12)})]
    )
    store.dispose()
    eng = create_engine(url)
    with eng.begin() as c:
        command.downgrade(migrations.config(c), "0002")  # the metric rows as a 0002 store wrote them
    eng.dispose()
    store = Store(url)  # upgraded again: the columns are back, empty on the old rows
    [(ev, _)] = store.evaluations(lora.id)
    row = store.metrics(ev.id)["exact_match"]
    assert (row.higher_is_better, row.binary) == (None, None)
    assert metric_kind(store, ev.id, "exact_match") == MetricKind(higher_is_better=True, binary=True)
    by_metric = {c.metric: c for c in compare_trials(store, base, lora)}
    em = by_metric["exact_match"]
    assert em.kind.binary and em.stats is not None and em.stats.mcnemar_p is not None and em.verdict == "better"


def test_evaluations_from_before_0005_have_unknown_numerics(tmp_path: Path, suite) -> None:
    from alembic import command

    from harness.gate import decide

    url = f"sqlite:///{tmp_path / 'old-numerics.db'}"
    store = Store(url)
    numerics = {"dtype": "bfloat16", "mode": "invariant", "gpu": "NVIDIA H200"}
    run = kit.new_run(store)
    result = kit.suite_result(suite, {"exact_match": kit.ones(12), "json_valid": kit.ones(12)})
    result.numerics = numerics
    kit.add_trial(store, run, "baseline", [result], arm_type="baseline")
    lora = kit.add_trial(
        store, run, "lora", [kit.suite_result(suite, {"exact_match": kit.ones(12), "json_valid": kit.ones(12)})]
    )
    [(ev, _)] = store.evaluations(lora.id)
    assert ev.numerics is None  # a result without a record stores NULL
    store.dispose()
    eng = create_engine(url)
    with eng.begin() as c:
        command.downgrade(migrations.config(c), "0004")  # the evaluations as a 0004 store wrote them
    eng.dispose()
    store = Store(url)  # upgraded again: the column is back, NULL on every old row
    assert _alembic_diff(store) == []
    assert all(ev.numerics is None for t in store.trials(run) for ev, _ in store.evaluations(t.id))
    policy = kit.write_policy(
        tmp_path / "g.yaml", "rules:\n  - suite: task\n    metric: exact_match\n    max_drop: 0\n"
    )
    d = decide(store, policy, "exp/lora")
    assert d.numerics == {"candidate": {"numerics": "unknown"}, "baseline": {"numerics": "unknown"}}
    assert store.get_decision(d.decision_id).flips_to_change == d.flips_to_change == 1


# --- bad files and locks ---------------------------------------------------------------------------
def test_a_corrupted_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    path.write_bytes(b"this is not an SQLite database at all" * 200)
    with pytest.raises(UserError, match="corrupted or not a tunegate store") as exc:
        Store(str(path))
    assert str(path) in str(exc.value)
    result = kit.tunegate("show", "1", "--store", str(path))
    assert result.returncode == 2 and "corrupted" in result.stderr and "Traceback" not in result.stderr


def test_a_damaged_page_is_a_clear_error(tmp_path: Path, suite) -> None:
    path = tmp_path / "damaged.db"
    store = Store(str(path))
    kit.add_trial(
        store,
        kit.new_run(store),
        "lora",
        [kit.suite_result(suite, {"exact_match": kit.ones(12), "json_valid": kit.ones(12)})],
    )
    with store.engine.connect() as c:
        c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.dispose()
    data = bytearray(path.read_bytes())
    page = 4096
    for p in range(2, len(data) // page):  # scribble over every page but the schema
        data[p * page + 8 : p * page + 200] = os.urandom(192)
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupted|malformed"):
        store = Store(str(path))
        check_integrity(store)
        store.runs()
        store.item_rows(1)


def test_a_locked_store_times_out_with_a_clear_error(tmp_path: Path, suite) -> None:
    path = tmp_path / "locked.db"
    Store(str(path)).create_run("before", {}, "h", "m", "")
    locker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sqlite3, sys, time\n"
                f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
                "c.execute('BEGIN IMMEDIATE'); c.execute(\"UPDATE runs SET status = 'x'\")\n"
                "print('locked', flush=True); time.sleep(60)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        store = Store(str(path), timeout=0.5)
        assert [r.name for r in store.runs()] == ["before"]  # readers are not blocked (WAL)
        started = time.monotonic()
        with pytest.raises(UserError, match="locked by another process"):
            store.create_run("during", {}, "h", "m", "")
        assert time.monotonic() - started < 10
        result = kit.tunegate("rollback", "--store", str(path), env={"TUNEGATE_STORE_TIMEOUT": "0.5"})
        assert result.returncode == 2 and "locked" in result.stderr
    finally:
        locker.kill()
        locker.wait()
    Store(str(path)).create_run("after", {}, "h", "m", "")


# --- transactions --------------------------------------------------------------------------------------
def test_an_exception_inside_save_evaluation_leaves_nothing(store: Store, suite, tmp_path: Path) -> None:
    trial = kit.add_trial(store, kit.new_run(store), "lora", [])
    before = _counts(store)
    bad = kit.suite_result(suite, {"exact_match": kit.ones(12), "json_valid": kit.ones(12)})
    bad.items[-1].item_id = "not-in-the-suite"
    with pytest.raises(ValueError, match="not in suite"):
        store.save_evaluation(trial.id, bad)
    assert _counts(store) == before  # not even the suite and its items, which were written first

    def explode(session: Session, *_: object) -> None:
        if any(isinstance(o, Metric) for o in session.new):  # the last rows save_evaluation adds
            raise RuntimeError("disk full")

    event.listen(Session, "before_flush", explode)
    try:
        good = kit.suite_result(suite, {"exact_match": kit.ones(12), "json_valid": kit.ones(12)})
        with pytest.raises(RuntimeError, match="disk full"):
            store.save_evaluation(trial.id, good)
    finally:
        event.remove(Session, "before_flush", explode)
    assert _counts(store) == before
    store.save_evaluation(trial.id, kit.suite_result(suite, {"exact_match": kit.ones(12), "json_valid": kit.ones(12)}))
    assert _counts(store)["evaluations"] == 1


def test_a_writer_killed_mid_transaction_leaves_no_half_evaluation(tmp_path: Path, suite) -> None:
    check_killed_writer_leaves_nothing(f"sqlite:///{tmp_path / 'k.db'}", suite.path, tmp_path)


def test_writers_in_several_processes_lose_nothing(tmp_path: Path, suite) -> None:
    check_concurrent_writers(f"sqlite:///{tmp_path / 'c.db'}", suite.path)


def test_trials_writing_at_once_from_threads(store: Store, suite) -> None:
    from concurrent.futures import ThreadPoolExecutor

    run = kit.new_run(store)

    def trial(i: int) -> int:
        t = store.ensure_trial(run, f"t{i}", "lora", "lora", {"i": i})
        store.save_evaluation(
            t.id, kit.suite_result(suite, {"exact_match": kit.ones(12, {i}), "json_valid": kit.ones(12)})
        )
        store.update_trial(t.id, status="finished")
        return t.id

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(trial, range(8)))
    assert len(set(ids)) == 8 and _counts(store)["scores"] == 8 * 12 * 2
    assert all(t.status == "finished" for t in store.trials(run))


def test_processes_opening_a_new_store_together(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    code = f"from harness.store import Store; Store({str(path)!r}).create_run('r', {{}}, 'h', 'm', '')"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ | {"PYTHONPATH": str(kit.REPO)},
        )
        for _ in range(3)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read() if p.stderr else ""
    assert len(Store(str(path)).runs()) == 3


# --- export and CLI ------------------------------------------------------------------------------------
def _two_trials(store: Store, suite) -> int:
    run = kit.new_run(store)
    kit.add_trial(
        store,
        run,
        "baseline",
        [kit.suite_result(suite, {"exact_match": kit.ones(12, range(6)), "json_valid": kit.ones(12)})],
        arm_type="baseline",
    )
    kit.add_trial(
        store, run, "lora", [kit.suite_result(suite, {"exact_match": kit.ones(12, {0}), "json_valid": kit.ones(12)})]
    )
    return run


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_export_results(store: Store, suite, tmp_path: Path, fmt: str) -> None:
    from harness.store import export_results

    run = _two_trials(store, suite)
    other = store.create_run("other", {}, "h", "m", "")
    kit.add_trial(
        store, other, "x", [kit.suite_result(suite, {"exact_match": kit.ones(12), "json_valid": kit.ones(12)})]
    )
    out = tmp_path / f"metrics.{fmt}"
    assert export_results(store, out, runs=[str(run)]) == 4
    read = {"csv": pd.read_csv, "parquet": pd.read_parquet, "json": lambda p: pd.DataFrame(json.loads(p.read_text()))}
    df = read[fmt](out)
    row = df[(df.trial == "lora") & (df.metric == "exact_match")].iloc[0]
    assert row.value == pytest.approx(11 / 12) and row.n == 12 and row.suite_version == suite.version
    assert set(df.trial) == {"baseline", "lora"}
    items = tmp_path / f"items.{fmt}"
    assert export_results(store, items, level="items") == 36
    df = read[fmt](items)
    lora = df[(df.trial == "lora") & (df["item"] == "q000")].iloc[0]
    assert lora.score_exact_match == 0.0 and lora.output == "output q000"


def test_export_rejects_unknown_format_and_level(store: Store, tmp_path: Path) -> None:
    from harness.store import export_results

    with pytest.raises(UserError, match="unknown format"):
        export_results(store, tmp_path / "x.xlsx")
    with pytest.raises(UserError, match="unknown level"):
        export_results(store, tmp_path / "x.csv", level="everything")


def test_cli_runs_show_and_export(tmp_path: Path, suite) -> None:
    from typer.testing import CliRunner

    from harness.cli import app

    db = str(tmp_path / "cli.db")
    store = Store(db)
    run = _two_trials(store, suite)
    store.create_run("failed-one", {}, "h", "m", "")
    store.finish_run(store.get_run("failed-one").id, "failed")
    runner = CliRunner()
    listed = runner.invoke(app, ["runs", "--store", db, "--status", "failed"])
    assert listed.exit_code == 0 and "failed-one" in listed.output and "exp" not in listed.output
    shown = runner.invoke(app, ["show", str(run), "--store", db])
    assert shown.exit_code == 0 and "lora" in shown.output and "exact_" in shown.output
    out = tmp_path / "out.parquet"
    exported = runner.invoke(app, ["export-results", str(out), "--store", db, "--level", "items"])
    assert exported.exit_code == 0, exported.output
    assert len(pd.read_parquet(out)) == 24
    bad = kit.tunegate("export-results", str(tmp_path / "x.txt"), "--store", db)
    assert bad.returncode == 2 and "unknown format" in bad.stderr


def test_an_in_memory_store_and_the_timeout_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store("sqlite://")  # migrated through its own engine: a second one would see another database
    run = store.create_run("mem", {}, "h", "m", "")
    assert store.trials(run) == [] and _alembic_diff(store) == []
    monkeypatch.setenv("TUNEGATE_STORE_TIMEOUT", "soon")
    with pytest.raises(UserError, match="must be a number of seconds"):
        Store("sqlite://")
