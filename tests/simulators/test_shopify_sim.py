"""Tests of the Shopify Admin API simulator, served by uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from entrepot.simulators.shopify import ShopifySimSettings, ShopSettings, running_in_thread

SHOP = "acme-fasteners.myshopify.com"
OTHER_SHOP = "bolt-barn.myshopify.com"
TOKEN = "shpat_test_token"
OTHER_TOKEN = "shpat_other_token"
API = "/admin/api/2024-10"
CONTROL = f"/_sim/shops/{SHOP}"
CALL_LIMIT = "x-shopify-shop-api-call-limit"


class ManualClock:
    """Monotonic clock that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings() -> ShopifySimSettings:
    return ShopifySimSettings(
        shops=(
            ShopSettings(domain=SHOP, access_token=TOKEN),
            ShopSettings(domain=OTHER_SHOP, access_token=OTHER_TOKEN),
        )
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim_url(clock: ManualClock) -> Iterator[str]:
    """Base URL of a simulator whose buckets drain only when the test moves ``clock``."""
    with running_in_thread(settings(), clock=clock) as (url, _app):
        yield url


@pytest.fixture
async def http(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"X-Shopify-Access-Token": TOKEN}
    async with httpx.AsyncClient(base_url=sim_url, headers=headers, timeout=10) as client:
        yield client


def order(order_id: int, updated_at: str, **fields: Any) -> dict[str, Any]:
    """Return a small order body as Shopify sends it: 2 × BOLT-M8 and 1 × NUT-M8."""
    body: dict[str, Any] = {
        "id": order_id,
        "name": f"#{order_id}",
        "created_at": "2025-03-01T08:00:00-08:00",
        "updated_at": updated_at,
        "currency": "USD",
        "financial_status": "paid",
        "line_items": [
            {"id": order_id * 10 + 1, "sku": "BOLT-M8", "quantity": 2, "price": "30.00"},
            {"id": order_id * 10 + 2, "sku": "NUT-M8", "quantity": 1, "price": "20.00"},
        ],
    }
    body.update(fields)
    return body


async def load_orders(http: httpx.AsyncClient, *orders: dict[str, Any]) -> None:
    response = await http.post(f"{CONTROL}/orders", json={"orders": list(orders)})
    assert response.status_code == 201, response.text


# Rate limit


async def test_burst_of_45_gets_5_throttled(http: httpx.AsyncClient) -> None:
    """With the clock stopped, 40 requests fill the bucket and the next 5 get 429."""
    responses = [await http.get(f"{API}/locations.json") for _ in range(45)]

    statuses = [response.status_code for response in responses]
    assert statuses == [200] * 40 + [429] * 5
    assert [r.headers[CALL_LIMIT] for r in responses[:40]] == [f"{n}/40" for n in range(1, 41)]
    for response in responses[40:]:
        assert response.headers[CALL_LIMIT] == "40/40"
        assert response.headers["retry-after"] == "2.0"
        assert response.json() == {
            "errors": "Exceeded 2 calls per second for api client. "
            "Reduce request rates to resume uninterrupted service."
        }

    stats = (await http.get(f"{CONTROL}/stats")).json()
    assert stats["requests"] == 45
    assert stats["throttled"] == 5
    assert stats["by_status"] == {"200": 40, "429": 5}


async def test_bucket_leaks_two_per_second(http: httpx.AsyncClient, clock: ManualClock) -> None:
    for _ in range(40):
        assert (await http.get(f"{API}/locations.json")).status_code == 200

    clock.advance(1.0)
    after_one_second = [(await http.get(f"{API}/locations.json")).status_code for _ in range(3)]
    assert after_one_second == [200, 200, 429]

    clock.advance(0.25)
    assert (await http.get(f"{API}/locations.json")).status_code == 429
    clock.advance(0.25)
    assert (await http.get(f"{API}/locations.json")).status_code == 200

    clock.advance(20.0)
    response = await http.get(f"{API}/locations.json")
    assert response.headers[CALL_LIMIT] == "1/40"


async def test_bucket_drains_in_real_time() -> None:
    with running_in_thread(settings()) as (url, _app):
        headers = {"X-Shopify-Access-Token": TOKEN}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
            filled = await http.put(f"{CONTROL}/bucket", json={"level": 40})
            assert filled.status_code == 200
            assert (await http.get(f"{API}/locations.json")).status_code == 429

            await asyncio.sleep(1.0)
            statuses = [(await http.get(f"{API}/locations.json")).status_code for _ in range(4)]

    # One second drains 2 requests; the 4 requests take far less than the 0.5 s that
    # would drain a third.
    assert statuses == [200, 200, 429, 429]


async def test_other_traffic_fills_the_bucket(http: httpx.AsyncClient) -> None:
    response = await http.put(f"{CONTROL}/bucket", json={"level": 39})
    assert response.json() == {"level": 39.0}

    first = await http.get(f"{API}/locations.json")
    second = await http.get(f"{API}/locations.json")
    assert first.status_code == 200
    assert first.headers[CALL_LIMIT] == "40/40"
    assert second.status_code == 429


async def test_held_bucket_stays_full(http: httpx.AsyncClient, clock: ManualClock) -> None:
    response = await http.put(f"{CONTROL}/bucket", json={"level": 40, "hold_seconds": 1.0})
    assert response.status_code == 200

    clock.advance(0.9)
    held = await http.get(f"{API}/locations.json")
    clock.advance(0.6)
    drained = await http.get(f"{API}/locations.json")

    assert held.status_code == 429
    assert drained.status_code == 200
    assert drained.headers[CALL_LIMIT] == "40/40"


# Authentication, shops and versions


@pytest.mark.parametrize("token", [None, "", "shpat_wrong", OTHER_TOKEN])
async def test_request_without_shop_token_is_401(sim_url: str, token: str | None) -> None:
    headers = {} if token is None else {"X-Shopify-Access-Token": token}
    async with httpx.AsyncClient(base_url=sim_url, headers=headers) as http:
        response = await http.get(f"{API}/orders.json")
        stats = (await http.get(f"{CONTROL}/stats")).json()

    assert response.status_code == 401
    assert response.json() == {
        "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
    }
    assert response.headers[CALL_LIMIT] == "0/40"
    assert stats["unauthorized"] == 1
    assert stats["bucket"]["level"] == 0


async def test_shops_by_path_prefix(sim_url: str) -> None:
    """Each shop has its own token and bucket, and the first shop also serves bare paths."""
    other_api = f"/shops/{OTHER_SHOP}{API}"
    async with httpx.AsyncClient(base_url=sim_url) as http:
        own = await http.get(
            f"{other_api}/locations.json", headers={"X-Shopify-Access-Token": OTHER_TOKEN}
        )
        foreign = await http.get(
            f"{other_api}/locations.json", headers={"X-Shopify-Access-Token": TOKEN}
        )
        default = await http.get(
            f"/shops/{SHOP}{API}/locations.json", headers={"X-Shopify-Access-Token": TOKEN}
        )
        unknown = await http.get(f"/shops/nope.myshopify.com{API}/locations.json")

    assert own.status_code == 200
    assert own.headers[CALL_LIMIT] == "1/40"
    assert foreign.status_code == 401
    assert default.status_code == 200
    assert default.headers[CALL_LIMIT] == "1/40"
    assert unknown.status_code == 404
    assert unknown.json() == {"errors": "Not Found"}


async def test_other_api_version_is_404(http: httpx.AsyncClient) -> None:
    response = await http.get("/admin/api/2023-01/orders.json")

    assert response.status_code == 404
    assert response.json() == {"errors": "Not Found"}
    assert response.headers[CALL_LIMIT] == "1/40"


async def test_unknown_order_and_route_are_404(http: httpx.AsyncClient) -> None:
    missing_order = await http.get(f"{API}/orders/999.json")
    missing_route = await http.get(f"{API}/widgets.json")

    assert missing_order.status_code == 404
    assert missing_order.json() == {"errors": "Not Found"}
    assert missing_route.status_code == 404
    assert missing_route.json() == {"errors": "Not Found"}


# Orders


async def test_orders_paginate_over_three_pages(http: httpx.AsyncClient) -> None:
    # Orders 1003 and 1004 share an updated_at, so id decides between them.
    await load_orders(
        http,
        order(1001, "2025-03-01T10:00:00+00:00"),
        order(1004, "2025-03-01T10:05:00+00:00"),
        order(1003, "2025-03-01T10:05:00+00:00"),
        order(1002, "2025-03-01T09:00:00+00:00"),
        order(1005, "2025-03-01T11:00:00+00:00"),
        order(1006, "2025-03-01T12:00:00+00:00"),
        order(1007, "2025-03-01T13:00:00+00:00", cancelled_at="2025-03-01T13:00:00+00:00"),
        order(1008, "2025-03-01T14:00:00+00:00"),
    )
    params = {"status": "any", "limit": "3", "updated_at_min": "2025-03-01T10:00:00Z"}

    pages = []
    response = await http.get(f"{API}/orders.json", params=params)
    while True:
        assert response.status_code == 200
        pages.append(response)
        next_link = response.links.get("next")
        if next_link is None:
            break
        response = await http.get(next_link["url"])

    assert [[o["id"] for o in page.json()["orders"]] for page in pages] == [
        [1001, 1003, 1004],
        [1005, 1006, 1007],
        [1008],
    ]
    assert "previous" not in pages[0].links
    assert pages[1].links["previous"]["url"].startswith(str(http.base_url))
    assert "limit=3" in pages[1].links["next"]["url"]
    assert "next" not in pages[2].links

    back = await http.get(pages[2].links["previous"]["url"])
    assert [o["id"] for o in back.json()["orders"]] == [1005, 1006, 1007]


async def test_orders_list_defaults_to_open(http: httpx.AsyncClient) -> None:
    await load_orders(
        http,
        order(2001, "2025-03-01T10:00:00+00:00"),
        order(2002, "2025-03-01T10:01:00+00:00", cancelled_at="2025-03-01T10:01:00+00:00"),
        order(2003, "2025-03-01T10:02:00+00:00", closed_at="2025-03-01T10:02:00+00:00"),
    )

    async def ids(**params: str) -> list[int]:
        response = await http.get(f"{API}/orders.json", params=params)
        assert response.status_code == 200
        return [o["id"] for o in response.json()["orders"]]

    assert await ids() == [2001]
    assert await ids(status="any") == [2001, 2002, 2003]
    assert await ids(status="cancelled") == [2002]
    assert await ids(status="closed") == [2003]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "251"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"status": "pending"}, "status"),
        ({"updated_at_min": "yesterday"}, "updated_at_min"),
        ({"page_info": "not-a-cursor"}, "page_info"),
    ],
)
async def test_orders_list_rejects_bad_parameters(
    http: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await http.get(f"{API}/orders.json", params=params)

    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]


async def test_page_info_takes_no_other_filters(http: httpx.AsyncClient) -> None:
    await load_orders(http, order(3001, "2025-03-01T10:00:00+00:00"))
    await load_orders(http, order(3002, "2025-03-01T10:01:00+00:00"))
    first = await http.get(f"{API}/orders.json", params={"limit": "1"})
    next_url = first.links["next"]["url"]

    response = await http.get(next_url + "&status=any")

    assert response.status_code == 400


async def test_get_order_and_update_bumps_updated_at(http: httpx.AsyncClient) -> None:
    await load_orders(
        http,
        order(4001, "2025-03-01T10:00:00+00:00"),
        order(4002, "2025-03-01T11:00:00+00:00"),
    )

    updated = await http.put(f"{CONTROL}/orders/4001", json={"order": {"note": "gift"}})
    fetched = await http.get(f"{API}/orders/4001.json")
    listed = await http.get(f"{API}/orders.json", params={"status": "any"})

    assert updated.status_code == 200
    assert fetched.status_code == 200
    body = fetched.json()["order"]
    assert body["note"] == "gift"
    assert body["updated_at"] > "2025-03-01T11:00:00+00:00"
    assert [o["id"] for o in listed.json()["orders"]] == [4002, 4001]


async def test_loading_an_order_twice_is_rejected(http: httpx.AsyncClient) -> None:
    await load_orders(http, order(4101, "2025-03-01T10:00:00+00:00"))

    response = await http.post(f"{CONTROL}/orders", json={"order": order(4101, "2025-03-02")})

    assert response.status_code == 422


# Fulfillments


async def fulfillment_order_of(http: httpx.AsyncClient, order_id: int) -> dict[str, Any]:
    response = await http.get(f"{API}/orders/{order_id}/fulfillment_orders.json")
    assert response.status_code == 200
    (fulfillment_order,) = response.json()["fulfillment_orders"]
    return dict(fulfillment_order)


def fulfillment_request(fulfillment_order: dict[str, Any], quantity: int) -> dict[str, Any]:
    """Request ``quantity`` of the first line (2 × BOLT-M8) of a fulfillment order."""
    line = fulfillment_order["line_items"][0]
    return {
        "fulfillment": {
            "line_items_by_fulfillment_order": [
                {
                    "fulfillment_order_id": fulfillment_order["id"],
                    "fulfillment_order_line_items": [{"id": line["id"], "quantity": quantity}],
                }
            ],
            "tracking_info": {"number": "1Z999", "company": "UPS"},
            "notify_customer": False,
        }
    }


async def test_fulfillment_orders_follow_line_items(http: httpx.AsyncClient) -> None:
    await load_orders(http, order(5001, "2025-03-01T10:00:00+00:00"))

    fulfillment_order = await fulfillment_order_of(http, 5001)

    assert fulfillment_order["order_id"] == 5001
    assert fulfillment_order["status"] == "open"
    lines = fulfillment_order["line_items"]
    assert [(line["line_item_id"], line["quantity"]) for line in lines] == [(50011, 2), (50012, 1)]
    assert [line["fulfillable_quantity"] for line in lines] == [2, 1]


async def test_fulfillment_over_quantity_is_422(http: httpx.AsyncClient) -> None:
    await load_orders(http, order(5101, "2025-03-01T10:00:00+00:00"))
    fulfillment_order = await fulfillment_order_of(http, 5101)

    response = await http.post(
        f"{API}/fulfillments.json", json=fulfillment_request(fulfillment_order, 3)
    )

    assert response.status_code == 422
    assert response.json() == {
        "errors": ["Invalid fulfillment order line item quantity requested."]
    }
    unchanged = await fulfillment_order_of(http, 5101)
    assert unchanged["line_items"][0]["fulfillable_quantity"] == 2
    recorded = (await http.get(f"{CONTROL}/fulfillments")).json()
    assert recorded == {"fulfillments": []}


async def test_fulfillment_is_recorded_and_reduces_what_remains(
    http: httpx.AsyncClient,
) -> None:
    await load_orders(http, order(5201, "2025-03-01T10:00:00+00:00"))
    fulfillment_order = await fulfillment_order_of(http, 5201)

    created = await http.post(
        f"{API}/fulfillments.json", json=fulfillment_request(fulfillment_order, 2)
    )
    again = await http.post(
        f"{API}/fulfillments.json", json=fulfillment_request(fulfillment_order, 1)
    )

    assert created.status_code == 201
    fulfillment = created.json()["fulfillment"]
    assert fulfillment["order_id"] == 5201
    assert fulfillment["tracking_number"] == "1Z999"
    assert fulfillment["tracking_company"] == "UPS"
    assert [(i["sku"], i["quantity"]) for i in fulfillment["line_items"]] == [("BOLT-M8", 2)]
    assert again.status_code == 422

    after = await fulfillment_order_of(http, 5201)
    assert after["status"] == "in_progress"
    assert [line["fulfillable_quantity"] for line in after["line_items"]] == [0, 1]
    listed = (await http.get(f"{API}/orders/5201/fulfillments.json")).json()
    assert [f["id"] for f in listed["fulfillments"]] == [fulfillment["id"]]
    the_order = (await http.get(f"{API}/orders/5201.json")).json()["order"]
    assert the_order["fulfillment_status"] == "partial"
    assert the_order["updated_at"] > "2025-03-01T10:00:00+00:00"


async def test_fulfilling_everything_closes_the_order(http: httpx.AsyncClient) -> None:
    await load_orders(http, order(5301, "2025-03-01T10:00:00+00:00"))
    fulfillment_order = await fulfillment_order_of(http, 5301)
    everything = {
        "fulfillment": {
            "line_items_by_fulfillment_order": [{"fulfillment_order_id": fulfillment_order["id"]}]
        }
    }

    created = await http.post(f"{API}/fulfillments.json", json=everything)
    again = await http.post(f"{API}/fulfillments.json", json=everything)

    assert created.status_code == 201
    assert [i["quantity"] for i in created.json()["fulfillment"]["line_items"]] == [2, 1]
    assert again.status_code == 422
    assert (await fulfillment_order_of(http, 5301))["status"] == "closed"
    the_order = (await http.get(f"{API}/orders/5301.json")).json()["order"]
    assert the_order["fulfillment_status"] == "fulfilled"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "fulfillment"),
        ({"fulfillment": {}}, "line_items_by_fulfillment_order"),
        ({"fulfillment": {"line_items_by_fulfillment_order": [{}]}}, "fulfillment_order_id"),
    ],
)
async def test_fulfillment_without_parameters_is_400(
    http: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await http.post(f"{API}/fulfillments.json", json=body)

    assert response.status_code == 400
    assert response.json() == {"errors": {field: "Required parameter missing or invalid"}}


# Catalog and inventory


async def test_products_locations_and_inventory_levels(http: httpx.AsyncClient) -> None:
    loaded = await http.post(
        f"{CONTROL}/products",
        json={
            "product": {"title": "Bolt", "variants": [{"sku": "BOLT-M8", "inventory_quantity": 5}]}
        },
    )
    assert loaded.status_code == 201
    (variant,) = loaded.json()["products"][0]["variants"]
    item_id = variant["inventory_item_id"]
    (location,) = (await http.get(f"{API}/locations.json")).json()["locations"]

    response = await http.post(
        f"{API}/inventory_levels/set.json",
        json={"location_id": location["id"], "inventory_item_id": item_id, "available": 42},
    )

    assert response.status_code == 200
    level = response.json()["inventory_level"]
    assert (level["inventory_item_id"], level["location_id"], level["available"]) == (
        item_id,
        location["id"],
        42,
    )
    listed = await http.get(f"{API}/inventory_levels.json", params={"inventory_item_ids": item_id})
    assert [lv["available"] for lv in listed.json()["inventory_levels"]] == [42]
    product = (await http.get(f"{API}/products.json")).json()["products"][0]
    assert product["variants"][0]["inventory_quantity"] == 42
    recorded = (await http.get(f"{CONTROL}/inventory_levels")).json()["inventory_levels"]
    assert [(lv["inventory_item_id"], lv["available"]) for lv in recorded] == [(item_id, 42)]


async def test_inventory_set_rejects_bad_requests(http: httpx.AsyncClient) -> None:
    (location,) = (await http.get(f"{API}/locations.json")).json()["locations"]
    url = f"{API}/inventory_levels/set.json"

    missing = await http.post(url, json={"location_id": location["id"], "available": 1})
    unknown_item = await http.post(
        url, json={"location_id": location["id"], "inventory_item_id": 1, "available": 1}
    )
    unknown_location = await http.post(
        url, json={"location_id": 1, "inventory_item_id": 1, "available": 1}
    )

    assert missing.status_code == 400
    assert missing.json() == {
        "errors": {"inventory_item_id": "Required parameter missing or invalid"}
    }
    assert unknown_item.status_code == 422
    assert unknown_location.status_code == 404


async def test_ids_are_deterministic(clock: ManualClock) -> None:
    """Two simulators given the same loads hand out the same ids."""
    seen = []
    for _ in range(2):
        with running_in_thread(settings(), clock=clock) as (url, _app):
            headers = {"X-Shopify-Access-Token": TOKEN}
            async with httpx.AsyncClient(base_url=url, headers=headers) as http:
                products = await http.post(
                    f"{CONTROL}/products",
                    json={"products": [{"variants": [{"sku": "A"}, {"sku": "B"}]}]},
                )
                await load_orders(http, order(6001, "2025-03-01T10:00:00+00:00"))
                fulfillment_order = await fulfillment_order_of(http, 6001)
                seen.append((products.json(), fulfillment_order["id"]))

    assert (
        seen[0][0]["products"][0]["variants"][1]["inventory_item_id"]
        == (seen[1][0]["products"][0]["variants"][1]["inventory_item_id"])
    )
    assert seen[0][1] == seen[1][1]
