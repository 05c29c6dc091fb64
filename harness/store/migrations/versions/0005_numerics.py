"""Numerics on every score: evaluations.numerics (what a suite was scored under: dtype, invariant mode, engine,
library and kernel versions, GPU), and on gate_decisions how close the verdict was (flips_to_change) and the
numerics of both sides it compared (numerics).

Rows written before stay NULL: their numerics read as "unknown".

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("numerics", sa.JSON(), nullable=True))
    with op.batch_alter_table("gate_decisions") as batch:
        batch.add_column(sa.Column("flips_to_change", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("numerics", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gate_decisions") as batch:
        batch.drop_column("numerics")
        batch.drop_column("flips_to_change")
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_column("numerics")
