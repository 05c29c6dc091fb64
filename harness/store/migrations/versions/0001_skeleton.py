"""The walking skeleton's schema: runs, trials, train steps, suites, items, evaluations, outputs,
scores, metrics, judge calls, gate decisions, promotions, and a `meta` table with schema_version 1.

Stores created before alembic have exactly these tables and are stamped with this revision.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "meta", sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text(), nullable=False)
    )
    op.bulk_insert(
        sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text)),
        [{"key": "schema_version", "value": "1"}],
    )
    op.create_table(
        "runs",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("plan_hash", sa.String(64), nullable=False),
        sa.Column("base_model", sa.String(500), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("git_sha", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("finished_at", sa.String(40), nullable=True),
    )
    op.create_index("ix_runs_name", "runs", ["name"])
    op.create_table(
        "trials",
        _id(),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("arm", sa.String(100), nullable=False),
        sa.Column("arm_type", sa.String(20), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("train_seconds", sa.Float(), nullable=True),
        sa.Column("tokens_per_second", sa.Float(), nullable=True),
        sa.Column("peak_memory_gib", sa.Float(), nullable=True),
        sa.Column("final_loss", sa.Float(), nullable=True),
        sa.Column("started_at", sa.String(40), nullable=True),
        sa.Column("finished_at", sa.String(40), nullable=True),
        sa.UniqueConstraint("run_id", "name"),
    )
    op.create_index("ix_trials_run_id", "trials", ["run_id"])
    op.create_table(
        "train_steps",
        _id(),
        sa.Column("trial_id", sa.Integer(), sa.ForeignKey("trials.id"), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("lr", sa.Float(), nullable=True),
        sa.Column("grad_norm", sa.Float(), nullable=True),
        sa.Column("tokens_per_second", sa.Float(), nullable=True),
        sa.Column("peak_memory_gib", sa.Float(), nullable=True),
    )
    op.create_index("ix_train_steps_trial_id", "train_steps", ["trial_id"])
    op.create_table(
        "suites",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("primary_metric", sa.String(100), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.UniqueConstraint("name", "version"),
    )
    op.create_table(
        "items",
        _id(),
        sa.Column("suite_id", sa.Integer(), sa.ForeignKey("suites.id"), nullable=False),
        sa.Column("item_key", sa.String(200), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.UniqueConstraint("suite_id", "item_key"),
    )
    op.create_index("ix_items_suite_id", "items", ["suite_id"])
    op.create_table(
        "evaluations",
        _id(),
        sa.Column("trial_id", sa.Integer(), sa.ForeignKey("trials.id"), nullable=False),
        sa.Column("suite_id", sa.Integer(), sa.ForeignKey("suites.id"), nullable=False),
        sa.Column("n_items", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.UniqueConstraint("trial_id", "suite_id"),
    )
    op.create_index("ix_evaluations_trial_id", "evaluations", ["trial_id"])
    op.create_index("ix_evaluations_suite_id", "evaluations", ["suite_id"])
    op.create_table(
        "outputs",
        _id(),
        sa.Column("evaluation_id", sa.Integer(), sa.ForeignKey("evaluations.id"), nullable=False),
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("items.id"), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.UniqueConstraint("evaluation_id", "item_id"),
    )
    op.create_index("ix_outputs_evaluation_id", "outputs", ["evaluation_id"])
    op.create_table(
        "scores",
        _id(),
        sa.Column("evaluation_id", sa.Integer(), sa.ForeignKey("evaluations.id"), nullable=False),
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("items.id"), nullable=False),
        sa.Column("metric", sa.String(100), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.UniqueConstraint("evaluation_id", "item_id", "metric"),
    )
    op.create_index("ix_scores_evaluation_id", "scores", ["evaluation_id"])
    op.create_table(
        "metrics",
        _id(),
        sa.Column("evaluation_id", sa.Integer(), sa.ForeignKey("evaluations.id"), nullable=False),
        sa.Column("metric", sa.String(100), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("stderr", sa.Float(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.UniqueConstraint("evaluation_id", "metric"),
    )
    op.create_index("ix_metrics_evaluation_id", "metrics", ["evaluation_id"])
    op.create_table(
        "judge_calls",
        _id(),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    op.create_index("ix_judge_calls_key", "judge_calls", ["key"])
    op.create_table(
        "gate_decisions",
        _id(),
        sa.Column("candidate_trial_id", sa.Integer(), sa.ForeignKey("trials.id"), nullable=True),
        sa.Column("baseline_trial_id", sa.Integer(), sa.ForeignKey("trials.id"), nullable=True),
        sa.Column("policy_path", sa.Text(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("verdict", sa.String(20), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    op.create_table(
        "promotions",
        _id(),
        sa.Column("trial_id", sa.Integer(), sa.ForeignKey("trials.id"), nullable=False),
        sa.Column("decision_id", sa.Integer(), sa.ForeignKey("gate_decisions.id"), nullable=False),
        sa.Column("previous_trial_id", sa.Integer(), sa.ForeignKey("trials.id"), nullable=True),
        sa.Column("promoted_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "promotions",
        "gate_decisions",
        "judge_calls",
        "metrics",
        "scores",
        "outputs",
        "evaluations",
        "items",
        "suites",
        "train_steps",
        "trials",
        "runs",
        "meta",
    ):
        op.drop_table(table)
