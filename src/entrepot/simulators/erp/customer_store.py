"""Persistence of customers and their address books."""

from __future__ import annotations

import json
import sqlite3

from entrepot.simulators.erp.customers import (
    AddressDraft,
    CustomerDraft,
    StoredAddress,
    StoredCustomer,
)
from entrepot.simulators.erp.database import SimDatabase, utc_timestamp
from entrepot.simulators.erp.records import RecordKey

_INSERT_IF_ABSENT = """
INSERT INTO customers (external_id, fields, write_count, created_at, updated_at)
VALUES (?, '{}', 0, ?, ?)
ON CONFLICT (external_id) DO NOTHING
"""

# A value left out of the request (NULL here) keeps the stored one.
_UPSERT_ADDRESS = """
INSERT INTO addresses (customer_id, label, default_shipping, default_billing, address)
VALUES (:customer_id, :label, COALESCE(:shipping, 0), COALESCE(:billing, 0),
        COALESCE(:address, '{}'))
ON CONFLICT (customer_id, label) DO UPDATE SET
    default_shipping = COALESCE(:shipping, addresses.default_shipping),
    default_billing = COALESCE(:billing, addresses.default_billing),
    address = COALESCE(:address, addresses.address)
"""


def upsert_customer(database: SimDatabase, draft: CustomerDraft) -> int:
    """Create the customer or update the fields and address book entries the draft sends.

    The UNIQUE constraint on external_id, not a look-up, decides between insert and
    update, so concurrent upserts of one new external id make one customer. Address book
    entries are matched by label. Entries the draft does not name are kept. Returns the
    customer's internal id.
    """
    now = utc_timestamp()
    with database.write() as connection:
        connection.execute(_INSERT_IF_ABSENT, (draft.external_id, now, now))
        row = connection.execute(
            "SELECT id, fields FROM customers WHERE external_id = ?", (draft.external_id,)
        ).fetchone()

        customer_id: int = row["id"]
        fields = {**json.loads(row["fields"]), **draft.fields}
        connection.execute(
            "UPDATE customers SET fields = ?, write_count = write_count + 1, updated_at = ?"
            " WHERE id = ?",
            (json.dumps(fields), now, customer_id),
        )

        for address in draft.addresses:
            _upsert_address(connection, customer_id, address)
    return customer_id


def _upsert_address(connection: sqlite3.Connection, customer_id: int, draft: AddressDraft) -> None:
    address = None if draft.address is None else json.dumps(draft.address)
    parameters = {
        "customer_id": customer_id,
        "label": draft.label,
        "shipping": draft.default_shipping,
        "billing": draft.default_billing,
        "address": address,
    }
    connection.execute(_UPSERT_ADDRESS, parameters)

    # A customer has one default shipping and one default billing address, so the
    # entry that claims a default takes it from the others. In one request, the last
    # entry that claims it wins.
    for column, claimed in (
        ("default_shipping", draft.default_shipping),
        ("default_billing", draft.default_billing),
    ):
        if claimed:
            connection.execute(
                f"UPDATE addresses SET {column} = 0 WHERE customer_id = ? AND label <> ?",
                (customer_id, draft.label),
            )


def get_customer(database: SimDatabase, key: RecordKey) -> StoredCustomer | None:
    query = f"SELECT * FROM customers WHERE {key.where_clause('customers')}"
    with database.read() as connection:
        row = connection.execute(query, (key.value,)).fetchone()
        if row is None:
            return None
        return _load_customer(connection, row)


def list_customers(database: SimDatabase) -> list[StoredCustomer]:
    with database.read() as connection:
        rows = connection.execute("SELECT * FROM customers ORDER BY id").fetchall()
        return [_load_customer(connection, row) for row in rows]


def find_address_labels(database: SimDatabase, external_id: str) -> frozenset[str] | None:
    """Return the address book labels of a customer, or None if the customer is unknown."""
    with database.read() as connection:
        row = connection.execute(
            "SELECT id FROM customers WHERE external_id = ?", (external_id,)
        ).fetchone()
        if row is None:
            return None
        labels = connection.execute(
            "SELECT label FROM addresses WHERE customer_id = ?", (row["id"],)
        ).fetchall()
    return frozenset(label["label"] for label in labels)


def _load_customer(connection: sqlite3.Connection, row: sqlite3.Row) -> StoredCustomer:
    address_rows = connection.execute(
        "SELECT * FROM addresses WHERE customer_id = ? ORDER BY id", (row["id"],)
    ).fetchall()
    addresses = tuple(
        StoredAddress(
            id=address["id"],
            label=address["label"],
            default_shipping=bool(address["default_shipping"]),
            default_billing=bool(address["default_billing"]),
            address=json.loads(address["address"]),
        )
        for address in address_rows
    )
    return StoredCustomer(
        id=row["id"],
        external_id=row["external_id"],
        fields=json.loads(row["fields"]),
        addresses=addresses,
        write_count=row["write_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
