"""Stores for the tests: a SQLite file, or a PostgreSQL database of their own.

The PostgreSQL server is ``ENTREPOT_TEST_POSTGRES`` (a SQLAlchemy URL without a
database name), by default the local server with trust authentication. Each
database is created for one test and dropped afterwards, so tests never see
other data. A test that needs the server skips when it is unreachable, and fails
when the environment variable ``CI`` is ``true``.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

POSTGRES_SERVER = os.environ.get(
    "ENTREPOT_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432"
)
ADMIN_DATABASE = "postgres"
DATABASE_PREFIX = "entrepot_test_"


def _server_url(database: str) -> URL:
    return make_url(POSTGRES_SERVER).set(database=database)


@functools.cache
def _unreachable_reason() -> str | None:
    """Return why the server cannot be used, or None when it can."""
    engine = create_engine(_server_url(ADMIN_DATABASE), connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        return f"PostgreSQL at {_server_url('').render_as_string()} is unreachable: {exc.orig}"
    finally:
        engine.dispose()
    return None


def require_postgres() -> None:
    """Skip the test when the server is unreachable, or fail it in CI."""
    reason = _unreachable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests")
    pytest.skip(reason)


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create an empty database; yield its URL, then drop it with its connections."""
    require_postgres()
    name = f"{DATABASE_PREFIX}{uuid.uuid4().hex[:12]}"
    admin = create_engine(_server_url(ADMIN_DATABASE), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield _server_url(name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
