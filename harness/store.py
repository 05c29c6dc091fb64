"""The results store: every run, trial, suite item, output and score as plain rows (SQLAlchemy 2).

SQLite file by default (WAL, so several trials may write at once); any SQLAlchemy URL, such as
PostgreSQL, for a team sharing one store. Everything the report, the app and the gate show is
read from here.
"""
from __future__ import annotations

import json
import os
import socket
import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (JSON, Float, ForeignKey, Integer, String, Text, UniqueConstraint, create_engine, event,
                        select, text)
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from harness.errors import UserError

SCHEMA_VERSION = 1
DEFAULT_STORE = "runs/tunegate.db"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON)
    plan_hash: Mapped[str] = mapped_column(String(64))
    base_model: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | finished | failed
    folder: Mapped[str] = mapped_column(Text, default="")
    git_sha: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[str] = mapped_column(String(40), default=now)
    finished_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


class Trial(Base):
    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("run_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    arm: Mapped[str] = mapped_column(String(100))
    arm_type: Mapped[str] = mapped_column(String(20))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|running|finished|failed
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    folder: Mapped[str] = mapped_column(Text, default="")
    train_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    tokens_per_second: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_memory_gib: Mapped[float | None] = mapped_column(Float, nullable=True)
    final_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
    finished_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


class TrainStep(Base):
    __tablename__ = "train_steps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    lr: Mapped[float | None] = mapped_column(Float, nullable=True)
    grad_norm: Mapped[float | None] = mapped_column(Float, nullable=True)
    tokens_per_second: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_memory_gib: Mapped[float | None] = mapped_column(Float, nullable=True)


class SuiteRow(Base):
    __tablename__ = "suites"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(64))  # content hash
    kind: Mapped[str] = mapped_column(String(40))
    category: Mapped[str] = mapped_column(String(40))
    primary_metric: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)


class ItemRow(Base):
    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("suite_id", "item_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    suite_id: Mapped[int] = mapped_column(ForeignKey("suites.id"), index=True)
    item_key: Mapped[str] = mapped_column(String(200))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class Evaluation(Base):
    """One trial scored on one suite version."""
    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("trial_id", "suite_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"), index=True)
    suite_id: Mapped[int] = mapped_column(ForeignKey("suites.id"), index=True)
    n_items: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[str] = mapped_column(String(40), default=now)


class Output(Base):
    __tablename__ = "outputs"
    __table_args__ = (UniqueConstraint("evaluation_id", "item_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    prompt: Mapped[str] = mapped_column(Text)
    output: Mapped[str] = mapped_column(Text)


class Score(Base):
    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("evaluation_id", "item_id", "metric"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    metric: Mapped[str] = mapped_column(String(100))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: the scorer failed (e.g. judge call)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class Metric(Base):
    """Aggregate of one metric over one evaluation: mean, standard error, item count."""
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("evaluation_id", "metric"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id"), index=True)
    metric: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    stderr: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)


class JudgeCall(Base):
    __tablename__ = "judge_calls"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), index=True)  # content hash of the request
    model: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    response: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(20))  # ok | failed
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[str] = mapped_column(String(40), default=now)


class GateDecision(Base):
    __tablename__ = "gate_decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    candidate_trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id"), nullable=True)
    baseline_trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id"), nullable=True)
    policy_path: Mapped[str] = mapped_column(Text)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    verdict: Mapped[str] = mapped_column(String(20))  # promote | reject | error
    exit_code: Mapped[int] = mapped_column(Integer)
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[str] = mapped_column(String(40), default=now)


class Promotion(Base):
    __tablename__ = "promotions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"))
    decision_id: Mapped[int] = mapped_column(ForeignKey("gate_decisions.id"))
    previous_trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id"), nullable=True)
    promoted_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[str] = mapped_column(String(40), default=now)


def store_url(store: str | None = None) -> str:
    store = store or os.environ.get("TUNEGATE_STORE") or DEFAULT_STORE
    if "://" in store:
        return store
    Path(store).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store}"


class Store:
    def __init__(self, store: str | None = None) -> None:
        self.url = store_url(store)
        self.is_sqlite = self.url.startswith("sqlite")
        kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if self.is_sqlite else {}
        self.engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        try:
            Base.metadata.create_all(self.engine)
            with self.session() as s:
                row = s.get(Meta, "schema_version")
                if row is None:
                    s.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
                elif int(row.value) > SCHEMA_VERSION:
                    raise UserError(f"store schema version {row.value} is newer than this tunegate "
                                    f"({SCHEMA_VERSION}); upgrade tunegate", file=self.url)
        except (DatabaseError, OperationalError) as exc:
            raise UserError(f"cannot open the store: {exc.orig}", file=self.url) from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: everything inside commits together or not at all."""
        with self._session() as s, s.begin():
            yield s

    # --- runs and trials -------------------------------------------------------------------
    def create_run(self, name: str, plan: dict[str, Any], plan_hash: str, base_model: str, folder: str,
                   git_sha: str = "") -> int:
        with self.session() as s:
            run = Run(name=name, plan=plan, plan_hash=plan_hash, base_model=base_model, folder=folder,
                      git_sha=git_sha)
            s.add(run)
            s.flush()
            return run.id

    def update_run_folder(self, run_id: int, folder: str) -> None:
        with self.session() as s:
            run = s.get(Run, run_id)
            assert run is not None
            run.folder = folder

    def latest_run(self, name: str, plan_hash: str | None = None) -> Run | None:
        with self.session() as s:
            q = select(Run).where(Run.name == name)
            if plan_hash:
                q = q.where(Run.plan_hash == plan_hash)
            return s.scalars(q.order_by(Run.id.desc())).first()

    def finish_run(self, run_id: int, status: str) -> None:
        with self.session() as s:
            run = s.get(Run, run_id)
            assert run is not None
            run.status, run.finished_at = status, now()

    def ensure_trial(self, run_id: int, name: str, arm: str, arm_type: str, config: dict[str, Any]) -> Trial:
        with self.session() as s:
            trial = s.scalars(select(Trial).where(Trial.run_id == run_id, Trial.name == name)).first()
            if trial is None:
                trial = Trial(run_id=run_id, name=name, arm=arm, arm_type=arm_type, config=config)
                s.add(trial)
                s.flush()
            return trial

    def update_trial(self, trial_id: int, **fields: Any) -> None:
        with self.session() as s:
            trial = s.get(Trial, trial_id)
            assert trial is not None
            for k, v in fields.items():
                setattr(trial, k, v)

    def add_train_steps(self, trial_id: int, steps: list[dict[str, Any]]) -> None:
        with self.session() as s:
            s.query(TrainStep).filter(TrainStep.trial_id == trial_id).delete()
            s.add_all(TrainStep(trial_id=trial_id, **{k: row.get(k) for k in
                                ("step", "loss", "lr", "grad_norm", "tokens_per_second", "peak_memory_gib")})
                      for row in steps)

    # --- suites and evaluations --------------------------------------------------------------
    def save_evaluation(self, trial_id: int, result: Any) -> int:
        """Store one SuiteResult (outputs, per-item scores, aggregates) in a single transaction."""
        suite = result.suite
        with self.session() as s:
            suite_row = s.scalars(select(SuiteRow).where(SuiteRow.name == suite.name,
                                                         SuiteRow.version == suite.version)).first()
            if suite_row is None:
                suite_row = SuiteRow(name=suite.name, version=suite.version, kind=suite.spec.kind,
                                     category=suite.spec.category, primary_metric=suite.spec.primary,
                                     spec=json.loads(suite.spec.model_dump_json()))
                s.add(suite_row)
                s.flush()
                s.add_all(ItemRow(suite_id=suite_row.id, item_key=item.id,
                                  data=json.loads(item.model_dump_json())) for item in suite.items)
                s.flush()
            item_ids = dict(s.execute(select(ItemRow.item_key, ItemRow.id)
                                      .where(ItemRow.suite_id == suite_row.id)).all())
            old = s.scalars(select(Evaluation).where(Evaluation.trial_id == trial_id,
                                                     Evaluation.suite_id == suite_row.id)).first()
            if old is not None:
                for table in (Score, Output, Metric):
                    s.query(table).filter(table.evaluation_id == old.id).delete()
                s.delete(old)
                s.flush()
            ev = Evaluation(trial_id=trial_id, suite_id=suite_row.id, n_items=len(result.items),
                            seconds=result.seconds)
            s.add(ev)
            s.flush()
            for r in result.items:
                iid = item_ids[r.item_id]
                s.add(Output(evaluation_id=ev.id, item_id=iid, prompt=r.prompt, output=r.output))
                s.add_all(Score(evaluation_id=ev.id, item_id=iid, metric=m, value=v) for m, v in r.scores.items())
            s.add_all(Metric(evaluation_id=ev.id, metric=m, value=mean, stderr=se, n=n)
                      for m, (mean, se, n) in result.metrics.items())
            return ev.id

    # --- reading ---------------------------------------------------------------------------
    def runs(self, name: str | None = None, status: str | None = None, limit: int = 50) -> list[Run]:
        with self.session() as s:
            q = select(Run)
            if name:
                q = q.where(Run.name.like(f"%{name}%"))
            if status:
                q = q.where(Run.status == status)
            return list(s.scalars(q.order_by(Run.id.desc()).limit(limit)))

    def run(self, ref: str | int) -> Run:
        with self.session() as s:
            run = s.get(Run, int(ref)) if str(ref).isdigit() else \
                s.scalars(select(Run).where(Run.name == str(ref)).order_by(Run.id.desc())).first()
        if run is None:
            raise UserError(f"no run '{ref}' in the store", file=self.url)
        return run

    def trials(self, run_id: int) -> list[Trial]:
        with self.session() as s:
            return list(s.scalars(select(Trial).where(Trial.run_id == run_id).order_by(Trial.id)))

    def trial(self, ref: str) -> Trial:
        """'RUN/TRIAL' (run id or name, trial name) or 't<id>'."""
        if ref.startswith("t") and ref[1:].isdigit():
            with self.session() as s:
                trial = s.get(Trial, int(ref[1:]))
        else:
            run_ref, _, trial_name = ref.rpartition("/")
            if not run_ref:
                raise UserError(f"'{ref}' is not a trial reference: use RUN/TRIAL (e.g. demo/lora) or t<id>")
            run = self.run(run_ref)
            with self.session() as s:
                trial = s.scalars(select(Trial).where(Trial.run_id == run.id, Trial.name == trial_name)).first()
        if trial is None:
            raise UserError(f"no trial '{ref}' in the store", file=self.url)
        return trial

    def train_steps(self, trial_id: int) -> list[TrainStep]:
        with self.session() as s:
            return list(s.scalars(select(TrainStep).where(TrainStep.trial_id == trial_id).order_by(TrainStep.step)))

    def evaluations(self, trial_id: int) -> list[tuple[Evaluation, SuiteRow]]:
        with self.session() as s:
            return [tuple(r) for r in s.execute(select(Evaluation, SuiteRow).join(SuiteRow)
                                                 .where(Evaluation.trial_id == trial_id).order_by(SuiteRow.name))]

    def metrics(self, evaluation_id: int) -> dict[str, Metric]:
        with self.session() as s:
            return {m.metric: m for m in s.scalars(select(Metric).where(Metric.evaluation_id == evaluation_id))}

    def item_scores(self, evaluation_id: int, metric: str) -> dict[str, float | None]:
        with self.session() as s:
            rows = s.execute(select(ItemRow.item_key, Score.value).join(ItemRow, Score.item_id == ItemRow.id)
                             .where(Score.evaluation_id == evaluation_id, Score.metric == metric))
            return {k: v for k, v in rows}

    def item_rows(self, evaluation_id: int) -> list[dict[str, Any]]:
        """Per item: key, item data, prompt, output and every score."""
        with self.session() as s:
            out: dict[int, dict[str, Any]] = {}
            for item, o in s.execute(select(ItemRow, Output).join(Output, Output.item_id == ItemRow.id)
                                     .where(Output.evaluation_id == evaluation_id).order_by(ItemRow.id)):
                out[item.id] = {"item": item.item_key, "data": item.data, "prompt": o.prompt, "output": o.output,
                                "scores": {}}
            for sc in s.scalars(select(Score).where(Score.evaluation_id == evaluation_id)):
                out[sc.item_id]["scores"][sc.metric] = sc.value
            return list(out.values())

    # --- gate --------------------------------------------------------------------------------
    def record_decision(self, **fields: Any) -> int:
        with self.session() as s:
            d = GateDecision(**fields)
            s.add(d)
            s.flush()
            return d.id

    def promote(self, trial_id: int, decision_id: int) -> int:
        with self.session() as s:
            last = s.scalars(select(Promotion).order_by(Promotion.id.desc())).first()
            p = Promotion(trial_id=trial_id, decision_id=decision_id,
                          previous_trial_id=last.trial_id if last else None, promoted_by=_who())
            s.add(p)
            s.flush()
            return p.id

    def promoted_trial(self) -> Trial | None:
        with self.session() as s:
            last = s.scalars(select(Promotion).order_by(Promotion.id.desc())).first()
            return s.get(Trial, last.trial_id) if last else None

    def decisions(self, limit: int = 50) -> list[GateDecision]:
        with self.session() as s:
            return list(s.scalars(select(GateDecision).order_by(GateDecision.id.desc()).limit(limit)))

    def promotions(self) -> list[Promotion]:
        with self.session() as s:
            return list(s.scalars(select(Promotion).order_by(Promotion.id.desc())))


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return os.environ.get("GITHUB_ACTOR") or f"{user}@{socket.gethostname()}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def check_integrity(store: Store) -> None:
    if store.is_sqlite:
        with store.engine.connect() as conn:
            result = conn.execute(text("PRAGMA integrity_check")).scalar()
        if result != "ok":
            raise UserError(f"store is corrupted: {result}", file=store.url)
