"""Metrics carry how to read them: `higher_is_better` and `binary` on every metrics row.

Both are written with each evaluation from then on (the scorer's registration, a suite's declaration,
or lm-eval's own direction); rows written before stay NULL, and readers fall back to the scorer registry
for them.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("metrics") as batch:
        batch.add_column(sa.Column("higher_is_better", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("binary", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("metrics") as batch:
        batch.drop_column("binary")
        batch.drop_column("higher_is_better")
