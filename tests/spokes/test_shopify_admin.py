"""Tests of the Shopify Admin API client against the Shopify simulator on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from entrepot.simulators.shopify import ShopifySimSettings, ShopSettings, running_in_thread
from entrepot.spokes.failures import NothingToDo, PermanentFailure, RetryLater
from entrepot.spokes.shopify.admin import ShopifyAdminClient

SHOP = "acme-fasteners.myshopify.com"
TOKEN = "shpat_test_token"
API = "/admin/api/2024-10"
CONTROL = f"/_sim/shops/{SHOP}"


class CountingTransport(httpx.AsyncBaseTransport):
    """Real HTTP transport that counts the statuses of the responses it returns."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.statuses: Counter[int] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        self.statuses[response.status_code] += 1
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def shop_settings(**bucket: Any) -> ShopifySimSettings:
    return ShopifySimSettings(shops=(ShopSettings(domain=SHOP, access_token=TOKEN, **bucket),))


@pytest.fixture
def sim_url() -> Iterator[str]:
    with running_in_thread(shop_settings()) as (url, _app):
        yield url


@pytest.fixture
async def control(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """Plain HTTP client of the simulator, for its control API and raw requests."""
    headers = {"X-Shopify-Access-Token": TOKEN}
    async with httpx.AsyncClient(base_url=sim_url, headers=headers, timeout=10) as http:
        yield http


@pytest.fixture
async def client(sim_url: str) -> AsyncIterator[ShopifyAdminClient]:
    async with ShopifyAdminClient(sim_url, TOKEN) as admin:
        yield admin


def order(order_id: int, updated_at: str, **fields: Any) -> dict[str, Any]:
    """Return an order body as Shopify sends it: 2 × BOLT-M8 and 1 × NUT-M8."""
    body: dict[str, Any] = {
        "id": order_id,
        "name": f"#{order_id}",
        "created_at": "2025-03-01T08:00:00-08:00",
        "updated_at": updated_at,
        "total_price": "88.00",
        "line_items": [
            {"id": order_id * 10 + 1, "sku": "BOLT-M8", "quantity": 2, "price": "30.00"},
            {"id": order_id * 10 + 2, "sku": "NUT-M8", "quantity": 1, "price": "20.00"},
        ],
    }
    body.update(fields)
    return body


async def load(control: httpx.AsyncClient, path: str, **payload: Any) -> dict[str, Any]:
    response = await control.post(f"{CONTROL}/{path}", json=payload)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def fulfillments_in_sim(control: httpx.AsyncClient) -> list[dict[str, Any]]:
    recorded: list[dict[str, Any]] = (await control.get(f"{CONTROL}/fulfillments")).json()[
        "fulfillments"
    ]
    return recorded


# Orders


async def test_get_order_returns_exact_bytes(
    client: ShopifyAdminClient, control: httpx.AsyncClient
) -> None:
    await load(control, "orders", order=order(1001, "2025-03-01T10:00:00-08:00", note="é ü"))
    raw = await control.get(f"{API}/orders/1001.json")

    body = await client.get_order(1001)

    assert body == raw.content
    assert json.loads(body)["order"]["note"] == "é ü"


async def test_get_order_unknown_is_permanent(client: ShopifyAdminClient) -> None:
    with pytest.raises(PermanentFailure) as caught:
        await client.get_order("424242")

    assert caught.value.status_code == 404
    assert "Not Found" in caught.value.reason


async def test_wrong_token_is_permanent(sim_url: str) -> None:
    async with ShopifyAdminClient(sim_url, "shpat_wrong") as admin:
        with pytest.raises(PermanentFailure) as caught:
            await admin.get_order(1001)

    assert caught.value.status_code == 401
    assert "Invalid API key or access token" in caught.value.reason
    assert caught.value.remedy is not None


async def test_orders_updated_since_follows_pages(
    client: ShopifyAdminClient, control: httpx.AsyncClient
) -> None:
    start = datetime(2025, 3, 1, tzinfo=UTC)
    orders = [
        order(2000 + n, (start + timedelta(minutes=n)).isoformat(), cancelled_at=None)
        for n in range(520)
    ]
    # A cancelled order counts too, because the client asks for every status.
    orders[300]["cancelled_at"] = orders[300]["updated_at"]
    await load(control, "orders", orders=orders)

    since = start + timedelta(minutes=10)
    seen = [item["id"] async for item in client.orders_updated_since(since)]

    assert seen == [2000 + n for n in range(10, 520)]
    stats = (await control.get(f"{CONTROL}/stats")).json()
    assert stats["by_route"]["GET orders.json"] == 3


async def test_orders_updated_since_needs_time_zone(client: ShopifyAdminClient) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        async for _ in client.orders_updated_since(datetime(2025, 3, 1)):
            pass


# Fulfillments


async def test_create_fulfillment_twice_creates_one(
    client: ShopifyAdminClient, control: httpx.AsyncClient
) -> None:
    await load(control, "orders", order=order(3001, "2025-03-01T10:00:00+00:00"))

    first = await client.create_fulfillment(
        3001, [("BOLT-M8", 2)], tracking_number="1Z999AA1", tracking_company="UPS"
    )
    second = await client.create_fulfillment(
        3001, [("BOLT-M8", 2)], tracking_number="1Z999AA1", tracking_company="UPS"
    )

    assert first == second
    (recorded,) = await fulfillments_in_sim(control)
    assert str(recorded["id"]) == first
    assert recorded["tracking_number"] == "1Z999AA1"
    assert recorded["tracking_company"] == "UPS"
    assert [(i["sku"], i["quantity"]) for i in recorded["line_items"]] == [("BOLT-M8", 2)]


async def test_create_fulfillment_in_two_shipments(
    client: ShopifyAdminClient, control: httpx.AsyncClient
) -> None:
    await load(control, "orders", order=order(3101, "2025-03-01T10:00:00+00:00"))

    first = await client.create_fulfillment(
        3101, [("BOLT-M8", 1)], tracking_number="T-1", tracking_company="UPS"
    )
    second = await client.create_fulfillment(
        3101,
        [("BOLT-M8", 1), ("NUT-M8", 1)],
        tracking_number="T-2",
        tracking_company="USPS",
        tracking_url="https://tools.usps.com/go/TrackConfirmAction?tLabels=T-2",
        notify_customer=True,
    )

    assert first != second
    recorded = await fulfillments_in_sim(control)
    assert [f["tracking_number"] for f in recorded] == ["T-1", "T-2"]
    assert recorded[1]["tracking_url"].endswith("T-2")
    fulfillment_orders = (await control.get(f"{API}/orders/3101/fulfillment_orders.json")).json()
    assert fulfillment_orders["fulfillment_orders"][0]["status"] == "closed"


async def test_create_fulfillment_over_quantity_is_permanent(
    client: ShopifyAdminClient, control: httpx.AsyncClient
) -> None:
    await load(control, "orders", order=order(3201, "2025-03-01T10:00:00+00:00"))

    with pytest.raises(PermanentFailure) as caught:
        await client.create_fulfillment(
            3201, [("BOLT-M8", 2), ("BOLT-M8", 1)], tracking_number="T", tracking_company="UPS"
        )

    assert "3 x 'BOLT-M8'" in caught.value.reason
    assert "only 2 remain" in caught.value.reason
    assert await fulfillments_in_sim(control) == []


async def test_create_fulfillment_unknown_sku_is_permanent(
    client: ShopifyAdminClient, control: httpx.AsyncClient
) -> None:
    await load(control, "orders", order=order(3301, "2025-03-01T10:00:00+00:00"))

    with pytest.raises(PermanentFailure, match="no line item with SKU 'WASHER'"):
        await client.create_fulfillment(
            3301, [("WASHER", 1)], tracking_number="T", tracking_company="UPS"
        )


async def test_create_fulfillment_cancelled_order(
    client: ShopifyAdminClient, control: httpx.AsyncClient
) -> None:
    cancelled = order(3401, "2025-03-01T10:00:00+00:00", cancelled_at="2025-03-01T10:00:00Z")
    await load(control, "orders", order=cancelled)

    with pytest.raises(NothingToDo, match="cancelled"):
        await client.create_fulfillment(
            3401, [("BOLT-M8", 1)], tracking_number="T", tracking_company="UPS"
        )
    assert await fulfillments_in_sim(control) == []


# Inventory


async def test_set_inventory_level_by_sku(
    client: ShopifyAdminClient, control: httpx.AsyncClient
) -> None:
    products = await load(
        control,
        "products",
        products=[{"variants": [{"sku": "BOLT-M8"}, {"sku": "NUT-M8"}]}],
    )
    item_ids = {v["sku"]: v["inventory_item_id"] for v in products["products"][0]["variants"]}
    (location,) = (await control.get(f"{API}/locations.json")).json()["locations"]

    await client.set_inventory_level("NUT-M8", location["id"], 17)
    await client.set_inventory_level("NUT-M8", str(location["id"]), 18)

    levels = (await control.get(f"{CONTROL}/inventory_levels")).json()["inventory_levels"]
    by_item = {level["inventory_item_id"]: level["available"] for level in levels}
    assert by_item == {item_ids["BOLT-M8"]: 0, item_ids["NUT-M8"]: 18}
    stats = (await control.get(f"{CONTROL}/stats")).json()
    assert stats["by_route"]["GET products.json"] == 1


async def test_set_inventory_level_unknown_or_shared_sku(
    client: ShopifyAdminClient, control: httpx.AsyncClient
) -> None:
    await load(
        control,
        "products",
        products=[{"variants": [{"sku": "TWICE"}]}, {"variants": [{"sku": "TWICE"}]}],
    )
    (location,) = (await control.get(f"{API}/locations.json")).json()["locations"]

    with pytest.raises(PermanentFailure, match="no product variant in Shopify has SKU 'NOPE'"):
        await client.set_inventory_level("NOPE", location["id"], 1)
    with pytest.raises(PermanentFailure, match="SKU 'TWICE' is on 2 variants"):
        await client.set_inventory_level("TWICE", location["id"], 1)


async def test_set_inventory_level_unknown_location(
    client: ShopifyAdminClient, control: httpx.AsyncClient
) -> None:
    await load(control, "products", product={"variants": [{"sku": "BOLT-M8"}]})

    with pytest.raises(PermanentFailure) as caught:
        await client.set_inventory_level("BOLT-M8", 12345, 1)

    assert caught.value.status_code == 404


# Failures without a response, or with one that is not a success


def scripted_client(
    handler: Callable[[httpx.Request], httpx.Response], **options: Any
) -> ShopifyAdminClient:
    """Client whose requests go to ``handler`` instead of the network."""
    transport = httpx.MockTransport(handler)
    return ShopifyAdminClient("http://127.0.0.1:9", TOKEN, transport=transport, **options)


def respond(status: int, body: Any, **headers: str) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, json=body, headers={**headers, "X-Shopify-Shop-Api-Call-Limit": "1/40"}
        )

    return handler


def fail_with(error: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("simulated", request=request)

    return handler


async def test_server_error_on_read_is_not_ambiguous() -> None:
    async with scripted_client(respond(503, {"errors": "Service Unavailable"})) as admin:
        with pytest.raises(RetryLater) as caught:
            await admin.get_order(1)

    assert caught.value.status_code == 503
    assert caught.value.ambiguous is False
    assert caught.value.throttled is False
    assert "Service Unavailable" in caught.value.reason


def fulfillment_shop(
    on_post: Callable[[httpx.Request], httpx.Response], sent: list[dict[str, Any]]
) -> Callable[[httpx.Request], httpx.Response]:
    """Return a handler of a shop with order 1 (2 × BOLT-M8 open) whose fulfillment
    POST goes to ``on_post``. The body of each POST is appended to ``sent``."""
    fulfillment_order = {
        "id": 77,
        "status": "open",
        "assigned_location_id": 5,
        "line_items": [{"id": 78, "line_item_id": 11, "fulfillable_quantity": 2}],
    }
    bodies = {
        "/orders/1/fulfillments.json": {"fulfillments": []},
        "/orders/1.json": {"order": order(1, "2025-03-01T10:00:00Z")},
        "/orders/1/fulfillment_orders.json": {"fulfillment_orders": [fulfillment_order]},
        "/products.json": {
            "products": [{"id": 3, "variants": [{"sku": "BOLT-M8", "inventory_item_id": 9}]}]
        },
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            sent.append(json.loads(request.content))
            return on_post(request)
        return httpx.Response(200, json=bodies[request.url.path.removeprefix(API)])

    return handler


async def test_server_error_on_fulfillment_post_is_ambiguous() -> None:
    sent: list[dict[str, Any]] = []
    handler = fulfillment_shop(respond(500, {"errors": "Internal Server Error"}), sent)

    async with scripted_client(handler) as admin:
        with pytest.raises(RetryLater) as caught:
            await admin.create_fulfillment(
                1, [("BOLT-M8", 2)], tracking_number="T", tracking_company="UPS"
            )

    assert caught.value.ambiguous is True
    assert caught.value.status_code == 500
    assert sent == [
        {
            "fulfillment": {
                "line_items_by_fulfillment_order": [
                    {
                        "fulfillment_order_id": 77,
                        "fulfillment_order_line_items": [{"id": 78, "quantity": 2}],
                    }
                ],
                "tracking_info": {"number": "T", "company": "UPS"},
                "notify_customer": False,
            }
        }
    ]


@pytest.mark.parametrize(
    ("error", "ambiguous"),
    [
        (httpx.ReadTimeout, True),
        (httpx.WriteTimeout, True),
        (httpx.RemoteProtocolError, True),
        (httpx.ReadError, True),
        (httpx.ConnectError, False),
        (httpx.ConnectTimeout, False),
        (httpx.PoolTimeout, False),
    ],
)
async def test_transport_error_on_fulfillment_post(
    error: type[httpx.TransportError], ambiguous: bool
) -> None:
    async with scripted_client(fulfillment_shop(fail_with(error), [])) as admin:
        with pytest.raises(RetryLater) as caught:
            await admin.create_fulfillment(
                1, [("BOLT-M8", 2)], tracking_number="T", tracking_company="UPS"
            )

    assert caught.value.ambiguous is ambiguous
    assert "simulated" in caught.value.reason


async def test_transport_errors_of_idempotent_requests() -> None:
    """A read, or a set of an absolute level, can be sent again without a look-up."""
    async with scripted_client(fulfillment_shop(fail_with(httpx.ReadTimeout), [])) as admin:
        with pytest.raises(RetryLater) as set_level:
            await admin.set_inventory_level("BOLT-M8", 5, 1)
    async with scripted_client(fail_with(httpx.ReadTimeout)) as admin:
        with pytest.raises(RetryLater) as read:
            await admin.get_order(1)

    assert set_level.value.ambiguous is False
    assert "timed out" in set_level.value.reason
    assert read.value.ambiguous is False


@pytest.mark.parametrize(
    ("status", "body", "reason", "field"),
    [
        (
            422,
            {"errors": {"available": ["must be an integer"]}},
            "available: must be an integer",
            "available",
        ),
        (
            422,
            {"errors": ["Invalid fulfillment order line item quantity requested."]},
            "Invalid fulfillment",
            None,
        ),
        (
            403,
            {"errors": "[API] This action requires merchant approval for write_inventory scope."},
            "write_inventory",
            None,
        ),
        (
            400,
            {"errors": {"location_id": "Required parameter missing or invalid"}},
            "location_id",
            "location_id",
        ),
    ],
)
async def test_client_errors_are_permanent(
    status: int, body: Any, reason: str, field: str | None
) -> None:
    async with scripted_client(respond(status, body)) as admin:
        with pytest.raises(PermanentFailure) as caught:
            await admin.get_order(1)

    assert caught.value.status_code == status
    assert reason in caught.value.reason
    assert caught.value.field_path == field
    assert caught.value.remedy


async def test_repeated_429_raises_throttled_retry_later() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(
            429,
            json={"errors": "Exceeded 2 calls per second for api client."},
            headers={"Retry-After": "0.05", "X-Shopify-Shop-Api-Call-Limit": "40/40"},
        )

    async with scripted_client(handler, max_throttle_retries=2, leak_rate=1000.0) as admin:
        with pytest.raises(RetryLater) as caught:
            await admin.get_order(1)

    assert len(calls) == 3
    assert caught.value.throttled is True
    assert caught.value.retry_after == 0.05
    assert caught.value.status_code == 429


async def test_429_then_success_is_retried() -> None:
    answers = [
        httpx.Response(429, json={"errors": "Exceeded"}, headers={"Retry-After": "0.05"}),
        httpx.Response(200, content=b'{"order":{"id":1}}'),
    ]

    async with scripted_client(lambda request: answers.pop(0), leak_rate=1000.0) as admin:
        body = await admin.get_order(1)

    assert body == b'{"order":{"id":1}}'
    assert answers == []


async def test_next_link_to_another_origin_is_rejected() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        link = '<http://127.0.0.2:9/admin/api/2024-10/orders.json?page_info=x>; rel="next"'
        return httpx.Response(200, json={"orders": []}, headers={"Link": link})

    async with scripted_client(handler) as admin:
        with pytest.raises(PermanentFailure, match="another origin"):
            async for _ in admin.orders_updated_since(datetime(2025, 3, 1, tzinfo=UTC)):
                pass


# A stock push into a bucket that other traffic fills


async def push_stock(
    client: ShopifyAdminClient, skus: list[str], location_id: int, quantity: Callable[[int], int]
) -> None:
    """Set every SKU's level, 8 requests at a time."""
    slots = asyncio.Semaphore(8)

    async def push(index: int, sku: str) -> None:
        async with slots:
            await client.set_inventory_level(sku, location_id, quantity(index))

    async with asyncio.TaskGroup() as group:
        for index, sku in enumerate(skus):
            group.create_task(push(index, sku))


async def compete(url: str, stop: asyncio.Event, per_second: float) -> Counter[int]:
    """Send requests of another app to the same bucket until ``stop`` is set."""
    statuses: Counter[int] = Counter()
    headers = {"X-Shopify-Access-Token": TOKEN}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
        while not stop.is_set():
            response = await http.get(f"{API}/locations.json")
            statuses[response.status_code] += 1
            await asyncio.sleep(1 / per_second)
    return statuses


@pytest.mark.slow
@pytest.mark.parametrize("competitor_rate", [0.0, 10.0], ids=["full-at-start", "shared"])
async def test_stock_push_into_full_bucket(competitor_rate: float) -> None:
    """500 SKUs pushed while other traffic has filled the bucket: every level is set,
    with fewer than 10 responses of 429 to this client and no exception.

    The bucket has room for 40 as on Shopify, but drains 50 per second instead of 2, so the
    500 requests take about 10 s instead of about 250 s. The client is told the same
    rate, as it would be told a Plus shop's.
    """
    skus = [f"SKU-{n:04d}" for n in range(500)]
    products = [{"title": sku, "variants": [{"sku": sku}]} for sku in skus]

    def quantity(index: int) -> int:
        return (index * 37) % 101

    with running_in_thread(shop_settings(leak_rate=50.0)) as (url, _app):
        async with httpx.AsyncClient(base_url=url, timeout=10) as control:
            loaded = await load(control, "products", products=products)
            (location,) = (
                await control.get(
                    f"{API}/locations.json", headers={"X-Shopify-Access-Token": TOKEN}
                )
            ).json()["locations"]
            await control.post(f"{CONTROL}/stats/reset")
            # Other apps keep the bucket full for the first second.
            filled = await control.put(f"{CONTROL}/bucket", json={"level": 40, "hold_seconds": 1})
            assert filled.json() == {"level": 40.0}

            stop = asyncio.Event()
            competitor = asyncio.create_task(compete(url, stop, competitor_rate or 1.0))
            if not competitor_rate:
                stop.set()
            transport = CountingTransport()
            started = time.monotonic()
            async with ShopifyAdminClient(
                url, TOKEN, leak_rate=50.0, transport=transport
            ) as admin:
                await push_stock(admin, skus, location["id"], quantity)
            elapsed = time.monotonic() - started
            stop.set()
            competitor_statuses = await competitor

            levels = (await control.get(f"{CONTROL}/inventory_levels")).json()
            stats = (await control.get(f"{CONTROL}/stats")).json()

    item_by_sku = {
        p["variants"][0]["sku"]: p["variants"][0]["inventory_item_id"] for p in loaded["products"]
    }
    available = {
        level["inventory_item_id"]: level["available"] for level in levels["inventory_levels"]
    }
    wrong = [
        sku for index, sku in enumerate(skus) if available[item_by_sku[sku]] != quantity(index)
    ]
    assert wrong == []
    assert stats["by_route"]["POST inventory_levels/set.json"] == 500
    # 500 sets and 2 pages of products, besides the 429s.
    assert transport.statuses[200] == 502
    assert 1 <= transport.statuses[429] < 10
    scenario = f"competitor at {competitor_rate}/s" if competitor_rate else "full at start"
    print(
        f"\nstock push, {scenario}: {elapsed:.1f} s, {transport.statuses[429]} responses of 429"
        f" to the client, competitor got {dict(competitor_statuses)},"
        f" max bucket level {stats['max_level']}"
    )
