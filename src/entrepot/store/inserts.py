"""INSERT … ON CONFLICT DO NOTHING for SQLite and PostgreSQL alike."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Table, TextClause
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_if_absent(
    session: Session,
    table: Table,
    values: dict[str, Any],
    conflict_columns: list[str],
    *,
    conflict_where: ColumnElement[bool] | TextClause | None = None,
) -> bool:
    """Insert a row unless it would break the unique key on ``conflict_columns``.

    Returns whether a row was inserted. ``conflict_where`` names the condition of a
    partial unique index. The database decides, so two sessions racing to insert the
    same key insert it once.
    """
    module = _dialect_module(session)
    # A returned row shows that the insert happened. The row count cannot show it,
    # because on PostgreSQL SQLAlchemy adds RETURNING and psycopg then reports -1.
    statement = (
        module.insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=conflict_columns, index_where=conflict_where)
        .returning(*table.primary_key.columns)
    )
    return session.execute(statement).first() is not None


def insert_returning_id(session: Session, table: Table, values: dict[str, Any]) -> int | None:
    """Insert a row unless it would break any unique key; return its id, or None.

    Without a conflict target, ON CONFLICT DO NOTHING covers every unique key of the
    table, in SQLite and PostgreSQL alike.
    """
    module = _dialect_module(session)
    statement = (
        module.insert(table).values(**values).on_conflict_do_nothing().returning(table.c.id)
    )
    inserted = session.execute(statement).scalar()
    return None if inserted is None else int(inserted)


def _dialect_module(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql if dialect == "postgresql" else sqlite
