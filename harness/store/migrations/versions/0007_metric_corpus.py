"""Corpus-level metrics: `corpus` on every metrics row.

True for a metric computed once over a whole suite (an `evaluate` scorer with per_item: false), which has
no per-item scores: its value is the suite's, its stderr 0 (not estimated), and item-based analysis (paired
intervals, McNemar, flips, the gate's relative rules) does not apply. Rows written before stay NULL: per-item.

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("metrics") as batch:
        batch.add_column(sa.Column("corpus", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("metrics") as batch:
        batch.drop_column("corpus")
