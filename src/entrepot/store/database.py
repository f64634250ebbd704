"""Engine, sessions and transactions over SQLite or PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL``, so a committed receipt survives
a power cut, not only a crash of the process. Write transactions start with
``BEGIN IMMEDIATE`` so that two writers queue on the lock instead of failing when
a read lock turns into a write lock.

PostgreSQL runs through psycopg 3 at the server's default isolation, READ
COMMITTED. Workers claim rows with ``FOR UPDATE SKIP LOCKED``, so several
processes share the queues without waiting on each other.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import tenacity
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT_SECONDS = 30.0
# Serialization failure, deadlock detected, and unique violation. Code written for
# SQLite, where write transactions run one at a time, may look a row up and insert
# it when it is absent. On PostgreSQL a concurrent transaction can insert the same
# key in between, and running the transaction again finds that row.
_RETRYABLE_SQLSTATES = {"40001", "40P01", "23505"}


def is_retryable(exc: BaseException) -> bool:
    """Tell whether a database error is worth running the transaction again for."""
    if isinstance(exc, OperationalError) and _is_sqlite_busy(exc):
        return True
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return sqlstate in _RETRYABLE_SQLSTATES
    return False


def _is_sqlite_busy(exc: OperationalError) -> bool:
    message = str(exc.orig).lower()
    return "database is locked" in message or "database is busy" in message


class Database:
    """The store's engine with read and write sessions.

    `write` runs a function in one transaction and runs it again, from the start,
    when the database reports a lock timeout, a serialization failure or a
    deadlock. The function must therefore have no effect outside the transaction.

    On SQLite, the write transactions of one process take turns on a lock of their
    own. SQLite lets one writer in at a time anyway, and a writer that finds the
    file locked sleeps in steps of up to 100 ms before it looks again, so threads
    that queued on the file lock wasted most of their time asleep.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = with_default_driver(url)
        self.engine = _create_engine(self.url, echo=echo)
        reader = self.engine.execution_options(sqlite_begin="BEGIN")
        self._write_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(reader, expire_on_commit=False)
        self._writer_turn = threading.Lock() if self.is_sqlite else contextlib.nullcontext()

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def write(self, work: Callable[[Session], T], *, attempts: int = 12) -> T:
        """Run ``work`` in a write transaction, retrying it on transient errors."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_retryable),
            stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_random_exponential(multiplier=0.005, max=0.5),
            before_sleep=_log_retry,
            reraise=True,
        )
        result: T = retrying(self._run_write, work)
        return result

    def _run_write(self, work: Callable[[Session], T]) -> T:
        with self._writer_turn, self._write_sessions() as session, session.begin():
            result: T = work(session)
            return result

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Open a session for reading; it never takes the write lock."""
        with self._read_sessions() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def _log_retry(state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.debug(
        "Transaction failed with %s; running it again (try %d).", error, state.attempt_number
    )


def with_default_driver(url: str) -> str:
    """Return ``url`` with psycopg 3 as the driver of a plain ``postgresql://`` URL.

    SQLAlchemy 2.0 picks psycopg2 for such a URL, and entrepot installs psycopg 3.
    Any other URL is returned unchanged.
    """
    parsed = make_url(url)
    if parsed.drivername != "postgresql":
        return url
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _create_engine(url: str, *, echo: bool) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, echo=echo, pool_pre_ping=True)

    _ensure_sqlite_folder(url)
    engine = create_engine(url, echo=echo, connect_args={"timeout": BUSY_TIMEOUT_SECONDS})
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _ensure_sqlite_folder(url: str) -> None:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def sqlite_path(url: str) -> Path | None:
    """Return the file of a SQLite URL, or None for another database or memory."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1]
    return Path(path) if path and path != ":memory:" else None


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN instead of the sqlite3 module.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
    _use_wal(cursor)
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL mode. Switching waits for no busy handler, so a process
    that finds the file locked by another one doing the same looks again shortly, and
    is done as soon as the file is in WAL mode, whoever switched it."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()
            if mode and str(mode[0]).lower() == "wal":
                return
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _begin_sqlite_transaction(connection: Connection) -> None:
    statement = connection.get_execution_options().get("sqlite_begin", "BEGIN IMMEDIATE")
    connection.exec_driver_sql(statement)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"
