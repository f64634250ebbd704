"""Orders from webhook to ERP through a hub in this process and the ERP simulator."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

from tests.harness import ErpSim, hub_settings, order_body, running_hub


async def test_order_reaches_erp(tmp_path: Path, erp: ErpSim) -> None:
    body = order_body(7001)
    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        response = await hub.post_webhook(body, webhook_id="w-7001")
        await hub.wait_drained()
        order = await hub.order("7001")

    assert response.status_code == 200
    assert order["state"] == "accepted"
    assert order["total"] == "29.00"
    assert order["currency"] == "USD"
    assert order["correlation_id"] == response.json()["correlation_id"]
    [posted] = erp.orders()
    assert posted["externalId"] == "shopify:acme-fasteners.myshopify.com:7001"
    assert order["erp_id"] == str(posted["id"])
    assert Decimal(str(posted["total"])) == Decimal("29.00")
    assert [(line["sku"], line["quantity"]) for line in posted["lines"]] == [("ACME-BOLT-M8", 2)]
    assert posted["writeCount"] == 1
    events = [step["event"] for step in order["history"]]
    assert events == ["received", "validated", "accepted by erp"]


async def test_order_found_by_each_key(tmp_path: Path, erp: ErpSim) -> None:
    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        response = await hub.post_webhook(order_body(7002), webhook_id="w-7002")
        await hub.wait_drained()
        correlation_id = response.json()["correlation_id"]
        by_correlation = await hub.order(correlation_id)
        by_channel_id = await hub.order("7002")
        by_number = await hub.client.get("/api/orders/%237002")
        missing = await hub.client.get("/api/orders/nothing-like-this")

    assert by_correlation["channel_order_id"] == "7002"
    assert by_channel_id["correlation_id"] == correlation_id
    assert by_number.json()["channel_order_id"] == "7002"
    assert missing.status_code == 404


async def test_repeated_webhooks_make_one_erp_order(tmp_path: Path, erp: ErpSim) -> None:
    deliveries = []
    for number in range(7010, 7015):
        body = json.dumps(order_body(number)).encode()
        deliveries += [(body, f"w-{number}", f"e-{number}")] * 3
    random.Random(4).shuffle(deliveries)

    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        for body, webhook_id, event_id in deliveries:
            response = await hub.post_webhook(body, webhook_id=webhook_id, event_id=event_id)
            assert response.status_code == 200
        await hub.wait_drained()
        summary = await hub.summary()

    posted = erp.orders()
    assert sorted(order["otherRefNum"] for order in posted) == [f"#{n}" for n in range(7010, 7015)]
    assert all(order["writeCount"] == 1 for order in posted)
    assert summary["duplicates_ignored"] == 10
    assert summary["orders"] == {"accepted": 5}


async def test_same_event_from_two_subscriptions_stored_once(tmp_path: Path, erp: ErpSim) -> None:
    body = json.dumps(order_body(7020)).encode()
    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        first = await hub.post_webhook(body, webhook_id="w-a", event_id="e-7020")
        second = await hub.post_webhook(body, webhook_id="w-b", event_id="e-7020")
        await hub.wait_drained()

    assert first.json()["duplicate"] is False
    assert second.json()["duplicate"] is True
    assert second.json()["correlation_id"] == first.json()["correlation_id"]
    assert len(erp.orders()) == 1


async def test_bad_input_stored_and_others_flow(tmp_path: Path, erp: ErpSim) -> None:
    missing_sku = order_body(7031)
    del missing_sku["line_items"][0]["sku"]
    negative = order_body(7032)
    negative["line_items"][0]["quantity"] = -2
    unknown_currency = order_body(7033, currency="ZZZ")
    cases = {
        "malformed": (b'{"id": 7030, "line_items": [', "body: invalid JSON"),
        "7031": (missing_sku, "line_items[0].sku: missing"),
        "7032": (negative, "line_items[0].quantity: "),
        "7033": (unknown_currency, "currency: unknown ISO 4217 currency code"),
    }

    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        answers = {}
        await hub.post_webhook(order_body(7034), webhook_id="w-7034")
        for key, (body, _) in cases.items():
            answers[key] = await hub.post_webhook(body, webhook_id=f"w-{key}")
        await hub.post_webhook(order_body(7035), webhook_id="w-7035")
        await hub.wait_drained()

        for key, (_, expected_error) in cases.items():
            assert answers[key].status_code == 200
            view = await hub.order(answers[key].json()["correlation_id"])
            if key == "malformed":
                assert view["order"] is None
                assert view["receipt"]["status"] == "failed"
                assert expected_error in view["receipt"]["error"]
                continue
            assert view["state"] == "rejected", key
            assert expected_error in view["last_error"], key
            [dead_letter] = view["dead_letters"]
            assert dead_letter["stage"] == "intake"
            assert expected_error in dead_letter["reason"]
        dead_letters = (await hub.client.get("/api/dead-letters")).json()
        accepted = [(await hub.order(n))["state"] for n in ("7034", "7035")]

    assert len(dead_letters) == 4
    assert accepted == ["accepted", "accepted"]
    assert sorted(order["otherRefNum"] for order in erp.orders()) == ["#7034", "#7035"]
