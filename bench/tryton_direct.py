"""The direct-integration baseline: a plain script that posts Shopify orders to Tryton.

It posts the orders one after the other over one HTTP connection, with the JSON-RPC
calls that entrepot's Tryton spoke makes for a new order. It finds or creates the
customer's party and address, creates the sale, reads its total, and quotes and
confirms the sale. Like a simple script it keeps each customer's party and address
in a dict and looks products and taxes up once. It leaves out two calls per order
that the spoke makes: the search for a sale that an earlier attempt may have left,
and the read of the party's credit. It has no store and no retries.

Only the orders that the benchmark builds are supported: USD, prices without tax,
and no discounts.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import httpx

SHIPPING_PRODUCT = "ENTREPOT-SHIPPING"
CURRENCY = "USD"


class TrytonCallError(Exception):
    """Raised when Tryton returns an error for a JSON-RPC call."""

    def __init__(self, method: str, error: Any) -> None:
        super().__init__(f"{method} failed in Tryton: {error!r}")


def to_tryton(value: Any) -> Any:
    """Encode Decimal and date values as Tryton's JSON objects (a ``json.dumps`` hook)."""
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, dt.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    raise TypeError(f"cannot encode {type(value).__name__} for Tryton")


def from_tryton(obj: dict[str, Any]) -> Any:
    """Decode Tryton's Decimal objects, and leave other objects as dicts (a
    ``json.loads`` hook)."""
    if obj.get("__class__") == "Decimal":
        return Decimal(obj["decimal"])
    return obj


class JsonRpc:
    """A synchronous JSON-RPC client of one Tryton database, logged in once."""

    def __init__(self, url: str, database: str, username: str, password: str) -> None:
        self._client = httpx.Client(base_url=f"{url}/{database}/rpc/", timeout=300.0)
        self._username = username
        self._password = password
        self._headers = {"Content-Type": "application/json"}
        self._context: dict[str, Any] = {}
        self._next_id = 0

    def login(self) -> None:
        user_id, session = self._call(
            "common.db.login", [self._username, {"password": self._password}, "en"]
        )[:2]
        token = base64.b64encode(f"{self._username}:{user_id}:{session}".encode()).decode()
        self._headers["Authorization"] = f"Session {token}"
        self._context = self._call("model.res.user.get_preferences", [True, {}])

    def model(self, model: str, method: str, *args: Any) -> Any:
        """Call ``model.<model>.<method>`` with ``args`` and the user's context."""
        return self._call(f"model.{model}.{method}", [*args, self._context])

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, params: list[Any]) -> Any:
        self._next_id += 1
        body = json.dumps(
            {"id": self._next_id, "method": method, "params": params}, default=to_tryton
        )
        response = self._client.post("", content=body, headers=self._headers)
        response.raise_for_status()
        reply = json.loads(response.content, object_hook=from_tryton)
        if reply.get("error"):
            raise TrytonCallError(method, reply["error"])
        return reply["result"]


def post_orders(rpc: JsonRpc, shop: str, orders: Sequence[dict[str, Any]]) -> None:
    """Post each Shopify order body in ``orders`` as a confirmed sale whose reference
    is ``shopify:<shop>:<order id>``. Raise ValueError if a sale's total differs."""
    skus = {line["sku"] for order in orders for line in order["line_items"]}
    products = {
        row["code"]: row
        for row in rpc.model(
            "product.product",
            "search_read",
            [["code", "in", sorted(skus | {SHIPPING_PRODUCT})]],
            0,
            None,
            None,
            ["code", "sale_uom"],
        )
    }
    taxes: dict[Decimal, int] = {}
    for row in rpc.model(
        "account.tax",
        "search_read",
        [["type", "=", "percentage"], ["parent", "=", None]],
        0,
        None,
        [["id", "ASC"]],
        ["rate"],
    ):
        taxes.setdefault(Decimal(row["rate"]).normalize(), row["id"])
    (currency,) = rpc.model("currency.currency", "search", [["code", "=", CURRENCY]], 0, 1, None)

    parties: dict[int, tuple[int, int]] = {}
    for order in orders:
        customer_id = order["customer"]["id"]
        if customer_id not in parties:
            parties[customer_id] = party_and_address(rpc, shop, order)
        party, address = parties[customer_id]

        values = sale_values(order, shop, party, address, currency, products, taxes)
        (sale,) = rpc.model("sale.sale", "create", [values])
        (row,) = rpc.model("sale.sale", "read", [sale], ["total_amount"])
        if row["total_amount"] != Decimal(order["total_price"]):
            raise ValueError(
                f"sale {sale} totals {row['total_amount']}, but order {order['id']} "
                f"totals {order['total_price']}"
            )
        rpc.model("sale.sale", "quote", [sale])
        rpc.model("sale.sale", "confirm", [sale])


def party_and_address(rpc: JsonRpc, shop: str, order: dict[str, Any]) -> tuple[int, int]:
    """Find the order customer's party by its identifier, or create it with the order's
    shipping address, and return the party and address ids."""
    customer = order["customer"]
    code = f"shopify:{shop}:{customer['id']}"
    rows = rpc.model(
        "party.identifier", "search_read", [["code", "=", code]], 0, 1, None, ["party"]
    )
    if rows:
        party = rows[0]["party"]
        (address,) = rpc.model("party.address", "search", [["party", "=", party]], 0, 1, None)
        return party, address

    values = {
        "name": f"{customer['first_name']} {customer['last_name']}",
        "identifiers": [["create", [{"code": code}]]],
        "contact_mechanisms": [["create", [{"type": "email", "value": customer["email"]}]]],
    }
    (party,) = rpc.model("party.party", "create", [values])
    shipping = order["shipping_address"]
    (country,) = rpc.model(
        "country.country", "search", [["code", "=", shipping["country_code"]]], 0, 1, None
    )
    subdivision_code = f"{shipping['country_code']}-{shipping['province_code']}"
    (subdivision,) = rpc.model(
        "country.subdivision",
        "search",
        [["code", "=", subdivision_code], ["country", "=", country]],
        0,
        1,
        None,
    )
    address_values = {
        "party": party,
        "party_name": shipping["name"],
        "street": shipping["address1"],
        "city": shipping["city"],
        "postal_code": shipping["zip"],
        "country": country,
        "subdivision": subdivision,
    }
    (address,) = rpc.model("party.address", "create", [address_values])
    return party, address


def sale_values(
    order: dict[str, Any],
    shop: str,
    party: int,
    address: int,
    currency: int,
    products: dict[str, dict[str, Any]],
    taxes: dict[Decimal, int],
) -> dict[str, Any]:
    """Build the values of the sale of ``order``: a line per item and per shipping charge."""

    def tax_ids(tax_lines: list[dict[str, Any]]) -> list[list[Any]]:
        ids = [taxes[Decimal(str(tax["rate"])).normalize()] for tax in tax_lines]
        return [["add", ids]] if ids else []

    lines = []
    for item in order["line_items"]:
        if item["discount_allocations"]:
            raise ValueError(
                f"order {order['id']} has a discount, which this script does not post"
            )
        product = products[item["sku"]]
        lines.append(
            {
                "product": product["id"],
                "unit": product["sale_uom"],
                "quantity": float(item["quantity"]),
                "unit_price": Decimal(item["price"]),
                "description": item["title"],
                "taxes": tax_ids(item["tax_lines"]),
            }
        )
    shipping_product = products[SHIPPING_PRODUCT]
    for charge in order["shipping_lines"]:
        if Decimal(charge["price"]):
            lines.append(
                {
                    "product": shipping_product["id"],
                    "unit": shipping_product["sale_uom"],
                    "quantity": 1.0,
                    "unit_price": Decimal(charge["price"]),
                    "description": charge["title"],
                    "taxes": tax_ids(charge["tax_lines"]),
                }
            )
    return {
        "party": party,
        "invoice_address": address,
        "shipment_address": address,
        "currency": currency,
        "reference": f"shopify:{shop}:{order['id']}",
        "description": f"Shopify order {order['name']}",
        "sale_date": dt.datetime.fromisoformat(order["created_at"]).date(),
        "lines": [["create", lines]],
    }
