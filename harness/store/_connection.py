"""A store's connection: opening it (creating or upgrading its schema with alembic), its read and write
transactions, the translation of database errors into one-line UserErrors, and the row helpers the
`harness.store._store.Store` methods use inside those transactions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from harness.base._errors import UserError
from harness.redact import redact
from harness.store import migrations
from harness.store._engine import _timeout, display_url, make_engine, store_url
from harness.store._tables import Trial

T = TypeVar("T")


class _Connection:
    """The engine, the schema upgrade on open and the transactions every part of `Store` writes and reads in."""

    def __init__(self, store: str | None = None, *, timeout: float | None = None, must_exist: bool = False) -> None:
        self.url = store_url(store, must_exist=must_exist)
        self.where = display_url(self.url)
        self.is_sqlite = self.url.startswith("sqlite")
        self.timeout = _timeout(timeout)
        try:
            self.engine = make_engine(self.url, self.timeout)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise UserError(f"not a usable store URL: {exc}", file=self.where) from None
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(self.engine.execution_options(tunegate_write=True), expire_on_commit=False)
        in_memory = self.is_sqlite and make_url(self.url).database in (None, "", ":memory:")
        with self._translate_errors("open"):
            migrations.upgrade(self.url, self.timeout, where=self.where, engine=self.engine if in_memory else None)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One write transaction: everything inside commits together or not at all. On SQLite it takes
        the write lock at the start (BEGIN IMMEDIATE), so concurrent writers queue instead of failing."""
        with self._translate_errors("write to"), self._writer() as s, s.begin():
            yield s

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """One read transaction (a consistent snapshot; never blocks writers on WAL SQLite or PostgreSQL)."""
        with self._translate_errors("read"), self._reader() as s, s.begin():
            yield s

    @contextmanager
    def _translate_errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except IntegrityError:
            raise
        except (OperationalError, DatabaseError) as exc:
            raise UserError(self._describe(exc, doing), file=self.where) from None

    def _describe(self, exc: DatabaseError, doing: str) -> str:
        msg = str(exc.orig).strip() if exc.orig is not None else str(exc)
        low = msg.lower()
        if "locked" in low or "busy" in low:
            return f"cannot {doing} the store: it is locked by another process (waited {self.timeout:g}s): {msg}"
        if "not a database" in low or "malformed" in low or "corrupt" in low:
            return f"cannot {doing} the store: the file is corrupted or not a tunegate store ({msg})"
        return f"cannot {doing} the store: {msg}"

    def dispose(self) -> None:
        self.engine.dispose()


def _redacted(text: str | None) -> str | None:
    return None if text is None else redact(text)


def _row_id(ref: str | int) -> int | None:
    """A row id from digits; None for one no database column can hold (so it is simply not found)."""
    value = int(ref)
    return value if 0 < value < 2**63 else None


def _get(s: Session, table: type[T], key: int) -> T:
    row = s.get(table, key)
    if row is None:
        raise UserError(f"no {getattr(table, '__tablename__', table.__name__)} row {key} in the store")
    return row


def _lock_trial(s: Session, trial_id: int) -> None:
    """Row-lock a trial for the rest of the transaction (PostgreSQL; SQLite's writers already hold the
    database lock), so replacing its rows is never interleaved with another writer doing the same."""
    if s.execute(select(Trial.id).where(Trial.id == trial_id).with_for_update()).first() is None:
        raise UserError(f"no trial t{trial_id} in the store")


def _get_or_create(
    s: Session, table: type[T], keys: dict[str, Any], values: dict[str, Any], then: Callable[[T], None] | None = None
) -> T:
    """The row with `keys`, inserted if missing. Safe against a concurrent insert of the same keys:
    the loser's savepoint rolls back and it reads the winner's row."""
    q = select(table).filter_by(**keys)
    row = s.scalars(q).first()
    if row is not None:
        return row
    try:
        with s.begin_nested():
            row = table(**keys, **values)
            s.add(row)
            s.flush()
            if then is not None:
                then(row)
                s.flush()
            return row
    except IntegrityError:
        return s.scalars(q).one()
