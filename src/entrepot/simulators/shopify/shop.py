"""In-memory state of one simulated shop: orders, catalog, locations and stock.

Every method runs on the event loop thread without awaiting, so each request
changes the state in one step and needs no lock.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeGuard

from entrepot.simulators.shopify.bucket import LeakyBucket
from entrepot.simulators.shopify.clock import (
    IdSequences,
    Timeline,
    format_timestamp,
    parse_timestamp,
)
from entrepot.simulators.shopify.errors import ShopifyError, not_found, unprocessable
from entrepot.simulators.shopify.settings import ShopSettings

# Fulfillment order statuses that still accept fulfillments.
FULFILLABLE_STATUSES = frozenset({"open", "in_progress"})


@dataclass
class ShopStats:
    """Counters of the Admin API requests a shop received."""

    requests: int = 0
    throttled: int = 0
    unauthorized: int = 0
    max_level: float = 0.0
    by_status: Counter[int] = field(default_factory=Counter)
    by_route: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "throttled": self.throttled,
            "unauthorized": self.unauthorized,
            "max_level": round(self.max_level, 3),
            "by_status": {str(status): count for status, count in sorted(self.by_status.items())},
            "by_route": dict(sorted(self.by_route.items())),
        }


@dataclass
class OrderRecord:
    """A stored order body and its parsed ``updated_at``, the key orders sort by."""

    body: dict[str, Any]
    updated_at: datetime

    @property
    def id(self) -> int:
        order_id: int = self.body["id"]
        return order_id

    @property
    def sort_key(self) -> tuple[float, int]:
        return (self.updated_at.timestamp(), self.id)


class ShopState:
    """One shop's records, rate limit bucket and request counters."""

    def __init__(self, settings: ShopSettings, shop_id: int, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.shop_id = shop_id
        self.bucket = LeakyBucket(settings.bucket_size, settings.leak_rate, clock)
        self.stats = ShopStats()
        self.ids = IdSequences()
        self.timeline = Timeline()

        self.orders: dict[int, OrderRecord] = {}
        self.fulfillment_orders: dict[int, list[dict[str, Any]]] = {}
        self.fulfillments: dict[int, list[dict[str, Any]]] = {}
        self.products: dict[int, dict[str, Any]] = {}
        self.locations: dict[int, dict[str, Any]] = {}
        # (inventory_item_id, location_id) -> inventory level body.
        self.inventory_levels: dict[tuple[int, int], dict[str, Any]] = {}
        self.add_location({"name": "Main warehouse"})

    @property
    def domain(self) -> str:
        return self.settings.domain

    @property
    def primary_location_id(self) -> int:
        """Id of the first location, where fulfillment orders are assigned."""
        location_id: int = next(iter(self.locations))
        return location_id

    # Orders

    def load_order(self, body: dict[str, Any]) -> OrderRecord:
        """Store an order body as Shopify sends it, filling in the ids it lacks.

        Raises ShopifyError 422 when the body is not a usable order, or when an
        order with its id is already loaded.
        """
        order = copy.deepcopy(body)
        order_id = order.get("id")
        if order_id is None:
            order_id = order["id"] = self._free_id("order", self.orders)
        if not _is_id(order_id):
            raise unprocessable(f"order id must be a positive integer, got {order_id!r}")
        if order_id in self.orders:
            raise unprocessable(f"order {order_id} is already loaded; update it instead")

        line_items = order.setdefault("line_items", [])
        if not isinstance(line_items, list) or not line_items:
            raise unprocessable(f"order {order_id} must have at least one line item")
        for index, line in enumerate(line_items):
            self._prepare_line_item(order_id, index, line)

        now = self.timeline.next()
        for name in ("created_at", "updated_at"):
            moment = parse_timestamp(order.get(name))
            if moment is None:
                order[name] = format_timestamp(now)
            else:
                self.timeline.observe(moment)
        order.setdefault("fulfillment_status", None)
        order.setdefault("fulfillments", [])
        order.setdefault("cancelled_at", None)
        order.setdefault("closed_at", None)

        record = OrderRecord(order, _timestamp(order["updated_at"]))
        self.orders[order_id] = record
        self.fulfillment_orders[order_id] = [self._fulfillment_order_for(order)]
        self.fulfillments[order_id] = []
        return record

    def update_order(self, order_id: int, changes: dict[str, Any]) -> OrderRecord:
        """Apply top-level field changes to an order and bump its ``updated_at``."""
        record = self.order(order_id)
        for name in ("id", "line_items", "fulfillments"):
            if name in changes:
                raise unprocessable(f"{name} cannot be changed by an update")
        record.body.update(copy.deepcopy(changes))
        self.touch(record)
        return record

    def touch(self, record: OrderRecord) -> None:
        """Set an order's ``updated_at`` to a new timestamp."""
        moment = self.timeline.next()
        record.body["updated_at"] = format_timestamp(moment)
        record.updated_at = moment

    def order(self, order_id: int) -> OrderRecord:
        """Return the order, or raise the 404 Shopify sends for an unknown one."""
        record = self.orders.get(order_id)
        if record is None:
            raise not_found()
        return record

    def _prepare_line_item(self, order_id: int, index: int, line: object) -> None:
        if not isinstance(line, dict):
            raise unprocessable(f"order {order_id}: line_items[{index}] must be an object")
        if line.get("id") is None:
            line["id"] = self.ids.next("line_item")
        quantity = line.get("quantity")
        if not _is_count(quantity):
            raise unprocessable(
                f"order {order_id}: line_items[{index}].quantity must be a whole number"
            )
        remaining = line.get("fulfillable_quantity", quantity)
        if not _is_count(remaining) or remaining > quantity:
            remaining = quantity
        line["fulfillable_quantity"] = remaining
        line.setdefault("fulfillment_status", None if remaining == quantity else "partial")

    def _fulfillment_order_for(self, order: dict[str, Any]) -> dict[str, Any]:
        """Derive the order's one fulfillment order, assigned to the primary location."""
        fulfillment_order_id = self.ids.next("fulfillment_order")
        cancelled = order.get("cancelled_at") is not None
        lines = []
        for line in order["line_items"]:
            remaining = 0 if cancelled else line["fulfillable_quantity"]
            lines.append(
                {
                    "id": self.ids.next("fulfillment_order_line_item"),
                    "shop_id": self.shop_id,
                    "fulfillment_order_id": fulfillment_order_id,
                    "quantity": remaining,
                    "line_item_id": line["id"],
                    "inventory_item_id": self._inventory_item_for(line),
                    "fulfillable_quantity": remaining,
                    "variant_id": line.get("variant_id"),
                }
            )
        location_id = self.primary_location_id
        fulfillment_order = {
            "id": fulfillment_order_id,
            "shop_id": self.shop_id,
            "order_id": order["id"],
            "assigned_location_id": location_id,
            "request_status": "unsubmitted",
            "status": "open",
            "supported_actions": ["create_fulfillment", "move"],
            "destination": _destination(order.get("shipping_address")),
            "line_items": lines,
            "fulfill_at": None,
            "fulfill_by": None,
            "international_duties": None,
            "fulfillment_holds": [],
            "delivery_method": None,
            "assigned_location": _assigned_location(self.locations[location_id]),
            "merchant_requests": [],
            "created_at": order["created_at"],
            "updated_at": order["updated_at"],
        }
        refresh_fulfillment_order_status(fulfillment_order)
        return fulfillment_order

    def _inventory_item_for(self, line: dict[str, Any]) -> int | None:
        variant = self.variant_by_id(line.get("variant_id")) or self.variant_by_sku(
            line.get("sku")
        )
        return variant["inventory_item_id"] if variant else None

    def find_fulfillment_order(self, fulfillment_order_id: int) -> dict[str, Any] | None:
        for fulfillment_orders in self.fulfillment_orders.values():
            for fulfillment_order in fulfillment_orders:
                if fulfillment_order["id"] == fulfillment_order_id:
                    return fulfillment_order
        return None

    def all_fulfillments(self) -> list[dict[str, Any]]:
        return [item for items in self.fulfillments.values() for item in items]

    # Catalog, locations and stock

    def load_product(self, body: dict[str, Any]) -> dict[str, Any]:
        """Store a product with its variants, giving each variant an inventory item.

        A variant's ``inventory_quantity`` becomes its inventory level at the primary
        location.
        """
        product = copy.deepcopy(body)
        product_id = product.get("id")
        if product_id is None:
            product_id = product["id"] = self._free_id("product", self.products)
        if not _is_id(product_id) or product_id in self.products:
            raise unprocessable(f"product id {product_id!r} is invalid or already loaded")
        variants = product.setdefault("variants", [])
        if not isinstance(variants, list) or not variants:
            raise unprocessable(f"product {product_id} must have at least one variant")

        now = format_timestamp(self.timeline.next())
        product.setdefault("title", f"Product {product_id}")
        product.setdefault("created_at", now)
        product.setdefault("updated_at", now)
        for position, variant in enumerate(variants, start=1):
            if not isinstance(variant, dict):
                raise unprocessable(f"product {product_id}: each variant must be an object")
            variant.setdefault("id", self.ids.next("variant"))
            variant.setdefault("inventory_item_id", self.ids.next("inventory_item"))
            variant["product_id"] = product_id
            variant.setdefault("title", "Default Title")
            variant.setdefault("sku", None)
            variant.setdefault("position", position)
            variant.setdefault("inventory_management", "shopify")
            quantity = variant.setdefault("inventory_quantity", 0)
            if not isinstance(quantity, int):
                raise unprocessable(f"variant {variant['id']}: inventory_quantity must be an int")
        self.products[product_id] = product
        for variant in variants:
            self.set_inventory_level(
                variant["inventory_item_id"],
                self.primary_location_id,
                variant["inventory_quantity"],
            )
        return product

    def variants(self) -> Iterable[dict[str, Any]]:
        for product in self.products.values():
            yield from product["variants"]

    def variant_by_id(self, variant_id: object) -> dict[str, Any] | None:
        return next((v for v in self.variants() if v["id"] == variant_id), None)

    def variant_by_sku(self, sku: object) -> dict[str, Any] | None:
        if not isinstance(sku, str) or not sku:
            return None
        return next((v for v in self.variants() if v.get("sku") == sku), None)

    def variant_by_inventory_item(self, inventory_item_id: int) -> dict[str, Any] | None:
        return next(
            (v for v in self.variants() if v["inventory_item_id"] == inventory_item_id), None
        )

    def add_location(self, body: dict[str, Any]) -> dict[str, Any]:
        """Add an active location; the first one added is the primary location."""
        location_id = self._free_id("location", self.locations)
        now = format_timestamp(self.timeline.next())
        location = {
            "id": location_id,
            "name": str(body.get("name") or f"Location {location_id}"),
            "address1": body.get("address1"),
            "address2": None,
            "city": body.get("city"),
            "zip": body.get("zip"),
            "province": None,
            "country": body.get("country", "US"),
            "phone": None,
            "created_at": now,
            "updated_at": now,
            "country_code": body.get("country", "US"),
            "country_name": None,
            "province_code": None,
            "legacy": False,
            "active": True,
            "admin_graphql_api_id": f"gid://shopify/Location/{location_id}",
            "localized_country_name": None,
            "localized_province_name": None,
        }
        self.locations[location_id] = location
        return location

    def set_inventory_level(
        self, inventory_item_id: int, location_id: int, available: int
    ) -> dict[str, Any]:
        """Set the available quantity of an item at a location, connecting the two."""
        if location_id not in self.locations:
            raise ShopifyError(404, "Not Found")
        variant = self.variant_by_inventory_item(inventory_item_id)
        if variant is None:
            raise unprocessable(f"Inventory item {inventory_item_id} does not exist.")
        level = {
            "inventory_item_id": inventory_item_id,
            "location_id": location_id,
            "available": available,
            "updated_at": format_timestamp(self.timeline.next()),
            "admin_graphql_api_id": (
                f"gid://shopify/InventoryLevel/{location_id}?inventory_item_id={inventory_item_id}"
            ),
        }
        self.inventory_levels[(inventory_item_id, location_id)] = level
        variant["inventory_quantity"] = sum(
            item["available"]
            for (item_id, _), item in self.inventory_levels.items()
            if item_id == inventory_item_id
        )
        return level

    def _free_id(self, resource: str, taken: dict[int, Any]) -> int:
        while True:
            candidate = self.ids.next(resource)
            if candidate not in taken:
                return candidate


def refresh_fulfillment_order_status(fulfillment_order: dict[str, Any]) -> None:
    """Set a fulfillment order's status from what remains of its line items."""
    lines = fulfillment_order["line_items"]
    remaining = sum(line["fulfillable_quantity"] for line in lines)
    fulfilled = sum(line["quantity"] - line["fulfillable_quantity"] for line in lines)
    if remaining == 0:
        fulfillment_order["status"] = "closed"
        fulfillment_order["supported_actions"] = []
    elif fulfilled > 0:
        fulfillment_order["status"] = "in_progress"
    else:
        fulfillment_order["status"] = "open"


def _timestamp(value: str) -> datetime:
    moment = parse_timestamp(value)
    if moment is None:
        raise unprocessable(f"updated_at must be an ISO 8601 timestamp with offset, got {value!r}")
    return moment


def _is_id(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _destination(address: object) -> dict[str, Any] | None:
    if not isinstance(address, dict):
        return None
    names = (
        *("address1", "address2", "city", "company", "country", "email", "first_name"),
        *("last_name", "phone", "province", "zip"),
    )
    return {name: address.get(name) for name in names}


def _assigned_location(location: dict[str, Any]) -> dict[str, Any]:
    names = ("address1", "address2", "city", "country_code", "name", "phone", "province", "zip")
    view = {name: location.get(name) for name in names}
    view["location_id"] = location["id"]
    return view
