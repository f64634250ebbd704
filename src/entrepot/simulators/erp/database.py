"""The simulator's SQLite file: schema, connections and transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path

# Seconds a connection waits for another writer's lock before sqlite3 raises
# "database is locked".
BUSY_TIMEOUT_SECONDS = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id INTEGER PRIMARY KEY,
    external_id TEXT NOT NULL UNIQUE,
    fields TEXT NOT NULL,
    write_count INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS addresses (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    default_shipping INTEGER NOT NULL DEFAULT 0,
    default_billing INTEGER NOT NULL DEFAULT 0,
    address TEXT NOT NULL,
    UNIQUE (customer_id, label)
);
CREATE TABLE IF NOT EXISTS items (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sales_orders (
    id INTEGER PRIMARY KEY,
    external_id TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    status TEXT NOT NULL,
    total TEXT NOT NULL,
    client_total TEXT,
    fields TEXT NOT NULL,
    summary TEXT NOT NULL,
    write_count INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""

# Tables in an order that DELETE can follow without breaking a foreign key.
_TABLES_CHILD_FIRST = ("sales_orders", "addresses", "customers", "items")


def utc_timestamp() -> str:
    """Return the current UTC time in ISO 8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class SimDatabase:
    """SQLite file in WAL mode, opened anew for each transaction.

    Each call opens its own connection, so threads of the request thread pool never
    share one. Writes start with BEGIN IMMEDIATE, which makes SQLite run writers one at
    a time. Money columns are TEXT, holding Decimal strings.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """Run the block in a write transaction, committed unless the block raises."""
        with closing(self._connect()) as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.rollback()
                raise
            connection.commit()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """Run the block in a read transaction, so that all its queries read one snapshot."""
        with closing(self._connect()) as connection:
            connection.execute("BEGIN")
            try:
                yield connection
            finally:
                connection.rollback()

    def clear(self) -> None:
        """Delete every row of every table and keep the schema."""
        with self.write() as connection:
            for table in _TABLES_CHILD_FIRST:
                connection.execute(f"DELETE FROM {table}")

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
        )
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA foreign_keys=ON")

        # In WAL mode, NORMAL keeps every commit through a crash of the process but not
        # through a power loss. A simulator does not need more.
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection
