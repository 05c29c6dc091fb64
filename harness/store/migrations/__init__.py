"""Schema migrations for the results store (alembic). `upgrade()` runs when a Store opens.

An empty store is created at the newest revision; an older one is upgraded in place, inside one
locked transaction, so several processes opening the same store at once do not race; a store
written by a newer tunegate (a revision this copy does not know) is refused with a UserError.
Stores made by the walking skeleton (tables, a `meta` row schema_version=1, no alembic_version) are
recognized as revision 0001 and upgraded from there. See README.md here for the tables.

New revision after changing the models in harness/store/_tables.py:
    alembic -c harness/store/migrations/alembic.ini -x url=sqlite:///dev.db revision --autogenerate -m "what changed"
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from harness.base._errors import UserError
from harness.store._engine import make_engine

HERE = Path(__file__).resolve().parent
LEGACY_REVISION = "0001"  # the skeleton's schema, made by create_all with meta.schema_version = 1
PG_MIGRATION_LOCK = 7126353


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@cache
def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    rev = script().get_current_head()
    assert rev is not None
    return rev


def known_revisions() -> set[str]:
    return {r.revision for r in script().walk_revisions()}


def current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(
    url: str, timeout: float, *, where: str | None = None, target: str = "head", engine: Engine | None = None
) -> None:
    """Bring the store at `url` to `target` (default: the newest revision). `engine`: migrate through this
    engine instead of a private one (an in-memory SQLite database exists only inside its own engine)."""

    where = where or url
    # a private engine with foreign keys off on SQLite, so table rebuilds (batch mode) keep referenced rows
    own = engine is None
    engine = engine or make_engine(url, timeout, foreign_keys=False, poolclass=NullPool)
    want = head() if target == "head" else target
    try:
        with engine.connect() as conn:  # fast path, no write lock: already at the target
            rev = _revision(conn, where)
            conn.rollback()
        if rev == want:
            return
        with engine.execution_options(tunegate_write=True).connect() as conn, conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})"))
            rev = _revision(conn, where)  # again, under the lock: another process may have done it
            if rev is None and _has_legacy_tables(conn):
                _check_legacy(conn, where)
                command.stamp(config(conn), LEGACY_REVISION)
                rev = LEGACY_REVISION
            if rev != want:
                command.upgrade(config(conn), want)
    finally:
        if own:
            engine.dispose()


def _revision(conn: Connection, where: str) -> str | None:
    rev = current(conn)
    if rev is not None and rev not in known_revisions():
        raise UserError(
            f"the store's schema (revision '{rev}') is newer than this tunegate knows "
            f"(newest: '{head()}'); upgrade tunegate or use another store",
            file=where,
        )
    return rev


def _has_legacy_tables(conn: Connection) -> bool:
    return inspect(conn).has_table("runs")


def _check_legacy(conn: Connection, where: str) -> None:
    if not inspect(conn).has_table("meta"):
        raise UserError(
            "the database has tunegate-like tables but no schema version; not a tunegate store?", file=where
        )
    version = conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar()
    if version != "1":
        raise UserError(
            f"the store's schema version '{version}' is newer than this tunegate knows; "
            "upgrade tunegate or use another store",
            file=where,
        )
