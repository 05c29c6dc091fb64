"""The store and the gate on a real PostgreSQL server: initdb'd in a temporary folder and started on a
free 127.0.0.1 port for this session (as the `postgres` user when the tests run as root, since
PostgreSQL refuses to run as root). Skipped, with the reason, only where no server can be started
(`apt-get install -y postgresql` and `pip install 'psycopg[binary]'` provide one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.base import UserError
from harness.gate import ERROR, PROMOTE, REJECT, decide
from harness.store import Store
from tests.support import storekit as kit
from tests.support.postgres import free_port
from tests.support.storekit import (
    _alembic_diff,
    _counts,
    check_concurrent_writers,
    check_killed_writer_leaves_nothing,
    check_newer_schema_refused,
    check_upgrade_from_0001,
)


@pytest.fixture
def suites(tmp_path: Path) -> dict:
    return {
        "task": kit.make_suite(tmp_path / "suites", "task", 30),
        "harmful": kit.make_suite(tmp_path / "suites", "harmful", 20, category="safety", scorers=("refusal",)),
    }


def test_round_trip_and_schema(pg_url: str, suites: dict) -> None:
    store = Store(pg_url)
    assert store.engine.dialect.name == "postgresql" and _alembic_diff(store) == []
    run = kit.new_run(store)
    trial = kit.add_trial(store, run, "lora", [kit.suite_result(suites["task"], kit.ones(30, {1, 2}))])
    store.add_train_steps(trial.id, [{"step": 1, "loss": 1.0}])
    [(ev, suite)] = store.evaluations(trial.id)
    assert suite.version == suites["task"].version
    assert store.metrics(ev.id)["exact_match"].value == pytest.approx(28 / 30)
    assert store.item_scores(ev.id, "exact_match")["q001"] == 0.0 and len(store.item_rows(ev.id)) == 30
    assert store.resolve_trial("exp").id == trial.id and store.get_model(trial.model_id).kind == "lora"
    before = _counts(store)
    bad = kit.suite_result(suites["task"], kit.ones(30))
    bad.items[0].item_id = "stranger"
    with pytest.raises(ValueError):
        store.save_evaluation(trial.id, bad)
    assert _counts(store) == before
    store.dispose()


def test_an_older_store_is_upgraded(pg_url: str) -> None:
    check_upgrade_from_0001(pg_url)


def test_a_newer_store_is_refused(pg_url: str) -> None:
    check_newer_schema_refused(pg_url)


def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="cannot open the store") as exc:
        Store(f"postgresql+psycopg://tunegate:secret@127.0.0.1:{free_port()}/none", timeout=2)
    assert "secret" not in str(exc.value) and "***" in str(exc.value)


def test_writers_in_several_processes_lose_nothing(pg_url: str, suites: dict) -> None:
    check_concurrent_writers(pg_url, suites["task"].path)


def test_a_writer_killed_mid_transaction_leaves_nothing(pg_url: str, suites: dict, tmp_path: Path) -> None:
    check_killed_writer_leaves_nothing(pg_url, suites["task"].path, tmp_path)


def test_gate_on_postgres(pg_url: str, suites: dict, tmp_path: Path) -> None:
    store = Store(pg_url)
    policy = kit.write_policy(
        tmp_path / "gate.yaml",
        "rules:\n  - {suite: task, metric: exact_match, max_drop: 0.02}\n"
        "safety:\n  - {suite: harmful, metric: refusal}\n",
    )
    for name, task in (("good", kit.ones(30, {0})), ("bad", kit.ones(30, range(8)))):
        run = kit.new_run(store, name)
        kit.add_trial(
            store,
            run,
            "baseline",
            [
                kit.suite_result(suites["task"], kit.ones(30, range(4))),
                kit.suite_result(suites["harmful"], kit.ones(20)),
            ],
            arm_type="baseline",
        )
        kit.add_trial(
            store,
            run,
            "lora",
            [kit.suite_result(suites["task"], task), kit.suite_result(suites["harmful"], kit.ones(20))],
        )
    assert decide(store, policy, "bad/lora").exit_code == REJECT
    good = decide(store, policy, "good/lora")
    assert good.exit_code == PROMOTE and store.promoted_trial().name == "lora"
    assert store.promotions()[0].evidence["evaluation_ids"]
    assert decide(store, policy, "good/absent").exit_code == ERROR
    result = kit.tunegate("rollback", "--store", pg_url)
    assert result.returncode == 2 and "only one model" in result.stderr
    result = kit.tunegate("gate", "--policy", str(policy), "--candidate", "bad/lora", "--store", pg_url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert [d.verdict for d in store.decisions()] == ["reject", "error", "promote", "reject"]
    store.dispose()
