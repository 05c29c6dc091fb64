"""alembic environment: migrate the connection the Store passes in, or a URL given to the alembic
command line (-x url=... or $TUNEGATE_STORE)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from harness.store._engine import store_url
from harness.store._tables import Base

config = context.config
target_metadata = Base.metadata


def run_on(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # from harness.store.migrations.upgrade(): already inside its locked transaction
        run_on(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or store_url(None)
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        run_on(conn)
        conn.commit()


main()
