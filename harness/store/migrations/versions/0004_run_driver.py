"""The process that drives a run: runs.driver_pid and runs.driver_host, so a reader can tell a run whose
process is gone (killed, crashed) and show it as `interrupted` instead of `running` forever.

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("driver_pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("driver_host", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("driver_host")
        batch.drop_column("driver_pid")
