"""The simulator's own control API under /_sim, for tests and demos.

It is not part of Shopify's API and needs no access token. Every route names its
shop by domain: ``/_sim/shops/{domain}/...``.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from entrepot.simulators.shopify.errors import ShopifyError, json_response, unprocessable
from entrepot.simulators.shopify.shop import ShopState
from entrepot.simulators.shopify.state import SimState

router = APIRouter(prefix="/_sim")


def _state(request: Request) -> SimState:
    state: SimState = request.app.state.sim
    return state


def _shop(request: Request, domain: str) -> ShopState:
    shop = _state(request).shop(domain)
    if shop is None:
        known = ", ".join(_state(request).shops)
        raise ShopifyError(404, f"Shop {domain!r} not found. The simulator serves {known}.")
    return shop


async def _items(request: Request, plural: str, singular: str) -> list[dict[str, Any]]:
    """Read ``{plural: [...]}`` or ``{singular: {...}}`` from the request body."""
    try:
        payload = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise ShopifyError(400, "Request body is not valid JSON.") from None
    items: list[dict[str, Any]]
    if isinstance(payload, dict) and isinstance(payload.get(plural), list):
        items = payload[plural]
    elif isinstance(payload, dict) and isinstance(payload.get(singular), dict):
        items = [payload[singular]]
    else:
        raise ShopifyError(400, f"Send {{{plural!r}: [...]}} or {{{singular!r}: {{...}}}}.")
    if not all(isinstance(item, dict) for item in items):
        raise ShopifyError(400, f"Each of {plural} must be a JSON object.")
    return items


@router.get("/health")
async def health(request: Request) -> Response:
    state = _state(request)
    return json_response(
        {"status": "ok", "api_version": state.settings.api_version, "shops": list(state.shops)}
    )


@router.post("/shops/{domain}/orders")
async def load_orders(request: Request, domain: str) -> Response:
    """Load order bodies as Shopify sends them in webhooks. Each id must be new."""
    shop = _shop(request, domain)
    records = [shop.load_order(body) for body in await _items(request, "orders", "order")]
    loaded = [{"id": r.id, "updated_at": r.body["updated_at"]} for r in records]
    return json_response({"orders": loaded}, status=201)


@router.put("/shops/{domain}/orders/{order_id:int}")
async def update_order(request: Request, domain: str, order_id: int) -> Response:
    """Change top-level fields of an order, which moves its ``updated_at`` forward."""
    shop = _shop(request, domain)
    (changes,) = await _items(request, "changes", "order")
    return json_response({"order": shop.update_order(order_id, changes).body})


@router.post("/shops/{domain}/products")
async def load_products(request: Request, domain: str) -> Response:
    shop = _shop(request, domain)
    products = [shop.load_product(body) for body in await _items(request, "products", "product")]
    return json_response({"products": products}, status=201)


@router.post("/shops/{domain}/locations")
async def add_location(request: Request, domain: str) -> Response:
    shop = _shop(request, domain)
    (body,) = await _items(request, "locations", "location")
    return json_response({"location": shop.add_location(body)}, status=201)


@router.get("/shops/{domain}/fulfillments")
async def recorded_fulfillments(request: Request, domain: str) -> Response:
    return json_response({"fulfillments": _shop(request, domain).all_fulfillments()})


@router.get("/shops/{domain}/inventory_levels")
async def recorded_inventory_levels(request: Request, domain: str) -> Response:
    levels = sorted(
        _shop(request, domain).inventory_levels.values(),
        key=lambda level: (level["inventory_item_id"], level["location_id"]),
    )
    return json_response({"inventory_levels": levels})


@router.get("/shops/{domain}/stats")
async def stats(request: Request, domain: str) -> Response:
    """Return the request counters and the bucket's current level."""
    shop = _shop(request, domain)
    bucket = shop.bucket
    body = shop.stats.to_json()
    body["bucket"] = {
        "level": round(bucket.level, 3),
        "capacity": bucket.capacity,
        "leak_rate": bucket.leak_rate,
    }
    return json_response(body)


@router.post("/shops/{domain}/stats/reset")
async def reset_stats(request: Request, domain: str) -> Response:
    shop = _shop(request, domain)
    shop.stats = type(shop.stats)()
    return Response(status_code=204)


@router.put("/shops/{domain}/bucket")
async def fill_bucket(request: Request, domain: str) -> Response:
    """Set the bucket's level, as if other apps had just used that many requests.

    With ``hold_seconds``, the level stays there that long before it drains, as if
    the other apps went on sending at the leak rate.
    """
    shop = _shop(request, domain)
    try:
        payload = json.loads(await request.body())
        level = float(payload["level"])
        hold_seconds = float(payload.get("hold_seconds", 0.0))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise unprocessable(
            'Send {"level": <requests in the bucket>, "hold_seconds": <seconds>}.'
        ) from None
    shop.bucket.fill_to(level, hold_seconds)
    return json_response({"level": round(shop.bucket.level, 3)})
