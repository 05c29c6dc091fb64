"""Models, rollbacks and promotion evidence.

- new table `models` (every scored model: a base model spec, or a trial's artifact) and trials.model_id;
  existing trials are linked to a model row (baseline arms to their run's base model);
- promotions: decision_id may be empty (rollbacks), new kind / model_id / evidence / reason;
- gate_decisions: candidate_ref (what the user asked for) and decided_by;
- judge_calls: evaluation_id and item_id, to find the judge calls behind a score;
- the skeleton's `meta` table goes (alembic_version carries the schema version now).

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(500), nullable=False, unique=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("base_model", sa.String(500), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("trial_id", sa.Integer(), sa.ForeignKey("trials.id"), nullable=True),
        sa.Column("created_at", sa.String(40), nullable=False),
    )
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("model_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_trials_model_id_models", "models", ["model_id"], ["id"])
        batch.create_index("ix_trials_model_id", ["model_id"])
    _link_existing_trials()

    with op.batch_alter_table("promotions") as batch:
        batch.alter_column("decision_id", existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("kind", sa.String(20), nullable=False, server_default="promote"))
        batch.add_column(sa.Column("model_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("evidence", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("reason", sa.Text(), nullable=False, server_default=""))
        batch.create_foreign_key("fk_promotions_model_id_models", "models", ["model_id"], ["id"])
    op.execute("UPDATE promotions SET evidence = '{}' WHERE evidence IS NULL")
    op.execute("UPDATE promotions SET model_id = (SELECT model_id FROM trials WHERE trials.id = promotions.trial_id)")
    with op.batch_alter_table("promotions") as batch:
        batch.alter_column("evidence", existing_type=sa.JSON(), nullable=False)
        batch.alter_column("kind", existing_type=sa.String(20), server_default=None)
        batch.alter_column("reason", existing_type=sa.Text(), server_default=None)

    with op.batch_alter_table("gate_decisions") as batch:
        batch.add_column(sa.Column("candidate_ref", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("decided_by", sa.String(200), nullable=False, server_default=""))
    with op.batch_alter_table("gate_decisions") as batch:
        batch.alter_column("candidate_ref", existing_type=sa.Text(), server_default=None)
        batch.alter_column("decided_by", existing_type=sa.String(200), server_default=None)

    with op.batch_alter_table("judge_calls") as batch:
        batch.add_column(sa.Column("evaluation_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("item_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_judge_calls_evaluation_id_evaluations", "evaluations", ["evaluation_id"], ["id"])
        batch.create_foreign_key("fk_judge_calls_item_id_items", "items", ["item_id"], ["id"])
        batch.create_index("ix_judge_calls_evaluation_id", ["evaluation_id"])

    op.drop_table("meta")


def _link_existing_trials() -> None:
    """One model row per existing trial: baseline arms score their run's base model as it is; any other
    arm produced its own model, named RUN_NAME#RUN_ID/TRIAL like new trials."""
    conn = op.get_bind()
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    models = sa.table(
        "models",
        sa.column("id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("kind", sa.String),
        sa.column("base_model", sa.String),
        sa.column("path", sa.Text),
        sa.column("trial_id", sa.Integer),
        sa.column("created_at", sa.String),
    )
    trials = sa.table("trials", sa.column("id", sa.Integer), sa.column("model_id", sa.Integer))
    rows = conn.execute(
        sa.text(
            "SELECT t.id, t.name, t.arm_type, t.folder, r.id, r.name, r.base_model "
            "FROM trials t JOIN runs r ON r.id = t.run_id ORDER BY t.id"
        )
    ).all()
    ids: dict[str, int] = {}
    for trial_id, trial_name, arm_type, folder, run_id, run_name, base in rows:
        if arm_type == "baseline":
            name, values = base, {"kind": "base", "base_model": base, "path": "", "trial_id": None}
        else:
            name = f"{run_name}#{run_id}/{trial_name}"
            values = {"kind": arm_type, "base_model": base, "path": folder or "", "trial_id": trial_id}
        if name not in ids:
            conn.execute(models.insert().values(name=name, created_at=stamp, **values))
            ids[name] = conn.execute(sa.select(models.c.id).where(models.c.name == name)).scalar_one()
        conn.execute(trials.update().where(trials.c.id == trial_id).values(model_id=ids[name]))


def downgrade() -> None:
    op.create_table(
        "meta", sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text(), nullable=False)
    )
    op.bulk_insert(
        sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text)),
        [{"key": "schema_version", "value": "1"}],
    )
    with op.batch_alter_table("judge_calls") as batch:
        batch.drop_index("ix_judge_calls_evaluation_id")
        batch.drop_constraint("fk_judge_calls_item_id_items", type_="foreignkey")
        batch.drop_constraint("fk_judge_calls_evaluation_id_evaluations", type_="foreignkey")
        batch.drop_column("item_id")
        batch.drop_column("evaluation_id")
    with op.batch_alter_table("gate_decisions") as batch:
        batch.drop_column("decided_by")
        batch.drop_column("candidate_ref")
    op.execute("DELETE FROM promotions WHERE decision_id IS NULL")  # rollbacks cannot be expressed in 0001
    with op.batch_alter_table("promotions") as batch:
        batch.drop_constraint("fk_promotions_model_id_models", type_="foreignkey")
        batch.drop_column("reason")
        batch.drop_column("evidence")
        batch.drop_column("model_id")
        batch.drop_column("kind")
        batch.alter_column("decision_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("trials") as batch:
        batch.drop_index("ix_trials_model_id")
        batch.drop_constraint("fk_trials_model_id_models", type_="foreignkey")
        batch.drop_column("model_id")
    op.drop_table("models")
