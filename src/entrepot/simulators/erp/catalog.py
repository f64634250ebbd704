"""The item catalog: the SKUs that sales order lines may reference."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from entrepot.simulators.erp.database import SimDatabase


class CatalogItem(BaseModel):
    """One inventory item, identified by its SKU (the item's external ID)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sku: str = Field(min_length=1)
    name: str = ""


def add_items(database: SimDatabase, items: Iterable[CatalogItem]) -> None:
    """Insert new items and update the names of known ones."""
    rows = [(item.sku, item.name) for item in items]
    with database.write() as connection:
        connection.executemany(
            "INSERT INTO items (sku, name) VALUES (?, ?)"
            " ON CONFLICT (sku) DO UPDATE SET name = excluded.name",
            rows,
        )


def list_items(database: SimDatabase) -> list[CatalogItem]:
    with database.read() as connection:
        rows = connection.execute("SELECT sku, name FROM items ORDER BY sku").fetchall()
    return [CatalogItem(sku=row["sku"], name=row["name"]) for row in rows]


def find_known_skus(database: SimDatabase, skus: Iterable[str]) -> frozenset[str]:
    """Return the SKUs among ``skus`` that are in the catalog."""
    requested = sorted(set(skus))
    if not requested:
        return frozenset()

    placeholders = ", ".join("?" for _ in requested)
    query = f"SELECT sku FROM items WHERE sku IN ({placeholders})"
    with database.read() as connection:
        rows = connection.execute(query, requested).fetchall()
    return frozenset(row["sku"] for row in rows)
