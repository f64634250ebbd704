"""Tests of the ERP simulator, run against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from entrepot.simulators.erp import ErpSimSettings, create_app
from entrepot.simulators.erp.jsonio import parse_json, render_json
from entrepot.simulators.erp.limits import TokenBucket

RECORDS = "/services/rest/record/v1"
BAD_REQUEST_TYPE = "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1"
TOO_MANY_REQUESTS_TYPE = "https://www.rfc-editor.org/rfc/rfc6585.html#section-4"

StartSim = Callable[..., str]


@contextmanager
def run_simulator(settings: ErpSimSettings) -> Iterator[str]:
    """Serve the simulator on a free 127.0.0.1 port in a thread and yield its base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    config = uvicorn.Config(create_app(settings), log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()

    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the ERP simulator did not start within 10 s")
        time.sleep(0.01)

    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator[StartSim]:
    """Return a function that starts a simulator with the given settings and its URL."""
    with ExitStack() as stack:
        started: list[str] = []

        def start(**overrides: Any) -> str:
            data_dir = tmp_path / f"sim-{len(started)}"
            url = stack.enter_context(
                run_simulator(ErpSimSettings(data_dir=data_dir, **overrides))
            )
            started.append(url)
            return url

        yield start


@pytest.fixture
async def client(start_sim: StartSim) -> AsyncIterator[httpx.AsyncClient]:
    """Client of a simulator with default settings, with items SKU-1/SKU-2 and customer C-1."""
    async with httpx.AsyncClient(base_url=start_sim(), timeout=10) as http:
        await seed(http)
        yield http


async def seed(http: httpx.AsyncClient) -> None:
    items = {"items": [{"sku": "SKU-1", "name": "Mug"}, {"sku": "SKU-2", "name": "Teapot"}]}
    response = await http.post("/_sim/items", json=items)
    assert response.status_code == 200

    customer = {
        "firstName": "Ann",
        "lastName": "Lee",
        "email": "ann@example.com",
        "addressBook": {
            "items": [
                {
                    "label": "Home",
                    "defaultShipping": True,
                    "defaultBilling": True,
                    "addressBookAddress": {
                        "addr1": "1 Main St",
                        "city": "Austin",
                        "country": "US",
                    },
                }
            ]
        },
    }
    response = await http.put(f"{RECORDS}/customer/eid:C-1", json=customer)
    assert response.status_code == 204


def order_body(
    external_id: str = "shopify:acme.myshopify.com:1001", **fields: Any
) -> dict[str, Any]:
    """Return a valid order of 2 × 30.00 (amount 60.00) + 1 × 20.00 + tax 8.00 = 88.00."""
    body: dict[str, Any] = {
        "externalId": external_id,
        "otherRefNum": "#1001",
        "tranDate": "2024-04-02",
        "entity": {"externalId": "C-1"},
        "currency": {"refName": "USD"},
        "memo": "first",
        "shipAddressList": {"refName": "Home"},
        "item": {
            "items": [
                {
                    "item": {"externalId": "SKU-1"},
                    "quantity": 2,
                    "rate": Decimal("30.00"),
                    "amount": Decimal("60.00"),
                },
                {"item": {"externalId": "SKU-2"}, "quantity": 1, "rate": Decimal("20.00")},
            ]
        },
        "taxTotal": Decimal("8.00"),
        "total": Decimal("88.00"),
        "orderStatus": {"id": "B"},
    }
    body.update(fields)
    return body


async def post_order(http: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    # httpx's json= cannot send a Decimal, so the body is rendered with exact numbers.
    return await http.post(
        f"{RECORDS}/salesOrder",
        content=render_json(body),
        headers={"Content-Type": "application/json"},
    )


def details_by_path(response: httpx.Response) -> dict[str | None, dict[str, str]]:
    return {detail.get("o:errorPath"): detail for detail in response.json()["o:errorDetails"]}


def error_codes(response: httpx.Response) -> list[str]:
    return [detail["o:errorCode"] for detail in response.json()["o:errorDetails"]]


def location_id(response: httpx.Response, record_type: str) -> str:
    match = re.fullmatch(
        rf"http://127\.0\.0\.1:\d+{RECORDS}/{record_type}/(\d+)", response.headers["Location"]
    )
    assert match is not None, response.headers["Location"]
    return match.group(1)


async def wait_for(check: Callable[[], Any], limit_seconds: float = 5.0) -> Any:
    """Poll the async ``check`` until it returns a truthy value, and return that value."""
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {limit_seconds} s")


async def test_customer_upsert_keeps_address_ids(client: httpx.AsyncClient) -> None:
    first = await client.put(
        f"{RECORDS}/customer/eid:C-2",
        json={
            "firstName": "Bo",
            "lastName": "Park",
            "addressBook": {
                "items": [
                    {
                        "label": "Home",
                        "defaultShipping": True,
                        "addressBookAddress": {"addr1": "1 A St"},
                    },
                    {"label": "Work", "addressBookAddress": {"addr1": "2 B St"}},
                ]
            },
        },
    )
    assert first.status_code == 204
    assert first.content == b""
    customer_id = location_id(first, "customer")

    before = (await client.get(f"{RECORDS}/customer/eid:C-2")).json()
    ids_before = {entry["label"]: entry["id"] for entry in before["addressBook"]["items"]}
    assert before["id"] == customer_id
    assert before["firstName"] == "Bo"
    assert set(ids_before) == {"Home", "Work"}

    second = await client.put(
        f"{RECORDS}/customer/eid:C-2",
        json={
            "externalId": "C-2",
            "firstName": "Bob",
            "addressBook": {
                "items": [
                    {"label": "Home", "addressBookAddress": {"addr1": "9 New St", "zip": "78701"}},
                    {
                        "label": "Cabin",
                        "defaultShipping": True,
                        "addressBookAddress": {"addr1": "Lake"},
                    },
                ]
            },
        },
    )
    assert second.status_code == 204
    assert location_id(second, "customer") == customer_id

    after = (await client.get(f"{RECORDS}/customer/{customer_id}")).json()
    entries = {entry["label"]: entry for entry in after["addressBook"]["items"]}
    assert after["externalId"] == "C-2"
    assert after["firstName"] == "Bob"
    assert after["lastName"] == "Park"
    assert set(entries) == {"Home", "Work", "Cabin"}
    assert entries["Home"]["id"] == ids_before["Home"]
    assert entries["Home"]["addressBookAddress"] == {"addr1": "9 New St", "zip": "78701"}
    assert entries["Work"]["id"] == ids_before["Work"]
    assert entries["Cabin"]["id"] not in ids_before.values()
    assert entries["Cabin"]["defaultShipping"] is True
    assert entries["Home"]["defaultShipping"] is False


async def test_customer_upsert_rejects_invalid_fields(client: httpx.AsyncClient) -> None:
    response = await client.put(
        f"{RECORDS}/customer/eid:C-3",
        json={
            "externalId": "C-other",
            "email": 42,
            "addressBook": {"items": [{"addressBookAddress": {"country": "Narnia"}}]},
        },
    )

    details = details_by_path(response)
    assert response.status_code == 400
    assert set(details) == {
        "externalId",
        "email",
        "addressBook.items[0].label",
        "addressBook.items[0].addressBookAddress.country",
    }
    assert details["addressBook.items[0].label"]["o:errorCode"] == "USER_ERROR"
    assert details["email"]["o:errorCode"] == "INVALID_FLD_VALUE"
    assert (await client.get(f"{RECORDS}/customer/eid:C-3")).status_code == 404


async def test_concurrent_new_customer_upserts_make_one(start_sim: StartSim) -> None:
    async with httpx.AsyncClient(base_url=start_sim(concurrency_limit=20), timeout=10) as http:
        responses = await asyncio.gather(
            *(
                http.put(f"{RECORDS}/customer/eid:C-RACE", json={"firstName": f"Racer {n}"})
                for n in range(10)
            )
        )
        customers = (await http.get("/_sim/customers")).json()["customers"]

    assert [response.status_code for response in responses] == [204] * 10
    assert len({response.headers["Location"] for response in responses}) == 1
    assert [customer["externalId"] for customer in customers] == ["C-RACE"]


async def test_sales_order_post_then_get_total(client: httpx.AsyncClient) -> None:
    created = await post_order(client, order_body())

    assert created.status_code == 204
    assert created.content == b""
    order_id = location_id(created, "salesOrder")

    response = await client.get(f"{RECORDS}/salesOrder/eid:shopify:acme.myshopify.com:1001")
    order = parse_json(response.content)
    assert response.status_code == 200
    assert order["id"] == order_id
    assert order["total"] == Decimal("88.00")
    assert '"total":88.00' in response.text
    assert order["clientTotal"] == Decimal("88.00")
    assert order["status"] == "pendingFulfillment"
    assert order["entity"]["externalId"] == "C-1"
    assert order["entity"]["id"].isdigit()
    assert order["writeCount"] == 1
    assert order["item"]["items"][0]["rate"] == Decimal("30.00")
    assert order["memo"] == "first"

    by_id = await client.get(f"{RECORDS}/salesOrder/{order_id}")
    assert by_id.status_code == 200
    assert by_id.json()["externalId"] == "shopify:acme.myshopify.com:1001"


async def test_sales_order_total_counts_shipping(client: httpx.AsyncClient) -> None:
    body = order_body(
        "shopify:acme.myshopify.com:1002",
        item={
            "items": [{"item": {"externalId": "SKU-1"}, "quantity": 3, "rate": Decimal("0.10")}]
        },
        shippingCost=Decimal("5.00"),
        taxTotal=Decimal("0.03"),
        total=Decimal("5.34"),
    )
    assert (await post_order(client, body)).status_code == 204

    orders = parse_json((await client.get("/_sim/orders")).content)["orders"]
    assert len(orders) == 1
    assert orders[0]["total"] == Decimal("5.33")
    assert orders[0]["clientTotal"] == Decimal("5.34")
    assert orders[0]["lines"] == [
        {"sku": "SKU-1", "quantity": 3, "rate": Decimal("0.10"), "amount": Decimal("0.30")}
    ]
    assert orders[0]["shipAddressList"] == "Home"
    assert orders[0]["currency"] == "USD"
    assert orders[0]["otherRefNum"] == "#1001"


async def test_duplicate_post_is_rejected(client: httpx.AsyncClient) -> None:
    assert (await post_order(client, order_body())).status_code == 204

    duplicate = await post_order(client, order_body(memo="second"))

    body = duplicate.json()
    assert duplicate.status_code == 400
    assert body["type"] == BAD_REQUEST_TYPE
    assert body["title"] == "Bad Request"
    assert body["status"] == 400
    assert body["o:errorDetails"] == [
        {
            "detail": (
                "A record with external ID 'shopify:acme.myshopify.com:1001' already exists."
            ),
            "o:errorCode": "DUP_RCRD",
            "o:errorPath": "externalId",
        }
    ]
    order = (await client.get(f"{RECORDS}/salesOrder/eid:shopify:acme.myshopify.com:1001")).json()
    assert order["memo"] == "first"
    assert order["writeCount"] == 1
    assert len((await client.get("/_sim/orders")).json()["orders"]) == 1


async def test_put_upsert_keeps_id_and_counts_writes(client: httpx.AsyncClient) -> None:
    url = f"{RECORDS}/salesOrder/eid:shopify:acme.myshopify.com:2001"
    body = order_body()
    del body["externalId"]

    created = await client.put(url, content=render_json(body))
    lines = {"items": [{"item": {"externalId": "SKU-2"}, "quantity": 5, "rate": Decimal("20.00")}]}
    replaced = await client.put(url, content=render_json({**body, "item": lines, "memo": "v2"}))

    assert created.status_code == 204
    assert replaced.status_code == 204
    assert location_id(replaced, "salesOrder") == location_id(created, "salesOrder")
    order = parse_json((await client.get(url)).content)
    assert order["writeCount"] == 2
    assert order["total"] == Decimal("108.00")
    assert order["memo"] == "v2"
    assert len(order["item"]["items"]) == 1
    assert len((await client.get("/_sim/orders")).json()["orders"]) == 1


async def test_validation_reports_every_problem(client: httpx.AsyncClient) -> None:
    body = order_body(
        entity={"externalId": "C-404"},
        currency={"refName": "XYZ"},
        item={
            "items": [
                {"item": {"externalId": "SKU-1"}, "quantity": -1, "rate": 1},
                {"item": {"externalId": "SKU-NOPE"}, "quantity": 1, "rate": 1},
            ]
        },
    )

    response = await post_order(client, body)

    details = details_by_path(response)
    assert response.status_code == 400
    assert set(details) == {"entity", "currency", "item.items[0].quantity", "item.items[1].item"}
    assert details["entity"]["o:errorCode"] == "INVALID_KEY_OR_REF"
    assert "C-404" in details["entity"]["detail"]
    assert details["currency"]["o:errorCode"] == "INVALID_KEY_OR_REF"
    assert "XYZ" in details["currency"]["detail"]
    assert details["item.items[0].quantity"]["o:errorCode"] == "INVALID_FLD_VALUE"
    assert details["item.items[1].item"]["o:errorCode"] == "INVALID_KEY_OR_REF"
    assert "SKU-NOPE" in details["item.items[1].item"]["detail"]
    assert (await client.get("/_sim/orders")).json()["orders"] == []


async def test_validation_checks_label_lines_and_external_id(client: httpx.AsyncClient) -> None:
    body = order_body(shipAddressList={"refName": "Moon base"}, item={"items": []})
    del body["externalId"]

    response = await post_order(client, body)

    details = details_by_path(response)
    assert response.status_code == 400
    assert set(details) == {"externalId", "item", "shipAddressList"}
    assert details["externalId"]["o:errorCode"] == "USER_ERROR"
    assert details["item"]["o:errorCode"] == "USER_ERROR"
    assert details["shipAddressList"]["o:errorCode"] == "INVALID_KEY_OR_REF"
    assert "Moon base" in details["shipAddressList"]["detail"]


async def test_malformed_json_is_invalid_content(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{RECORDS}/salesOrder", content=b'{"externalId": ')

    assert response.status_code == 400
    assert error_codes(response) == ["INVALID_CONTENT"]


async def test_patch_cancels_order(client: httpx.AsyncClient) -> None:
    url = f"{RECORDS}/salesOrder/eid:shopify:acme.myshopify.com:1001"
    created = await post_order(client, order_body())

    cancelled = await client.patch(url, json={"orderStatus": {"id": "C"}})
    missing = await client.patch(
        f"{RECORDS}/salesOrder/eid:nope", json={"orderStatus": {"id": "C"}}
    )
    invalid = await client.patch(url, json={"orderStatus": {"id": "B"}})

    assert cancelled.status_code == 204
    assert location_id(cancelled, "salesOrder") == location_id(created, "salesOrder")
    order = (await client.get(url)).json()
    assert order["status"] == "cancelled"
    assert order["orderStatus"] == {"id": "C"}
    assert order["writeCount"] == 1
    assert missing.status_code == 404
    assert error_codes(missing) == ["NONEXISTENT_ID"]
    assert invalid.status_code == 400
    assert details_by_path(invalid)["orderStatus"]["o:errorCode"] == "INVALID_FLD_VALUE"


async def test_unknown_records_are_not_found(client: httpx.AsyncClient) -> None:
    for path in ("customer/eid:nobody", "customer/999", "salesOrder/eid:none", "salesOrder/7"):
        response = await client.get(f"{RECORDS}/{path}")
        assert response.status_code == 404, path
        assert response.json()["title"] == "Not Found"
        assert error_codes(response) == ["NONEXISTENT_ID"]


async def test_concurrency_limit_rejects_excess(start_sim: StartSim) -> None:
    url = start_sim(concurrency_limit=2, latency_ms=300)
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        responses = await asyncio.gather(
            *(http.get(f"{RECORDS}/customer/eid:C-{n}") for n in range(5))
        )
        stats = (await http.get("/_sim/stats")).json()

    rejected = [response for response in responses if response.status_code == 429]
    assert sorted(response.status_code for response in responses) == [404, 404, 429, 429, 429]
    for response in rejected:
        assert error_codes(response) == ["CONCURRENCY_LIMIT_EXCEEDED"]
        assert response.json()["type"] == TOO_MANY_REQUESTS_TYPE
        assert "Retry-After" not in response.headers
    assert stats["max_in_flight"] == 2
    assert stats["in_flight"] == 0
    assert stats["by_status"] == {"404": 2, "429": 3}


async def test_rate_limit_sends_retry_after(start_sim: StartSim) -> None:
    # At 2 requests per second, the bucket has room for 2 tokens, and the third request of a
    # burst fails unless the burst takes 0.5 s or more.
    async with httpx.AsyncClient(base_url=start_sim(rate_limit=2), timeout=10) as http:
        burst = [await http.get(f"{RECORDS}/customer/eid:C-{n}") for n in range(3)]
        await asyncio.sleep(0.6)
        after_refill = await http.get(f"{RECORDS}/customer/eid:C-7")

    assert [response.status_code for response in burst] == [404, 404, 429]
    assert error_codes(burst[2]) == ["REQUEST_LIMIT_EXCEEDED"]
    assert burst[2].headers["Retry-After"] == "1"
    assert after_refill.status_code == 404


async def test_throttle_fault_counts_down(client: httpx.AsyncClient) -> None:
    added = await client.post(
        "/_sim/faults", json={"kind": "throttle", "count": 2, "retry_after": 7}
    )

    throttled = [await client.get(f"{RECORDS}/customer/eid:C-1") for _ in range(2)]
    passed = await client.get(f"{RECORDS}/customer/eid:C-1")

    assert added.status_code == 200
    assert added.json()["faults"] == [
        {"kind": "throttle", "count": 2, "retry_after": 7, "remaining": 2}
    ]
    for response in throttled:
        assert response.status_code == 429
        assert error_codes(response) == ["REQUEST_LIMIT_EXCEEDED"]
        assert response.headers["Retry-After"] == "7"
    assert passed.status_code == 200
    assert (await client.get("/_sim/faults")).json()["faults"] == []


async def test_unavailable_fault_then_recovery(client: httpx.AsyncClient) -> None:
    fault = {"kind": "unavailable", "seconds": 0.5, "retry_after": 3}
    assert (await client.post("/_sim/faults", json=fault)).status_code == 200

    during = await client.get(f"{RECORDS}/customer/eid:C-1")
    listed = (await client.get("/_sim/faults")).json()["faults"]
    await asyncio.sleep(0.6)
    after = await client.get(f"{RECORDS}/customer/eid:C-1")

    assert during.status_code == 503
    assert during.json()["title"] == "Service Unavailable"
    assert during.json()["type"] == "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.6.4"
    assert error_codes(during) == ["SERVICE_UNAVAILABLE"]
    assert "maintenance" in during.json()["o:errorDetails"][0]["detail"]
    assert during.headers["Retry-After"] == "3"
    assert listed[0]["kind"] == "unavailable"
    assert 0 < listed[0]["seconds_left"] <= 0.5
    assert after.status_code == 200
    assert (await client.get("/_sim/faults")).json()["faults"] == []


async def test_timeout_after_commit_still_commits(client: httpx.AsyncClient) -> None:
    fault = {"kind": "timeout_after_commit", "count": 1, "hang_seconds": 1.0}
    assert (await client.post("/_sim/faults", json=fault)).status_code == 200

    with pytest.raises(httpx.ReadTimeout):
        await client.post(f"{RECORDS}/salesOrder", content=render_json(order_body()), timeout=0.3)
    orders = (await client.get("/_sim/orders")).json()["orders"]
    next_order = await post_order(client, order_body("shopify:acme.myshopify.com:1002"))

    assert [order["writeCount"] for order in orders] == [1]
    assert orders[0]["externalId"] == "shopify:acme.myshopify.com:1001"
    assert next_order.status_code == 204

    async def hung_entry() -> dict[str, Any] | None:
        entries = (await client.get("/_sim/requests")).json()["requests"]
        matches = [
            entry for entry in entries if entry["externalId"] == "shopify:acme.myshopify.com:1001"
        ]
        return matches[0] if matches else None

    entry = await wait_for(hung_entry)
    assert entry["status"] == 204
    assert entry["method"] == "POST"
    assert entry["finished_at"] - entry["started_at"] >= 1.0


async def test_slow_fault_works_after_disconnect(client: httpx.AsyncClient) -> None:
    fault = {"kind": "slow", "count": 1, "seconds": 1.0}
    assert (await client.post("/_sim/faults", json=fault)).status_code == 200

    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await client.post(f"{RECORDS}/salesOrder", content=render_json(order_body()), timeout=0.3)
    orders_during_sleep = (await client.get("/_sim/orders")).json()["orders"]
    in_flight = (await client.get("/_sim/stats")).json()["in_flight"]

    async def stored_orders() -> list[dict[str, Any]]:
        orders: list[dict[str, Any]] = (await client.get("/_sim/orders")).json()["orders"]
        return orders

    orders = await wait_for(stored_orders)
    assert orders_during_sleep == []
    assert in_flight == 1
    assert time.monotonic() - started >= 1.0
    assert [order["writeCount"] for order in orders] == [1]
    assert (await client.get("/_sim/faults")).json()["faults"] == []


async def test_token_is_required(start_sim: StartSim) -> None:
    async with httpx.AsyncClient(base_url=start_sim(token="s3cret"), timeout=10) as http:
        missing = await http.get(f"{RECORDS}/customer/eid:C-1")
        wrong = await http.get(
            f"{RECORDS}/customer/eid:C-1", headers={"Authorization": "Bearer nope"}
        )
        right = await http.get(
            f"{RECORDS}/customer/eid:C-1", headers={"Authorization": "Bearer s3cret"}
        )
        health = await http.get("/_sim/health")

    assert missing.status_code == 401
    assert missing.json()["title"] == "Unauthorized"
    assert missing.json()["type"] == "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.2"
    assert error_codes(missing) == ["INVALID_LOGIN"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert wrong.status_code == 401
    assert right.status_code == 404
    assert health.json() == {"status": "ok"}


async def test_stats_and_request_log(client: httpx.AsyncClient) -> None:
    before = time.time()
    await post_order(client, order_body())
    await post_order(client, order_body())

    stats = (await client.get("/_sim/stats")).json()
    entries = (await client.get("/_sim/requests")).json()["requests"]

    # The seed made one PUT of customer C-1 before these two POSTs.
    assert stats["requests"] == 3
    assert stats["by_status"] == {"204": 2, "400": 1}
    assert stats["max_in_flight"] == 1
    assert [entry["status"] for entry in entries] == [204, 204, 400]
    assert entries[0]["method"] == "PUT"
    assert entries[0]["path"] == f"{RECORDS}/customer/eid:C-1"
    assert entries[0]["externalId"] == "C-1"
    assert entries[1]["externalId"] == "shopify:acme.myshopify.com:1001"
    assert entries[2]["started_at"] >= before
    assert all(entry["started_at"] <= entry["finished_at"] for entry in entries)


async def test_reset_clears_everything(client: httpx.AsyncClient) -> None:
    await post_order(client, order_body())
    await client.post("/_sim/faults", json={"kind": "slow", "count": 5, "seconds": 0})

    reset = await client.post("/_sim/reset")

    assert reset.status_code == 200
    assert (await client.get("/_sim/orders")).json() == {"orders": []}
    assert (await client.get("/_sim/customers")).json() == {"customers": []}
    assert (await client.get("/_sim/items")).json() == {"items": []}
    assert (await client.get("/_sim/faults")).json() == {"faults": []}
    assert (await client.get("/_sim/requests")).json() == {"requests": []}
    stats = (await client.get("/_sim/stats")).json()
    assert stats == {"requests": 0, "by_status": {}, "max_in_flight": 0, "in_flight": 0}

    await seed(client)
    assert (await post_order(client, order_body())).status_code == 204


def test_token_bucket_refills_at_rate() -> None:
    now = [100.0]
    bucket = TokenBucket(2, clock=lambda: now[0])

    take_results = [bucket.try_take() for _ in range(3)]
    retry_after = bucket.retry_after_seconds()
    now[0] += 0.5
    after_half_second = bucket.try_take()

    assert take_results == [True, True, False]
    assert retry_after == 1
    assert after_half_second is True
    assert bucket.try_take() is False


def test_serve_prints_listening_line(tmp_path: Path) -> None:
    script = (
        "from pathlib import Path\n"
        "from entrepot.simulators.erp import ErpSimSettings, serve\n"
        f"serve(ErpSimSettings(port=0, data_dir=Path({str(tmp_path)!r})))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"ERP simulator listening on (http://127\.0\.0\.1:\d+)", line)
        assert match is not None, line

        health = httpx.get(f"{match.group(1)}/_sim/health", timeout=10)
        assert health.json() == {"status": "ok"}
        assert (tmp_path / "erp-sim.db").exists()
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
