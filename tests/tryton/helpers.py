"""Helpers of the Tryton tests: a spoke on the test server, orders, reads."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from entrepot.canonical import SalesOrder
from entrepot.config import TargetSettings, TrytonSettings
from entrepot.spokes.shopify.mapping import map_order, parse_order_body
from entrepot.spokes.tryton.server import TrytonServer
from entrepot.spokes.tryton.spoke import TrytonSpoke
from entrepot.store.database import Database
from entrepot.store.migrate import upgrade_to_head
from tests.harness import example_order

SHOP = "entrepot-demo.myshopify.com"
TARGET = "tryton"


def target_settings(server: TrytonServer, **overrides: Any) -> TargetSettings:
    tryton = TrytonSettings(database=server.database, **overrides.pop("tryton", {}))
    return TargetSettings(kind="tryton", base_url=server.url, tryton=tryton, **overrides)


def store(path: Path) -> Database:
    database = Database(f"sqlite:///{path}")
    upgrade_to_head(database)
    return database


async def no_gate() -> None:
    return None


def make_spoke(server: TrytonServer, database: Database, **overrides: Any) -> TrytonSpoke:
    return TrytonSpoke(TARGET, target_settings(server, **overrides), no_gate, database)


def canonical(payload: dict[str, Any]) -> SalesOrder:
    return map_order(copy.deepcopy(payload), shop_domain=SHOP)


def example(name: str = "order-1001", **changes: Any) -> SalesOrder:
    payload = example_order(name)
    payload.update(changes)
    return canonical(payload)


def sample(path: Path) -> SalesOrder:
    return map_order(parse_order_body(path.read_bytes()), shop_domain=SHOP)


async def sale(spoke: TrytonSpoke, sale_id: str | int) -> dict[str, Any]:
    (row,) = await spoke.rpc.model(
        "sale.sale",
        "read",
        [int(sale_id)],
        [
            "state",
            "total_amount",
            "untaxed_amount",
            "tax_amount",
            "reference",
            "party",
            "lines",
            "currency.code",
        ],
    )
    return dict(row)


async def sale_lines(spoke: TrytonSpoke, sale_id: str | int) -> list[dict[str, Any]]:
    row = await sale(spoke, sale_id)
    lines = await spoke.rpc.model(
        "sale.line", "read", row["lines"], ["product.code", "quantity", "unit_price", "amount"]
    )
    return [
        {
            "code": line["product."]["code"],
            "quantity": line["quantity"],
            "unit_price": Decimal(line["unit_price"]),
            "amount": Decimal(line["amount"]),
        }
        for line in lines
    ]


async def sales_with_reference(spoke: TrytonSpoke, reference: str) -> list[int]:
    ids: list[int] = await spoke.rpc.model(
        "sale.sale", "search", [["reference", "=", reference]], 0, None, None
    )
    return ids


def order_of_customer(
    order_id: int, customer_id: int, *, address: dict[str, Any] | None = None, **changes: Any
) -> SalesOrder:
    """An example order with its own id, from customer ``customer_id``, shipped and
    billed to ``address`` when given."""
    payload = copy.deepcopy(example_order("order-1001"))
    payload["id"] = order_id
    payload["name"] = f"#{order_id}"
    payload["customer"]["id"] = customer_id
    if address is not None:
        for role in ("shipping_address", "billing_address"):
            payload[role] = {**payload[role], **address}
    payload.update(changes)
    return canonical(payload)


def in_currency(order: dict[str, Any], currency: str) -> dict[str, Any]:
    """Return the order body with every currency code replaced by ``currency``."""
    text = json.dumps(order)
    return dict(json.loads(text.replace('"USD"', f'"{currency}"')))


async def party_of_sale(spoke: TrytonSpoke, sale_id: str | int) -> int:
    row = await sale(spoke, sale_id)
    return int(row["party"])
