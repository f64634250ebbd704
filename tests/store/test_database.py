"""Opening the store: URLs, and which errors run a transaction again."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError, OperationalError
from typer.testing import CliRunner

from entrepot.cli import app
from entrepot.store.database import Database, is_retryable, with_default_driver
from entrepot.store.migrate import upgrade_to_head
from entrepot.store.tables import Base


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:secret@db:5432/hub", "postgresql+psycopg://app:secret@db:5432/hub"),
        ("postgresql+psycopg://app@db/hub", "postgresql+psycopg://app@db/hub"),
        ("sqlite:///data/entrepot.db", "sqlite:///data/entrepot.db"),
    ],
)
def test_postgresql_url_gets_psycopg(url: str, expected: str) -> None:
    assert with_default_driver(url) == expected


def test_plain_postgresql_url_opens_with_psycopg(postgres_url: str) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    database = Database(plain)
    try:
        assert database.engine.dialect.driver == "psycopg"
        assert database.is_postgresql
    finally:
        database.dispose()


def test_db_upgrade_creates_postgresql_schema(tmp_path: Path, postgres_url: str) -> None:
    config = tmp_path / "entrepot.toml"
    config.write_text(f'[store]\nurl = "{postgres_url}"\n')

    result = CliRunner().invoke(app, ["db", "upgrade", "--config", str(config)])
    database = Database(postgres_url)
    try:
        tables = set(inspect(database.engine).get_table_names())
        with database.engine.connect() as connection:
            version = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            versions = version.scalars().all()
    finally:
        database.dispose()

    assert result.exit_code == 0, result.output
    assert "Store is up to date." in result.output
    assert {"receipts", "deliveries", "erp_links", "outbox_events"} <= tables
    assert versions == ["0007"]


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_migrations_build_the_tables(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The migrations leave the schema that the table classes describe, column for
    column and index for index."""
    if engine == "sqlite":
        url = f"sqlite:///{tmp_path / 'entrepot.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database = Database(url)
    try:
        upgrade_to_head(database)
        with database.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        database.dispose()

    assert differences == []


@pytest.mark.parametrize(
    ("sqlstate", "retryable"),
    [("40001", True), ("40P01", True), ("23505", True), ("23503", False), ("42P01", False)],
)
def test_retryable_postgresql_errors(sqlstate: str, retryable: bool) -> None:
    error = psycopg.errors.lookup(sqlstate)("from the test")
    wrapped = IntegrityError("INSERT", {}, error)

    assert is_retryable(wrapped) is retryable


def test_sqlite_busy_is_retryable() -> None:
    error = OperationalError("UPDATE", {}, Exception("database is locked"))

    assert is_retryable(error)
