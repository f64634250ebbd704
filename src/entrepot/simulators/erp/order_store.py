"""Persistence of sales orders."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from entrepot.simulators.erp.catalog import find_known_skus
from entrepot.simulators.erp.customer_store import find_address_labels
from entrepot.simulators.erp.database import SimDatabase, utc_timestamp
from entrepot.simulators.erp.jsonio import parse_json, render_json
from entrepot.simulators.erp.records import RecordKey
from entrepot.simulators.erp.sales_orders import (
    CANCELLED,
    OrderReferences,
    SalesOrderDraft,
    StoredOrder,
)


class DuplicateExternalIdError(Exception):
    """A create named an external id that another sales order already has."""


class CustomerNotFoundError(Exception):
    """The customer of a sales order does not exist, though validation found it.

    This happens only when a reset deletes the customer between the two steps.
    """


_COLUMNS = (
    "external_id, customer_id, status, total, client_total, fields, summary,"
    " write_count, created_at, updated_at"
)
_VALUES = (
    ":external_id, :customer_id, :status, :total, :client_total, :fields, :summary, 1, :now, :now"
)

_INSERT = f"""
INSERT INTO sales_orders ({_COLUMNS}) VALUES ({_VALUES})
ON CONFLICT (external_id) DO NOTHING
RETURNING id
"""

_UPSERT = f"""
INSERT INTO sales_orders ({_COLUMNS}) VALUES ({_VALUES})
ON CONFLICT (external_id) DO UPDATE SET
    customer_id = excluded.customer_id,
    status = excluded.status,
    total = excluded.total,
    client_total = excluded.client_total,
    fields = excluded.fields,
    summary = excluded.summary,
    write_count = sales_orders.write_count + 1,
    updated_at = excluded.updated_at
RETURNING id
"""

_SELECT = """
SELECT sales_orders.*, customers.external_id AS customer_external_id
FROM sales_orders JOIN customers ON customers.id = sales_orders.customer_id
"""


def find_order_references(
    database: SimDatabase, customer_external_id: str | None, skus: Iterable[str]
) -> OrderReferences:
    """Look up the customer's address book labels and which of ``skus`` exist."""
    labels = None
    if customer_external_id is not None:
        labels = find_address_labels(database, customer_external_id)
    return OrderReferences(address_labels=labels, known_skus=find_known_skus(database, skus))


def insert_order(database: SimDatabase, draft: SalesOrderDraft) -> int:
    """Create the order and return its internal id.

    Raises DuplicateExternalIdError, and writes nothing, if the external id exists.
    """
    with database.write() as connection:
        row = connection.execute(_INSERT, _parameters(connection, draft)).fetchone()
    if row is None:
        raise DuplicateExternalIdError(draft.external_id)
    order_id: int = row["id"]
    return order_id


def upsert_order(database: SimDatabase, draft: SalesOrderDraft) -> int:
    """Create the order, or replace every field of the existing one and keep its id.

    Each call adds 1 to the order's write_count. Returns the internal id.
    """
    with database.write() as connection:
        row = connection.execute(_UPSERT, _parameters(connection, draft)).fetchone()
    order_id: int = row["id"]
    return order_id


def cancel_order(database: SimDatabase, key: RecordKey) -> int | None:
    """Set the order's status to cancelled and return its internal id.

    Returns None if the order does not exist.
    """
    query = f"SELECT id, fields FROM sales_orders WHERE {key.where_clause('sales_orders')}"
    with database.write() as connection:
        row = connection.execute(query, (key.value,)).fetchone()
        if row is None:
            return None

        fields = parse_json(row["fields"])
        fields["orderStatus"] = {"id": "C"}
        connection.execute(
            "UPDATE sales_orders SET status = ?, fields = ?, updated_at = ? WHERE id = ?",
            (CANCELLED, render_json(fields).decode(), utc_timestamp(), row["id"]),
        )
    order_id: int = row["id"]
    return order_id


def get_order(database: SimDatabase, key: RecordKey) -> StoredOrder | None:
    query = f"{_SELECT} WHERE {key.where_clause('sales_orders')}"
    with database.read() as connection:
        row = connection.execute(query, (key.value,)).fetchone()
    return None if row is None else _load_order(row)


def list_orders(database: SimDatabase) -> list[StoredOrder]:
    with database.read() as connection:
        rows = connection.execute(f"{_SELECT} ORDER BY sales_orders.id").fetchall()
    return [_load_order(row) for row in rows]


def _parameters(connection: sqlite3.Connection, draft: SalesOrderDraft) -> dict[str, Any]:
    customer = connection.execute(
        "SELECT id FROM customers WHERE external_id = ?", (draft.customer_external_id,)
    ).fetchone()
    if customer is None:
        raise CustomerNotFoundError(draft.customer_external_id)

    client_total = None if draft.client_total is None else str(draft.client_total)
    return {
        "external_id": draft.external_id,
        "customer_id": customer["id"],
        "status": draft.status,
        "total": str(draft.total),
        "client_total": client_total,
        "fields": render_json(draft.fields).decode(),
        "summary": render_json(draft.summary()).decode(),
        "now": utc_timestamp(),
    }


def _load_order(row: sqlite3.Row) -> StoredOrder:
    client_total = row["client_total"]
    return StoredOrder(
        id=row["id"],
        external_id=row["external_id"],
        customer_id=row["customer_id"],
        customer_external_id=row["customer_external_id"],
        status=row["status"],
        total=Decimal(row["total"]),
        client_total=None if client_total is None else Decimal(client_total),
        fields=parse_json(row["fields"]),
        summary=parse_json(row["summary"]),
        write_count=row["write_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
