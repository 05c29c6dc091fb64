"""Store URLs and engines: SQLite (WAL, queued writers) or any SQLAlchemy URL such as PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import (
    create_engine,
    event,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from harness.base._errors import UserError, ensure_folder

DEFAULT_STORE = "runs/tunegate.db"
DEFAULT_TIMEOUT_S = 60.0


def store_url(store: str | None = None, *, must_exist: bool = False) -> str:
    """The SQLAlchemy URL of a store path or URL (default $TUNEGATE_STORE or runs/tunegate.db). A new SQLite
    store's folder is created; with `must_exist` (commands that only read), a SQLite file that is not there is a
    UserError instead, and nothing is created."""
    store = store or os.environ.get("TUNEGATE_STORE") or DEFAULT_STORE
    if "://" in store:
        if must_exist and store.startswith("sqlite"):
            _check_exists(make_url(store).database, store)
        return store
    if Path(store).is_dir():
        raise UserError("is a folder; give the store's file (e.g. runs/tunegate.db)", file=store, field="--store")
    if must_exist:
        _check_exists(store, store)
    else:
        ensure_folder(Path(store).parent, field="--store")
    return f"sqlite:///{store}"


def _check_exists(database: str | None, shown: str) -> None:
    if database in (None, "", ":memory:") or Path(database).is_file():
        return
    blocker = next((p for p in Path(database).parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"no store here: {blocker} is a file, not a folder", file=shown, field="--store")
    raise UserError(
        "no store here: the file does not exist (this command only reads a store, so it creates none); "
        "give --store the path of an existing store or set TUNEGATE_STORE",
        file=shown,
        field="--store",
    )


def display_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _timeout(value: float | None) -> float:
    raw = value if value is not None else os.environ.get("TUNEGATE_STORE_TIMEOUT", DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        raise UserError(f"TUNEGATE_STORE_TIMEOUT must be a number of seconds, not '{raw}'") from None
    if seconds <= 0:
        raise UserError(f"the store timeout must be positive, not {seconds:g}")
    return seconds


def make_engine(url: str, timeout: float, *, foreign_keys: bool = True, **engine_kwargs: Any) -> Engine:
    """An engine with tunegate's connection settings. On SQLite: WAL, a busy timeout, foreign keys, and
    explicit transactions (BEGIN, or BEGIN IMMEDIATE for writers) instead of pysqlite's own."""
    if not url.startswith("sqlite"):
        kwargs: dict[str, Any] = {"pool_pre_ping": True} | engine_kwargs
        if url.startswith("postgresql"):
            kwargs["connect_args"] = {"connect_timeout": max(1, int(timeout))}
        return create_engine(url, **kwargs)
    engine = create_engine(url, connect_args={"timeout": timeout}, **engine_kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _on_begin)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("tunegate_write") else "BEGIN")

    return engine
