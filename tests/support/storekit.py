"""Helpers for the store and gate tests: suites on disk, results built from per-item scores (no model),
trials filled into a real store, and worker processes that write to one store at the same time.

Run as a module it is a worker:  python -m tests.support.storekit write URL WORKER N_TRIALS SUITE_YAML
                                 python -m tests.support.storekit hang URL MARKER SUITE_YAML
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.evaluation import _suite as suite_registry
from tests.support import REPO


def make_suite(
    folder: Path,
    name: str,
    n: int,
    *,
    category: str = "task",
    scorers: tuple[str, ...] = ("exact_match",),
    salt: str = "",
) -> Any:
    """A generate suite of `n` items on disk, loaded through the registry (so it has its content hash)."""
    d = folder / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "suite.yaml").write_text(
        f"name: {name}\ncategory: {category}\nkind: generate\nscorers: [{', '.join(scorers)}]\n# {salt}\n"
    )
    (d / "items.jsonl").write_text(
        "".join(
            json.dumps({"id": f"q{i:03d}", "prompt": f"question {i}{salt}", "reference": f"answer {i}"}) + "\n"
            for i in range(n)
        )
    )
    suite_registry._load.cache_clear()
    return suite_registry.load(str(d / "suite.yaml"))


def suite_result(suite: Any, scores: dict[str, list[float | None]] | list[float | None], seconds: float = 1.0) -> Any:
    """A real harness.evaluation.SuiteResult with the given per-item scores (a list: the suite's first
    scorer). A None score is a failed scorer call."""
    from harness.evaluation import ItemResult, SuiteResult

    per_metric = scores if isinstance(scores, dict) else {suite.scorer_names[0]: scores}
    items = [
        ItemResult(item.id, f"prompt {item.id}", f"output {item.id}", {m: vals[i] for m, vals in per_metric.items()})
        for i, item in enumerate(suite.items)
    ]
    return SuiteResult(suite, items, seconds)  # type: ignore[arg-type]


@dataclass
class LightResult:
    """The same shape as SuiteResult, for worker processes that should not import torch."""

    suite: Any
    items: list[Any]
    seconds: float
    metrics: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    kinds: dict[str, Any] = field(default_factory=dict)  # none: stored NULL, read from the scorer registry


@dataclass
class LightItem:
    item_id: str
    prompt: str
    output: str
    scores: dict[str, float | None]


def light_result(suite: Any, scores: list[float]) -> LightResult:
    metric = suite.scorer_names[0]
    items = [LightItem(item.id, f"p {item.id}", f"o {item.id}", {metric: s}) for item, s in zip(suite.items, scores)]
    return LightResult(suite, items, 0.5, _aggregates({metric: scores}))


def _aggregates(per_metric: dict[str, list[float | None]]) -> dict[str, tuple[float, float, int]]:
    """Mean, standard error and count per metric (plain Python: workers stay light)."""
    out = {}
    for m, vals in per_metric.items():
        present = [float(v) for v in vals if v is not None]
        se = statistics.stdev(present) / math.sqrt(len(present)) if len(present) > 1 else 0.0
        out[m] = (statistics.fmean(present), se, len(present))
    return out


def add_trial(
    store: Any,
    run_id: int,
    name: str,
    results: list[Any],
    *,
    arm_type: str = "lora",
    status: str = "finished",
    error: str | None = None,
) -> Any:
    trial = store.ensure_trial(run_id, name, name, arm_type, {"type": arm_type})
    for r in results:
        store.save_evaluation(trial.id, r)
    store.update_trial(trial.id, status=status, error=error)
    return store.get_trial(f"t{trial.id}")


def new_run(store: Any, name: str = "exp", base_model: str = "base-model") -> int:
    return store.create_run(name, {"name": name}, "h" * 8, base_model, "")


def ones(n: int, zeros_at: set[int] | range | None = None) -> list[float]:
    zeros_at = set(zeros_at or ())
    return [0.0 if i in zeros_at else 1.0 for i in range(n)]


def write_policy(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tunegate(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The real command line in a fresh process (python -m harness.cli ...)."""
    full_env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=timeout,
    )


# --- worker processes -----------------------------------------------------------------------------
def frozen_suite(suite_path: Path) -> Path:
    """The loaded suite as JSON, so a worker gets it without the scorer registry (and scipy) to import."""
    out = Path(suite_path).with_name("suite.json")
    out.write_text(suite_registry.load(str(suite_path)).model_dump_json())
    return out


def _thaw(frozen: str) -> Any:
    return suite_registry.Suite.model_validate_json(Path(frozen).read_text())


def start_workers(url: str, suite_path: Path, n_workers: int, n_trials: int) -> list[subprocess.Popen[str]]:
    frozen = frozen_suite(suite_path)
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.storekit", "write", url, str(w), str(n_trials), str(frozen)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ | {"PYTHONPATH": str(REPO)},
        )
        for w in range(n_workers)
    ]


def _write_worker(url: str, worker: int, n_trials: int, suite_path: str) -> None:
    """Each worker: its own run with n_trials trials scored on the shared suite, one trial shared by every
    worker (the same run, the same name), a judge call per trial, and a promotion of its last trial."""
    from harness.store import Store

    store = Store(url)
    suite = _thaw(suite_path)
    n = len(suite.items)
    shared_run = store.get_run("shared").id
    run_id = store.create_run(f"worker-{worker}", {"worker": worker}, "w", "base", "")
    last = None
    for t in range(n_trials):
        trial = store.ensure_trial(run_id, f"trial-{t}", "lora", "lora", {"t": t})
        store.save_evaluation(trial.id, light_result(suite, ones(n, {t % n, worker % n})))
        store.record_judge_call(f"key-{worker}-{t}", "judge", {"w": worker}, "ok", "ok")
        store.update_trial(trial.id, status="finished")
        last = trial
        shared = store.ensure_trial(shared_run, "together", "lora", "lora", {})
        store.save_evaluation(shared.id, light_result(suite, ones(n, {worker})))
    assert last is not None
    store.promote(last.id, None, evidence={"worker": worker}, reason=f"worker {worker}")
    print(json.dumps({"worker": worker, "run": run_id}))


def _hang_worker(url: str, marker: str, suite_path: str) -> None:
    """Save an evaluation, but stop inside the transaction (after every row is flushed, before COMMIT)
    and wait there to be killed."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from harness.store import Store

    store = Store(url)
    suite = _thaw(suite_path)
    trial = store.ensure_trial(store.get_run("victim").id, "half", "lora", "lora", {})

    @event.listens_for(Session, "before_commit")
    def _stall(session: Session) -> None:
        if any(True for _ in session.identity_map.values()):
            Path(marker).write_text(str(os.getpid()))
            time.sleep(600)

    store.save_evaluation(trial.id, light_result(suite, ones(len(suite.items))))


# --- checks shared by the SQLite and PostgreSQL tests ---------------------------------------------------
from sqlalchemy import create_engine, func, select, text  # noqa: E402

from harness.base import UserError  # noqa: E402
from harness.store import (  # noqa: E402
    Evaluation,
    ItemRow,
    JudgeCall,
    Metric,
    Output,
    Promotion,
    Score,
    Store,
    SuiteRow,
    Trial,
    check_integrity,
    migrations,  # noqa: E402
)


def _counts(store: Store) -> dict[str, int]:
    with store.reading() as s:
        return {
            t.__tablename__: s.scalar(select(func.count()).select_from(t)) or 0
            for t in (Evaluation, Output, Score, Metric, SuiteRow, ItemRow, Trial, Promotion, JudgeCall)
        }


def _alembic_diff(store: Store) -> list[Any]:
    """Differences between the store's tables and the ORM models (empty: the migrations made exactly them)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from harness.store import Base

    with store.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


def _fill_0001(url: str) -> None:
    """Rows in the skeleton's schema (revision 0001), written with plain SQL."""
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(
            text(
                "INSERT INTO runs (id, name, plan, plan_hash, base_model, status, folder, git_sha, created_at) "
                "VALUES (1, 'old', '{}', 'h', 'smollm2-135m', 'finished', '', '', '2024-01-01')"
            )
        )
        for tid, name, arm in ((1, "baseline", "baseline"), (2, "lora", "lora")):
            c.execute(
                text(
                    "INSERT INTO trials (id, run_id, name, arm, arm_type, config, status, folder) "
                    f"VALUES ({tid}, 1, '{name}', '{arm}', '{arm}', '{{}}', 'finished', '/f/{name}')"
                )
            )
        c.execute(
            text(
                "INSERT INTO gate_decisions (id, candidate_trial_id, baseline_trial_id, policy_path, policy, "
                "verdict, exit_code, rules, reason, created_at) VALUES (1, 2, 1, 'g.yaml', '{}', 'promote', 0, "
                "'[]', 'ok', '2024-01-02')"
            )
        )
        c.execute(
            text(
                "INSERT INTO promotions (id, trial_id, decision_id, promoted_by, created_at) "
                "VALUES (1, 2, 1, 'me', '2024-01-02')"
            )
        )
    eng.dispose()


def check_upgrade_from_0001(url: str) -> None:
    migrations.upgrade(url, 10, target="0001")
    _fill_0001(url)
    store = Store(url)
    assert _alembic_diff(store) == []
    lora = store.get_trial("old/lora")
    assert store.get_model(lora.model_id).name == "old#1/lora" and store.get_model(lora.model_id).path == "/f/lora"
    assert store.get_model(store.get_trial("old/baseline").model_id).name == "smollm2-135m"
    [p] = store.promotions()
    assert (p.trial_id, p.kind, p.evidence, p.model_id) == (2, "promote", {}, lora.model_id)
    assert store.promoted_trial().id == 2
    assert store.decisions()[0].candidate_ref == ""
    store.dispose()


def check_newer_schema_refused(url: str) -> None:
    Store(url).dispose()
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    eng.dispose()
    import pytest

    with pytest.raises(UserError, match="newer than this tunegate"):
        Store(url)


def check_killed_writer_leaves_nothing(url: str, suite_path: Path, tmp_path: Path) -> None:
    store = Store(url)
    store.create_run("victim", {}, "h", "m", "")
    marker = tmp_path / "inside-transaction"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.storekit", "hang", url, str(marker), str(frozen_suite(suite_path))],
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the writer never reached its transaction"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    store = Store(url, timeout=20)
    half = store.get_trial("victim/half")  # committed before the killed transaction began
    assert store.evaluations(half.id) == []
    counts = _counts(store)
    assert counts["outputs"] == counts["scores"] == counts["suites"] == counts["items"] == 0
    if store.is_sqlite:
        check_integrity(store)
    suite = suite_registry.load(str(suite_path))
    store.save_evaluation(half.id, light_result(suite, ones(len(suite.items))))  # the lock is free again
    assert _counts(store)["scores"] == len(suite.items)
    store.dispose()


def check_concurrent_writers(url: str, suite_path: Path, workers: int = 3, trials: int = 2) -> None:
    store = Store(url)
    store.create_run("shared", {}, "h", "m", "")
    procs = start_workers(url, suite_path, workers, trials)
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    n_items = len(suite_registry.load(str(suite_path)).items)
    counts = _counts(store)
    assert counts["suites"] == 1 and counts["items"] == n_items  # created once, though every worker tried
    shared = store.trials(store.get_run("shared").id)
    assert [t.name for t in shared] == ["together"]  # one row, though every worker created it
    own = workers * trials
    assert counts["evaluations"] == own + 1
    assert counts["scores"] == counts["outputs"] == (own + 1) * n_items
    assert counts["judge_calls"] == own
    for w in range(workers):
        run = store.get_run(f"worker-{w}")
        assert [t.status for t in store.trials(run.id)] == ["finished"] * trials
        for t in store.trials(run.id):
            [(ev, _)] = store.evaluations(t.id)
            assert store.metrics(ev.id)["exact_match"].n == n_items
    promotions = store.promotions()
    assert len(promotions) == workers
    # each promotion names the one before it: the chain has no fork even though they raced
    chain = list(reversed(promotions))
    assert chain[0].previous_trial_id is None
    assert all(p.previous_trial_id == q.trial_id for q, p in zip(chain, chain[1:]))
    store.dispose()


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:]
    if cmd == "write":
        _write_worker(rest[0], int(rest[1]), int(rest[2]), rest[3])
    elif cmd == "hang":
        _hang_worker(rest[0], rest[1], rest[2])
    else:
        raise SystemExit(f"unknown worker command {cmd}")
