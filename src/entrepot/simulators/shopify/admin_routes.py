"""REST Admin API routes: orders, fulfillment orders, fulfillments, locations,
products and inventory levels, in Shopify's wire format."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeGuard

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from entrepot.simulators.shopify.errors import (
    ShopifyError,
    json_response,
    missing_parameter,
    not_found,
    unprocessable,
)
from entrepot.simulators.shopify.fulfillments import create_fulfillment
from entrepot.simulators.shopify.gate import SHOP_SCOPE_KEY
from entrepot.simulators.shopify.pagination import (
    filters_of,
    invalid_parameter,
    link_header,
    paginate,
    parse_limit,
    read_cursor,
    select_fields,
)
from entrepot.simulators.shopify.shop import OrderRecord, ShopState

router = APIRouter(prefix="/admin/api/{version}")

ORDER_STATUSES = frozenset({"open", "closed", "cancelled", "any"})


def _shop(request: Request) -> ShopState:
    shop: ShopState = request.scope[SHOP_SCOPE_KEY]
    return shop


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise ShopifyError(400, "Request body is not valid JSON.") from None


@router.get("/orders.json")
async def list_orders(request: Request) -> Response:
    """List orders by ``updated_at`` then ``id``, both ascending, a page at a time.

    NOTE: Shopify's default order is ``created_at`` descending. The simulator always
    sorts as ``order=updated_at asc`` would, the order sync clients ask for.
    """
    shop = _shop(request)
    query = request.query_params
    cursor = read_cursor(query)
    limit = parse_limit(query)
    filters = filters_of(query, cursor)
    rows = sorted(_filter_orders(shop.orders.values(), filters), key=lambda r: r.sort_key)
    page, next_key, previous_key = paginate(rows, lambda r: r.sort_key, limit, cursor)

    fields = query.get("fields")
    body = {"orders": [select_fields(record.body, fields) for record in page]}
    return _page_response(request, body, limit, filters, next_key, previous_key)


@router.get("/orders/{order_id:int}.json")
async def get_order(request: Request, order_id: int) -> Response:
    record = _shop(request).order(order_id)
    return json_response({"order": select_fields(record.body, request.query_params.get("fields"))})


@router.get("/orders/{order_id:int}/fulfillment_orders.json")
async def list_fulfillment_orders(request: Request, order_id: int) -> Response:
    shop = _shop(request)
    shop.order(order_id)
    return json_response({"fulfillment_orders": shop.fulfillment_orders[order_id]})


@router.get("/orders/{order_id:int}/fulfillments.json")
async def list_order_fulfillments(request: Request, order_id: int) -> Response:
    shop = _shop(request)
    shop.order(order_id)
    return json_response({"fulfillments": shop.fulfillments[order_id]})


@router.post("/fulfillments.json")
async def post_fulfillment(request: Request) -> Response:
    fulfillment = create_fulfillment(_shop(request), await _json_body(request))
    return json_response({"fulfillment": fulfillment}, status=201)


@router.get("/locations.json")
async def list_locations(request: Request) -> Response:
    return json_response({"locations": list(_shop(request).locations.values())})


@router.get("/locations/{location_id:int}.json")
async def get_location(request: Request, location_id: int) -> Response:
    location = _shop(request).locations.get(location_id)
    if location is None:
        raise not_found()
    return json_response({"location": location})


@router.get("/products.json")
async def list_products(request: Request) -> Response:
    """List products by id, a page at a time, each with its variants."""
    shop = _shop(request)
    query = request.query_params
    cursor = read_cursor(query)
    limit = parse_limit(query)
    filters = filters_of(query, cursor)
    rows = sorted(_filter_products(shop.products.values(), filters), key=lambda p: p["id"])
    page, next_key, previous_key = paginate(rows, lambda p: (p["id"],), limit, cursor)

    fields = query.get("fields")
    body = {"products": [select_fields(product, fields) for product in page]}
    return _page_response(request, body, limit, filters, next_key, previous_key)


@router.get("/products/{product_id:int}.json")
async def get_product(request: Request, product_id: int) -> Response:
    product = _shop(request).products.get(product_id)
    if product is None:
        raise not_found()
    return json_response({"product": product})


@router.get("/inventory_levels.json")
async def list_inventory_levels(request: Request) -> Response:
    """List inventory levels of the given items and/or locations."""
    shop = _shop(request)
    query = request.query_params
    cursor = read_cursor(query)
    limit = parse_limit(query)
    filters = filters_of(query, cursor)
    item_ids = _id_list(filters, "inventory_item_ids")
    location_ids = _id_list(filters, "location_ids")
    if item_ids is None and location_ids is None:
        # NOTE: Shopify requires one of the two, but the wording of this 422 is a guess.
        raise unprocessable("inventory_item_ids, location_ids, or both must be given.")

    rows = sorted(
        (
            level
            for (item_id, location_id), level in shop.inventory_levels.items()
            if (item_ids is None or item_id in item_ids)
            and (location_ids is None or location_id in location_ids)
        ),
        key=_level_key,
    )
    page, next_key, previous_key = paginate(rows, _level_key, limit, cursor)
    body = {"inventory_levels": page}
    return _page_response(request, body, limit, filters, next_key, previous_key)


@router.post("/inventory_levels/set.json")
async def set_inventory_level(request: Request) -> Response:
    payload = await _json_body(request)
    if not isinstance(payload, dict):
        raise missing_parameter("inventory_item_id")
    for name in ("location_id", "inventory_item_id"):
        if not _is_id(payload.get(name)):
            raise missing_parameter(name)
    available = payload.get("available")
    if isinstance(available, bool) or not isinstance(available, int):
        raise missing_parameter("available")

    level = _shop(request).set_inventory_level(
        payload["inventory_item_id"], payload["location_id"], available
    )
    return json_response({"inventory_level": level})


def _page_response(
    request: Request,
    body: dict[str, Any],
    limit: int,
    filters: dict[str, str],
    next_key: Any,
    previous_key: Any,
) -> Response:
    url = str(request.url.replace(query=""))
    link = link_header(url.rstrip("?"), limit, filters, next_key, previous_key)
    return json_response(body, headers={"Link": link} if link else None)


def _filter_orders(records: Any, filters: Mapping[str, str]) -> list[OrderRecord]:
    status = filters.get("status", "open")
    if status not in ORDER_STATUSES:
        raise invalid_parameter("status")
    bounds = {name: _time_filter(filters, name) for name in _TIME_FILTERS}
    since_id = _int_filter(filters, "since_id")
    ids = _id_list(filters, "ids")

    selected = []
    for record in records:
        body = record.body
        if not _status_matches(body, status):
            continue
        if since_id is not None and record.id <= since_id:
            continue
        if ids is not None and record.id not in ids:
            continue
        if not _within(record, bounds):
            continue
        selected.append(record)
    return selected


_TIME_FILTERS = ("updated_at_min", "updated_at_max", "created_at_min", "created_at_max")


def _within(record: OrderRecord, bounds: dict[str, datetime | None]) -> bool:
    updated = record.updated_at
    created = _parse_time(record.body.get("created_at")) or updated
    checks = (
        (bounds["updated_at_min"], updated, 1),
        (bounds["updated_at_max"], updated, -1),
        (bounds["created_at_min"], created, 1),
        (bounds["created_at_max"], created, -1),
    )
    for bound, value, sign in checks:
        if bound is not None and (value - bound).total_seconds() * sign < 0:
            return False
    return True


def _status_matches(body: dict[str, Any], status: str) -> bool:
    cancelled = body.get("cancelled_at") is not None
    closed = body.get("closed_at") is not None
    if status == "open":
        return not cancelled and not closed
    if status == "closed":
        return closed
    if status == "cancelled":
        return cancelled
    return True


def _filter_products(products: Any, filters: Mapping[str, str]) -> list[dict[str, Any]]:
    since_id = _int_filter(filters, "since_id")
    ids = _id_list(filters, "ids")
    return [
        product
        for product in products
        if (since_id is None or product["id"] > since_id) and (ids is None or product["id"] in ids)
    ]


def _time_filter(filters: Mapping[str, str], name: str) -> datetime | None:
    raw = filters.get(name)
    if raw is None:
        return None
    moment = _parse_time(raw)
    if moment is None:
        raise invalid_parameter(name)
    return moment


def _parse_time(value: object) -> datetime | None:
    """Parse an ISO 8601 time, taking one without an offset as UTC."""
    if not isinstance(value, str):
        return None
    # A "+" left unencoded in a query string arrives as a space.
    try:
        moment = datetime.fromisoformat(value.strip().replace(" ", "+"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _int_filter(filters: Mapping[str, str], name: str) -> int | None:
    raw = filters.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise invalid_parameter(name)
    return int(raw)


def _id_list(filters: Mapping[str, str], name: str) -> set[int] | None:
    raw = filters.get(name)
    if raw is None:
        return None
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    if not parts or not all(part.isdigit() for part in parts):
        raise invalid_parameter(name)
    return {int(part) for part in parts}


def _level_key(level: dict[str, Any]) -> tuple[int, int]:
    return (level["inventory_item_id"], level["location_id"])


def _is_id(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
