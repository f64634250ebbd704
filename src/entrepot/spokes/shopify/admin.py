"""Client of the Shopify REST Admin API, for the calls entrepot makes to a shop.

It re-reads orders, pulls orders updated since a time, creates fulfillments with
tracking and sets inventory levels. Requests are paced to the shop's leaky bucket
(see `BucketPacer`), and a 429 is waited out and retried a few times. Every
failed request raises `RetryLater`, `PermanentFailure` or `NothingToDo`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from entrepot.spokes.failures import NothingToDo, PermanentFailure, RetryLater
from entrepot.spokes.shopify.admin_errors import (
    failure_for_response,
    failure_for_transport_error,
    retry_after_seconds,
)
from entrepot.spokes.shopify.admin_pacing import BucketPacer

log = logging.getLogger(__name__)

DEFAULT_API_VERSION = "2024-10"
UNKNOWN_SKU = "UNKNOWN_SKU"  # error code of a SKU that no variant of the shop carries
CALL_LIMIT_HEADER = "x-shopify-shop-api-call-limit"
MAX_PAGE_SIZE = 250
# Seconds to wait after a 429 without a usable Retry-After; Shopify sends "2.0".
DEFAULT_RETRY_AFTER = 2.0
# Fulfillment order statuses that accept new fulfillments.
FULFILLABLE_STATUSES = frozenset({"open", "in_progress"})
# Fulfillment statuses of shipments that did not happen.
VOID_FULFILLMENT_STATUSES = frozenset({"cancelled", "error", "failure"})


class ShopifyAdminClient:
    """Async client of one shop's REST Admin API.

    ``base_url`` is the shop's origin, such as ``https://{shop}.myshopify.com``; the
    client appends ``/admin/api/{api_version}/``. ``bucket_size`` and ``leak_rate``
    (requests per second) are the shop's REST bucket: 40 and 2 on standard plans,
    more on Shopify Plus. A 429 is waited out (Retry-After) and sent again up to
    ``max_throttle_retries`` times before `RetryLater` is raised. Create and use
    the client in one event loop, and close it with `aclose`.
    """

    def __init__(
        self,
        base_url: str,
        access_token: str,
        *,
        api_version: str = DEFAULT_API_VERSION,
        timeout: float = 30.0,
        bucket_size: int = 40,
        leak_rate: float = 2.0,
        max_throttle_retries: int = 5,
        catalog_max_age: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        origin = urlsplit(base_url)
        if origin.scheme not in ("http", "https") or not origin.netloc:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if not access_token:
            raise ValueError("access_token must not be empty")
        if max_throttle_retries < 0:
            raise ValueError(
                f"max_throttle_retries must not be negative, got {max_throttle_retries}"
            )

        self.api_url = f"{base_url.rstrip('/')}/admin/api/{api_version}/"
        self._origin = (origin.scheme, origin.netloc)
        self._pacer = BucketPacer(bucket_size, leak_rate)
        self._max_throttle_retries = max_throttle_retries
        self._http = httpx.AsyncClient(
            base_url=self.api_url,
            headers={
                "X-Shopify-Access-Token": access_token,
                "Accept": "application/json",
            },
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )
        # SKU -> inventory item ids of the variants that carry it, loaded from products.
        self._catalog_max_age = catalog_max_age
        self._inventory_items: dict[str, list[int]] = {}
        self._catalog_loaded_at: float | None = None
        self._catalog_lock = asyncio.Lock()

    async def __aenter__(self) -> ShopifyAdminClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    # Orders

    async def get_order(self, order_id: int | str) -> bytes:
        """Fetch an order and return the body, ``{"order": ...}``, exactly as received."""
        response = await self._request("GET", f"orders/{_id(order_id)}.json")
        body = _json(response, "order")
        if not isinstance(body.get("order"), dict):
            raise RetryLater(f"Shopify sent an order body without 'order' for {order_id}")
        return response.content

    async def orders_updated_since(self, since: datetime) -> AsyncIterator[dict[str, Any]]:
        """Yield every order, of any status, updated at or after ``since``.

        Orders come by ``updated_at``, 250 a page, following the Link header. An
        order updated during the walk may come twice. ``since`` must carry a time
        zone, or ValueError is raised.
        """
        if since.tzinfo is None or since.utcoffset() is None:
            raise ValueError("since must be a timezone-aware datetime")
        params: Mapping[str, str | int] | None = {
            "status": "any",
            "limit": MAX_PAGE_SIZE,
            "updated_at_min": since.isoformat(timespec="seconds"),
            "order": "updated_at asc",
        }
        url = "orders.json"
        while True:
            response = await self._request("GET", url, params=params)
            orders = _json(response, "orders").get("orders")
            if not isinstance(orders, list):
                raise RetryLater("Shopify sent an orders page without an 'orders' list")
            for order in orders:
                yield order
            next_url = self._next_page(response)
            if next_url is None:
                return
            url, params = next_url, None

    # Fulfillments

    async def create_fulfillment(
        self,
        order_id: int | str,
        lines: Sequence[tuple[str, int]],
        *,
        tracking_number: str,
        tracking_company: str,
        tracking_url: str | None = None,
        notify_customer: bool = False,
    ) -> str:
        """Fulfill ``lines`` (SKU, quantity) of an order with one tracked shipment.

        Returns the fulfillment id. If the order already has a fulfillment with this
        tracking number, its id is returned and nothing is created, so sending the
        same shipment again is safe. Raises `NothingToDo` for a cancelled order and
        `PermanentFailure` when a SKU is not on the order or its quantity is more
        than remains unfulfilled.
        """
        if not tracking_number:
            raise ValueError("tracking_number must not be empty")
        wanted = _quantities_by_sku(lines)
        order_key = _id(order_id)

        existing = await self._fulfillment_with_tracking(order_key, tracking_number)
        if existing is not None:
            log.info(
                "Order %s already has fulfillment %s with tracking number %r; not creating one.",
                order_key,
                existing,
                tracking_number,
            )
            return existing

        order = await self._order_lines(order_key)
        response = await self._request("GET", f"orders/{order_key}/fulfillment_orders.json")
        fulfillment_orders = _json(response, "fulfillment_orders").get("fulfillment_orders")
        if not isinstance(fulfillment_orders, list):
            raise RetryLater("Shopify sent no 'fulfillment_orders' list")
        groups = _allocate(order_key, order, fulfillment_orders, wanted)

        tracking = {"number": tracking_number, "company": tracking_company}
        if tracking_url is not None:
            tracking["url"] = tracking_url
        payload = {
            "fulfillment": {
                "line_items_by_fulfillment_order": groups,
                "tracking_info": tracking,
                "notify_customer": notify_customer,
            }
        }
        response = await self._request("POST", "fulfillments.json", json=payload, idempotent=False)
        fulfillment = _json(response, "fulfillment").get("fulfillment")
        if not isinstance(fulfillment, dict) or "id" not in fulfillment:
            raise RetryLater("Shopify sent a fulfillment body without an id", ambiguous=True)
        return str(fulfillment["id"])

    async def _fulfillment_with_tracking(self, order_id: str, tracking_number: str) -> str | None:
        response = await self._request("GET", f"orders/{order_id}/fulfillments.json")
        fulfillments = _json(response, "fulfillments").get("fulfillments")
        for fulfillment in fulfillments if isinstance(fulfillments, list) else []:
            if not isinstance(fulfillment, dict):
                continue
            if fulfillment.get("status") in VOID_FULFILLMENT_STATUSES:
                continue
            numbers = [
                fulfillment.get("tracking_number"),
                *(fulfillment.get("tracking_numbers") or []),
            ]
            if tracking_number in numbers:
                return str(fulfillment["id"])
        return None

    async def _order_lines(self, order_id: str) -> dict[str, Any]:
        params = {"fields": "id,name,cancelled_at,line_items"}
        response = await self._request("GET", f"orders/{order_id}.json", params=params)
        order = _json(response, "order").get("order")
        if not isinstance(order, dict):
            raise RetryLater(f"Shopify sent an order body without 'order' for {order_id}")
        if order.get("cancelled_at"):
            raise NothingToDo(f"order {order_id} is cancelled, so no fulfillment was created")
        return order

    # Inventory

    async def set_inventory_level(self, sku: str, location_id: int | str, available: int) -> None:
        """Set the available quantity of the variant with ``sku`` at a location.

        The SKU is looked up in the shop's products, which are loaded once and again
        when a SKU is missing from a catalog older than ``catalog_max_age`` seconds.
        Raises `PermanentFailure` when no variant, or more than one, has the SKU.
        """
        if isinstance(available, bool) or not isinstance(available, int):
            raise ValueError(f"available must be an int, got {available!r}")
        inventory_item_id = await self._inventory_item_for(sku)
        payload = {
            "location_id": int(_id(location_id)),
            "inventory_item_id": inventory_item_id,
            "available": available,
        }
        # Setting an absolute quantity twice has the effect of once, so it is idempotent.
        await self._request("POST", "inventory_levels/set.json", json=payload)

    async def _inventory_item_for(self, sku: str) -> int:
        items = self._inventory_items.get(sku)
        if items is None:
            async with self._catalog_lock:
                if sku not in self._inventory_items and self._catalog_is_stale():
                    await self._load_catalog()
            items = self._inventory_items.get(sku)
        if not items:
            raise PermanentFailure(
                f"no product variant in Shopify has SKU {sku!r}",
                remedy="Add the SKU to a variant in Shopify, or correct it in the ERP.",
                error_code=UNKNOWN_SKU,
                field_path="sku",
            )
        if len(items) > 1:
            raise PermanentFailure(
                f"SKU {sku!r} is on {len(items)} variants in Shopify "
                f"(inventory items {', '.join(map(str, items))})",
                remedy="Give each variant its own SKU in Shopify.",
                field_path="sku",
            )
        return items[0]

    def _catalog_is_stale(self) -> bool:
        loaded_at = self._catalog_loaded_at
        return loaded_at is None or time.monotonic() - loaded_at > self._catalog_max_age

    async def _load_catalog(self) -> None:
        catalog: defaultdict[str, list[int]] = defaultdict(list)
        params: Mapping[str, str | int] | None = {"limit": MAX_PAGE_SIZE, "fields": "id,variants"}
        url = "products.json"
        while True:
            response = await self._request("GET", url, params=params)
            products = _json(response, "products").get("products")
            for product in products if isinstance(products, list) else []:
                for variant in product.get("variants") or []:
                    sku, item_id = variant.get("sku"), variant.get("inventory_item_id")
                    if sku and isinstance(item_id, int):
                        catalog[sku].append(item_id)
            next_url = self._next_page(response)
            if next_url is None:
                break
            url, params = next_url, None
        self._inventory_items = dict(catalog)
        self._catalog_loaded_at = time.monotonic()
        log.debug("Loaded %d SKUs from Shopify products.", len(catalog))

    # Requests

    async def _request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        """Send a request within the shop's bucket and return its 2xx response.

        A 429 is retried after its Retry-After, and every other failure raises.
        """
        action = f"{method} {_path_for_logs(url)}"
        throttled = 0
        while True:
            await self._pacer.acquire()
            try:
                response = await self._http.request(method, url, params=params, json=json)
            except httpx.TransportError as exc:
                self._pacer.release()
                raise failure_for_transport_error(exc, action, idempotent=idempotent) from exc
            except BaseException:
                # Cancelled, or misused: the request still leaves the bucket's count.
                self._pacer.release()
                raise

            call_limit = response.headers.get(CALL_LIMIT_HEADER)
            if response.status_code != 429:
                self._pacer.release(call_limit)
                if response.is_success:
                    return response
                raise failure_for_response(response, action, idempotent=idempotent)

            retry_after = retry_after_seconds(response)
            if retry_after is None:
                retry_after = DEFAULT_RETRY_AFTER
            self._pacer.release(call_limit, retry_after=retry_after)
            throttled += 1
            if throttled > self._max_throttle_retries:
                log.warning(
                    "Shopify throttled %s %d times in a row; giving up for now.", action, throttled
                )
                raise RetryLater(
                    f"Shopify {action} was throttled {throttled} times (429)",
                    retry_after=retry_after,
                    throttled=True,
                    status_code=429,
                )
            log.info(
                "Shopify throttled %s (call limit %s); retrying in %.1f s, attempt %d of %d.",
                action,
                call_limit,
                retry_after,
                throttled,
                self._max_throttle_retries,
            )

    def _next_page(self, response: httpx.Response) -> str | None:
        """Return the Link header's rel="next" URL, which must stay on the shop's origin."""
        next_url = response.links.get("next", {}).get("url")
        if next_url is None:
            return None
        parts = urlsplit(next_url)
        if (parts.scheme, parts.netloc) != self._origin:
            raise PermanentFailure(
                f"Shopify's next page link points to another origin: {parts.scheme}://{parts.netloc}",
                remedy="Use the shop's own domain as the base URL.",
            )
        return next_url


def _id(value: int | str) -> str:
    """Return a Shopify id as a path segment, or raise ValueError if it is not one."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isascii() or not text.isdigit() or int(text) < 1:
        raise ValueError(f"a Shopify id must be a positive integer, got {value!r}")
    return str(int(text))


def _json(response: httpx.Response, expected_key: str) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RetryLater(
            f"Shopify sent a body that is not JSON instead of {expected_key!r}"
        ) from exc
    if not isinstance(body, dict):
        raise RetryLater(f"Shopify sent a JSON {type(body).__name__} instead of {expected_key!r}")
    return body


def _path_for_logs(url: str) -> str:
    """Shorten a next-page URL to its path under /admin/api/{version}/."""
    path = urlsplit(url).path
    marker = "/admin/api/"
    if marker in path:
        path = path.split(marker, 1)[1].split("/", 1)[-1]
    return path


def _quantities_by_sku(lines: Sequence[tuple[str, int]]) -> dict[str, int]:
    if not lines:
        raise ValueError("lines must name at least one (sku, quantity)")
    wanted: defaultdict[str, int] = defaultdict(int)
    for sku, quantity in lines:
        if not sku:
            raise ValueError("each line needs a SKU")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            raise ValueError(f"quantity of {sku!r} must be a positive int, got {quantity!r}")
        wanted[sku] += quantity
    return dict(wanted)


def _allocate(
    order_id: str,
    order: dict[str, Any],
    fulfillment_orders: list[Any],
    wanted: dict[str, int],
) -> list[dict[str, Any]]:
    """Pick fulfillment order line items for each SKU's quantity.

    Returns ``line_items_by_fulfillment_order`` for the fulfillment request. Raises
    PermanentFailure for a SKU not on the order, a quantity over what remains
    unfulfilled, or lines that would ship from more than one location.
    """
    line_skus = {
        line.get("id"): line.get("sku")
        for line in order.get("line_items") or []
        if isinstance(line, dict)
    }
    # SKU -> (fulfillment order, its line item) that still have something to fulfill.
    open_lines: defaultdict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for fulfillment_order in fulfillment_orders:
        if fulfillment_order.get("status") not in FULFILLABLE_STATUSES:
            continue
        for line in fulfillment_order.get("line_items") or []:
            sku = line_skus.get(line.get("line_item_id"))
            if sku and line.get("fulfillable_quantity", 0) > 0:
                open_lines[sku].append((fulfillment_order, line))

    picked: dict[int, dict[int, int]] = defaultdict(dict)
    locations: dict[int, Any] = {}
    for sku, quantity in wanted.items():
        if sku not in line_skus.values():
            raise PermanentFailure(
                f"order {order_id} has no line item with SKU {sku!r}",
                remedy="Send only SKUs that are on the order.",
                field_path="sku",
            )
        remaining = quantity
        for fulfillment_order, line in open_lines[sku]:
            take = min(remaining, line["fulfillable_quantity"])
            picked[fulfillment_order["id"]][line["id"]] = take
            locations[fulfillment_order["id"]] = fulfillment_order.get("assigned_location_id")
            remaining -= take
            if remaining == 0:
                break
        if remaining:
            available = quantity - remaining
            raise PermanentFailure(
                f"order {order_id}: {quantity} x {sku!r} to fulfill, "
                f"but only {available} remain unfulfilled",
                remedy="Check the shipped quantities against the order's open quantities.",
                field_path="quantity",
            )

    if len(set(locations.values())) > 1:
        raise PermanentFailure(
            f"order {order_id}: the lines are assigned to locations "
            f"{sorted(map(str, set(locations.values())))}, and one fulfillment ships from one",
            remedy="Send one shipment per location.",
        )
    return [
        {
            "fulfillment_order_id": fulfillment_order_id,
            "fulfillment_order_line_items": [
                {"id": line_id, "quantity": quantity} for line_id, quantity in lines.items()
            ],
        }
        for fulfillment_order_id, lines in picked.items()
    ]
