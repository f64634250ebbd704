"""Fulfillment creation: check a request against what remains, then record it."""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, TypeGuard

from entrepot.simulators.shopify.errors import ShopifyError, missing_parameter, unprocessable
from entrepot.simulators.shopify.shop import (
    FULFILLABLE_STATUSES,
    ShopState,
    refresh_fulfillment_order_status,
)

INVALID_QUANTITY = "Invalid fulfillment order line item quantity requested."


@dataclass
class _Allocation:
    fulfillment_order: dict[str, Any]
    line: dict[str, Any]
    quantity: int


def create_fulfillment(shop: ShopState, payload: object) -> dict[str, Any]:
    """Create a fulfillment from a ``{"fulfillment": ...}`` request body.

    Raises ShopifyError 400 when a required parameter is missing, 404 for an unknown
    fulfillment order and 422 when a quantity is over what remains unfulfilled or a
    fulfillment order can no longer be fulfilled. Nothing changes unless every
    line item passes.
    """
    spec = payload.get("fulfillment") if isinstance(payload, dict) else None
    if not isinstance(spec, dict):
        raise missing_parameter("fulfillment")
    groups = spec.get("line_items_by_fulfillment_order")
    if not isinstance(groups, list) or not groups:
        raise missing_parameter("line_items_by_fulfillment_order")
    tracking = spec.get("tracking_info") or {}
    if not isinstance(tracking, dict):
        raise missing_parameter("tracking_info")

    allocations = _allocate(shop, groups)
    order_ids = {item.fulfillment_order["order_id"] for item in allocations}
    if len(order_ids) != 1:
        raise unprocessable("All fulfillment orders must belong to the same order.")
    return _record(shop, order_ids.pop(), allocations, tracking)


def _allocate(shop: ShopState, groups: list[Any]) -> list[_Allocation]:
    allocations: list[_Allocation] = []
    seen: set[int] = set()
    for group in groups:
        if not isinstance(group, dict) or not _is_id(group.get("fulfillment_order_id")):
            raise missing_parameter("fulfillment_order_id")
        fulfillment_order_id = group["fulfillment_order_id"]
        if fulfillment_order_id in seen:
            raise unprocessable("Fulfillment order IDs must be unique within the request.")
        seen.add(fulfillment_order_id)

        fulfillment_order = shop.find_fulfillment_order(fulfillment_order_id)
        if fulfillment_order is None:
            raise ShopifyError(404, "Not Found")
        if fulfillment_order["status"] not in FULFILLABLE_STATUSES:
            raise unprocessable(
                f"Fulfillment order {fulfillment_order_id} has an unfulfillable status= "
                f"{fulfillment_order['status']}."
            )
        allocations += _allocate_group(
            fulfillment_order, group.get("fulfillment_order_line_items")
        )

    if not any(item.quantity for item in allocations):
        raise unprocessable("Fulfillment must contain at least one line item.")
    return allocations


def _allocate_group(fulfillment_order: dict[str, Any], requested: object) -> list[_Allocation]:
    lines = {line["id"]: line for line in fulfillment_order["line_items"]}
    if requested is None or requested == []:
        # No line items named: fulfill everything that remains of the fulfillment order.
        return [
            _Allocation(fulfillment_order, line, line["fulfillable_quantity"])
            for line in lines.values()
            if line["fulfillable_quantity"] > 0
        ]
    if not isinstance(requested, list):
        raise missing_parameter("fulfillment_order_line_items")

    totals: defaultdict[int, int] = defaultdict(int)
    for item in requested:
        if not isinstance(item, dict) or item.get("id") not in lines:
            raise unprocessable("Invalid fulfillment order line item id requested.")
        quantity = item.get("quantity")
        if not _is_id(quantity):
            raise unprocessable(INVALID_QUANTITY)
        totals[item["id"]] += quantity
    for line_id, quantity in totals.items():
        if quantity > lines[line_id]["fulfillable_quantity"]:
            raise unprocessable(INVALID_QUANTITY)
    return [_Allocation(fulfillment_order, lines[i], q) for i, q in totals.items()]


def _record(
    shop: ShopState, order_id: int, allocations: list[_Allocation], tracking: dict[str, Any]
) -> dict[str, Any]:
    record = shop.order(order_id)
    order_lines = {line["id"]: line for line in record.body["line_items"]}
    fulfilled_lines = []
    for item in allocations:
        item.line["fulfillable_quantity"] -= item.quantity
        order_line = order_lines[item.line["line_item_id"]]
        order_line["fulfillable_quantity"] = max(
            0, order_line["fulfillable_quantity"] - item.quantity
        )
        order_line["fulfillment_status"] = (
            "fulfilled" if order_line["fulfillable_quantity"] == 0 else "partial"
        )
        fulfilled_lines.append({**copy.deepcopy(order_line), "quantity": item.quantity})
    for fulfillment_order in {
        id(i.fulfillment_order): i.fulfillment_order for i in allocations
    }.values():
        refresh_fulfillment_order_status(fulfillment_order)

    shop.touch(record)
    fulfillments = shop.fulfillments[order_id]
    fulfillment_id = shop.ids.next("fulfillment")
    number = tracking.get("number")
    url = tracking.get("url")
    fulfillment = {
        "id": fulfillment_id,
        "order_id": order_id,
        "status": "success",
        "created_at": record.body["updated_at"],
        "service": "manual",
        "updated_at": record.body["updated_at"],
        "tracking_company": tracking.get("company"),
        "shipment_status": None,
        "location_id": allocations[0].fulfillment_order["assigned_location_id"],
        "origin_address": None,
        "line_items": fulfilled_lines,
        "tracking_number": None if number is None else str(number),
        "tracking_numbers": [] if number is None else [str(number)],
        "tracking_url": url,
        "tracking_urls": [] if url is None else [url],
        "receipt": {},
        "name": f"{record.body.get('name', '#' + str(order_id))}.{len(fulfillments) + 1}",
        "admin_graphql_api_id": f"gid://shopify/Fulfillment/{fulfillment_id}",
    }
    fulfillments.append(fulfillment)
    record.body["fulfillments"] = copy.deepcopy(fulfillments)
    open_lines = [line for line in order_lines.values() if line["fulfillable_quantity"] > 0]
    record.body["fulfillment_status"] = "partial" if open_lines else "fulfilled"
    return fulfillment


def _is_id(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
