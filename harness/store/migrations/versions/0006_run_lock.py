"""The run lock's heartbeat: runs.driver_heartbeat, the time the driving process last said it is alive, so a
second `tunegate run --resume` refuses a run another process drives, and takes over one whose driver is gone
(dead on this host, or silent past the stale timeout on another host).

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("driver_heartbeat", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("driver_heartbeat")
