"""The store and the gate on a real PostgreSQL server: initdb'd in a temporary folder and started on a
free 127.0.0.1 port for this session (as the `postgres` user when the tests run as root, since
PostgreSQL refuses to run as root). Skipped, with the reason, only where no server can be started
(`apt-get install -y postgresql` and `pip install 'psycopg[binary]'` provide one)."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.gate import ERROR, PROMOTE, REJECT, decide
from harness.store import Store

sys.path.insert(0, str(Path(__file__).parent))
import storekit as kit  # noqa: E402
from storekit import (  # noqa: E402
    _alembic_diff,
    _counts,
    check_concurrent_writers,
    check_killed_writer_leaves_nothing,
    check_newer_schema_refused,
    check_upgrade_from_0001,
)


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[tuple[str, int]]:
    """(host, port) of a private PostgreSQL server with a trusted superuser `tunegate`."""
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'psycopg[binary]'")
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed: no initdb under /usr/lib/postgresql/*/bin or on PATH "
                    "(apt-get install -y postgresql)")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="tunegate-pg-"))  # not under pytest's 0700 folder: postgres must enter it
    if os.geteuid() == 0:
        try:
            pg = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        os.chown(root, pg.pw_uid, pg.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    root.chmod(0o700)
    data, log, port = root / "data", root / "server.log", _free_port()
    init = subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "tunegate", "--auth=trust",
                           "--no-sync", "-E", "UTF8", "--locale=C"], capture_output=True, text=True)
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr.strip()[-500:]}")
    start = subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                            "-o", f"-h 127.0.0.1 -p {port} -k {root} -F -c max_connections=60", "start"],
                           capture_output=True, text=True)
    if start.returncode != 0:
        tail = log.read_text()[-800:] if log.exists() else start.stderr
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {tail.strip()}")
    try:
        yield "127.0.0.1", port
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: tuple[str, int]) -> Iterator[str]:
    """A fresh, empty database on the server, dropped afterwards."""
    import psycopg

    host, port = pg_server
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=host, port=port, user="tunegate", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://tunegate@{host}:{port}/{name}"
    with psycopg.connect(host=host, port=port, user="tunegate", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def suites(tmp_path: Path) -> dict:
    return {"task": kit.make_suite(tmp_path / "suites", "task", 30),
            "harmful": kit.make_suite(tmp_path / "suites", "harmful", 20, category="safety", scorers=("refusal",))}


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
        Store(f"postgresql+psycopg://tunegate:secret@127.0.0.1:{_free_port()}/none", timeout=2)
    assert "secret" not in str(exc.value) and "***" in str(exc.value)


def test_writers_in_several_processes_lose_nothing(pg_url: str, suites: dict) -> None:
    check_concurrent_writers(pg_url, suites["task"].path)


def test_a_writer_killed_mid_transaction_leaves_nothing(pg_url: str, suites: dict, tmp_path: Path) -> None:
    check_killed_writer_leaves_nothing(pg_url, suites["task"].path, tmp_path)


def test_gate_on_postgres(pg_url: str, suites: dict, tmp_path: Path) -> None:
    store = Store(pg_url)
    policy = kit.write_policy(tmp_path / "gate.yaml", "rules:\n  - {suite: task, metric: exact_match, max_drop: 0.02}\n"
                                                      "safety:\n  - {suite: harmful, metric: refusal}\n")
    for name, task in (("good", kit.ones(30, {0})), ("bad", kit.ones(30, range(8)))):
        run = kit.new_run(store, name)
        kit.add_trial(store, run, "baseline", [kit.suite_result(suites["task"], kit.ones(30, range(4))),
                                               kit.suite_result(suites["harmful"], kit.ones(20))], arm_type="baseline")
        kit.add_trial(store, run, "lora", [kit.suite_result(suites["task"], task),
                                           kit.suite_result(suites["harmful"], kit.ones(20))])
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
