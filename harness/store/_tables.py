"""The store's schema: one ORM class per table (documented in harness/store/migrations/README.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One execution of a plan (or of `tunegate eval`)."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON)
    plan_hash: Mapped[str] = mapped_column(String(64))
    base_model: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | finished | failed | interrupted
    folder: Mapped[str] = mapped_column(Text, default="")
    driver_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the process running it, and
    driver_host: Mapped[str | None] = mapped_column(String(255), nullable=True)  # its host: gone -> interrupted
    driver_heartbeat: Mapped[str | None] = mapped_column(String(40), nullable=True)  # its last sign of life (lock)
    git_sha: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[str] = mapped_column(String(40), default=now)
    finished_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


class ModelRow(Base):
    """A model that was scored: a base model spec as given, or the artifact of one trial (adapter,
    full fine-tune, or a base model with a prompt/RAG arm around it)."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(500), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # base | the arm type that made it (lora, prompt, ...)
    base_model: Mapped[str] = mapped_column(String(500))
    path: Mapped[str] = mapped_column(Text, default="")
    trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id", use_alter=True), nullable=True)
    created_at: Mapped[str] = mapped_column(String(40), default=now)


class Trial(Base):
    """One arm (one sweep point) of a run: trained if needed, then scored on every suite."""

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
    model_id: Mapped[int | None] = mapped_column(
        ForeignKey("models.id", name="fk_trials_model_id_models"), nullable=True, index=True
    )


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
    """One version of a suite; `version` is the content hash of its YAML and items."""

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
    # what the scores were computed under: dtype, invariant mode, engine, library and kernel versions, GPU, ...
    # (text values; NULL in rows written before revision 0005: read as "unknown")
    numerics: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)


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
    """Aggregate of one metric over one evaluation: mean, standard error, item count, and how to read it
    (NULL in rows written before revision 0003: readers ask the scorer registry then). A corpus-level metric
    (`corpus`, from revision 0007; NULL before: per-item) has the suite's value, stderr 0 and no item scores."""

    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("evaluation_id", "metric"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id"), index=True)
    metric: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    stderr: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    higher_is_better: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    binary: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # every item scores 0 or 1
    corpus: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # one value for the suite, no item scores


class JudgeCall(Base):
    """One LLM-judge request and its answer (also the judge's cache, keyed by the request's hash)."""

    __tablename__ = "judge_calls"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), index=True)  # content hash of the request
    model: Mapped[str] = mapped_column(String(200))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    response: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(20))  # ok | failed
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[str] = mapped_column(String(40), default=now)
    evaluation_id: Mapped[int | None] = mapped_column(
        ForeignKey("evaluations.id", name="fk_judge_calls_evaluation_id_evaluations"), nullable=True, index=True
    )
    item_id: Mapped[int | None] = mapped_column(
        ForeignKey("items.id", name="fk_judge_calls_item_id_items"), nullable=True
    )


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
    candidate_ref: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[str] = mapped_column(String(200), default="")
    flips_to_change: Mapped[int | None] = mapped_column(Integer, nullable=True)  # fewest item changes to flip it
    numerics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # candidate, baseline, differ


class Promotion(Base):
    """The promoted model changed: by a passing gate decision (kind promote) or by `tunegate rollback`."""

    __tablename__ = "promotions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id"))  # the trial promoted from now on
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("gate_decisions.id"), nullable=True)
    previous_trial_id: Mapped[int | None] = mapped_column(ForeignKey("trials.id"), nullable=True)
    promoted_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[str] = mapped_column(String(40), default=now)
    kind: Mapped[str] = mapped_column(String(20), default="promote")  # promote | rollback
    model_id: Mapped[int | None] = mapped_column(
        ForeignKey("models.id", name="fk_promotions_model_id_models"), nullable=True
    )
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # evaluation ids, decision id, ...
    reason: Mapped[str] = mapped_column(Text, default="")


class EvaluationLike(Protocol):
    """What save_evaluation needs; harness.evaluation.SuiteResult is one."""

    suite: Any  # harness.evaluation._suite.Suite
    items: Sequence[Any]  # ItemResult: item_id, prompt, output, scores
    seconds: float
    metrics: dict[str, tuple[float, float, int]]
    kinds: Mapping[str, Any]  # name -> MetricKind (higher_is_better, binary, corpus); one not in it is stored NULL
    # and, read with getattr (optional): numerics, a flat dict[str, str] of what the scores were computed under
