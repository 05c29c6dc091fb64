"""The results store: every run, trial, model, suite item, output and score as plain rows (SQLAlchemy 2).

A SQLite file by default (WAL; writers take the lock up front with ``BEGIN IMMEDIATE`` so several
trials and processes can write at once and nothing is lost); any SQLAlchemy URL, such as
``postgresql+psycopg://user@host/db``, for a team sharing one store. The schema is versioned with
alembic (``harness/store/migrations``): opening a store upgrades an empty or older one to the newest
revision and refuses one written by a newer tunegate. ``harness/store/migrations/README.md`` documents
every table.

Every write is one transaction: a crash or an exception in the middle leaves nothing half written.
Everything the report, the app and the gate show is read from here.

`Store` is composed of one part per concept, each in its own module:
``harness.store._connection`` (opening and upgrading the store, transactions, database errors as UserErrors),
``harness.store._run_lock`` (which process drives a run; interrupted runs), ``harness.store._runs`` (runs,
trials, models and training steps), ``harness.store._evaluations`` (suite results, judge calls and the reads
built on them) and ``harness.store._decisions`` (gate decisions, promotions and rollbacks).
"""

from __future__ import annotations

from sqlalchemy import text

from harness.base._errors import UserError
from harness.store._decisions import _Decisions
from harness.store._evaluations import _Evaluations
from harness.store._runs import _Runs


class Store(_Runs, _Evaluations, _Decisions):
    """Open (creating or upgrading) a store. `timeout` is how long a writer waits for a lock (seconds;
    default $TUNEGATE_STORE_TIMEOUT or 60). `must_exist`: a SQLite file that is not there is a UserError, not
    a new empty store (for commands that read)."""


def check_integrity(store: Store) -> None:
    """Raise a UserError if a SQLite store fails `PRAGMA integrity_check`."""
    if store.is_sqlite:
        with store.reading() as s:
            result = s.execute(text("PRAGMA integrity_check")).scalar()
        if result != "ok":
            raise UserError(f"store is corrupted: {result}", file=store.where)
