"""Failure kinds seen in real ERP–commerce integrations, each made impossible.

Each test states the input of the kind and asserts the right value.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from entrepot.canonical import reconcile
from entrepot.canonical.totals import derive_totals
from entrepot.spokes.protocols import WebhookEnvelope
from entrepot.spokes.shopify.mapping import map_order
from entrepot.store.database import Database
from entrepot.store.receipts import claim_receipts, store_receipt
from entrepot.store.tables import Customer, CustomerAddress, Delivery, Receipt
from tests.harness import (
    SHOP,
    ErpSim,
    HubProcess,
    example_order,
    hub_settings,
    order_body,
    running_hub,
    wait_until,
    write_config,
)


def discounted_order(order_id: int) -> dict[str, Any]:
    """Subtotal 100.00, a 20.00 discount code, 10 % tax on the discounted 80.00."""
    body = order_body(order_id)
    line = body["line_items"][0]
    line.update(price="100.00", quantity=1, total_discount="0.00")
    line["discount_allocations"] = [{"amount": "20.00", "discount_application_index": 0}]
    line["tax_lines"] = [{"title": "Tax", "rate": 0.1, "price": "8.00"}]
    body["discount_applications"] = [
        {
            "target_type": "line_item",
            "type": "discount_code",
            "value": "20.0",
            "value_type": "fixed_amount",
            "allocation_method": "across",
            "code": "TWENTY",
        }
    ]
    body["discount_codes"] = [{"code": "TWENTY", "amount": "20.00", "type": "fixed_amount"}]
    body.update(
        total_line_items_price="100.00",
        subtotal_price="80.00",
        total_discounts="20.00",
        total_tax="8.00",
        total_price="88.00",
        shipping_lines=[],
        taxes_included=False,
    )
    body.pop("total_shipping_price_set", None)
    for key in list(body):
        if key.endswith("_set") and key != "total_shipping_price_set":
            body.pop(key)
    return body


async def test_kind_1_discount_reduces_tax_base(tmp_path: Path, erp: ErpSim) -> None:
    order = map_order(discounted_order(8001), shop_domain=SHOP)
    derived = derive_totals(order)
    assert order.lines[0].net.amount == Decimal("80.00")
    assert derived.tax.amount == Decimal("8.00")
    assert derived.total.amount == Decimal("88.00")
    assert order.total.amount == Decimal("88.00")
    assert reconcile(order) == []

    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        await hub.post_webhook(discounted_order(8001), webhook_id="w-8001")
        await hub.wait_drained()
    [posted] = erp.orders()
    assert Decimal(str(posted["total"])) == Decimal("88.00")
    assert Decimal(str(posted["lines"][0]["amount"])) == Decimal("80.00")


@pytest.mark.parametrize("name", [f"order-100{n}" for n in range(1, 7)])
async def test_kind_1_erp_total_equals_channel_total(
    tmp_path: Path, erp: ErpSim, name: str
) -> None:
    # Tax included in prices, taxed shipping, shipping and order discounts, two
    # currencies: the ERP's own sum must land on the channel's total in each case.
    body = example_order(name)
    shop = "nordwerk-eu.myshopify.com" if name == "order-1004" else SHOP
    settings = hub_settings(tmp_path, erp.url)
    async with running_hub(settings) as hub:
        await hub.post_webhook(body, webhook_id=f"w-{name}", shop=shop)
        await hub.wait_drained()
        view = await hub.order(str(body["id"]))
    [posted] = erp.orders()
    assert view["state"] == "accepted"
    assert Decimal(str(posted["total"])) == Decimal(body["total_price"])


async def test_kind_2_lease_expires_after_crash(tmp_path: Path, erp: ErpSim) -> None:
    config = write_config(
        tmp_path / "hub.toml", erp.url, target={"max_concurrency": 1}, workers={"lease_seconds": 3}
    )
    data_dir = tmp_path / "hub"
    erp.fault(kind="slow", count=1, seconds=30)
    first = HubProcess(data_dir, config)
    first.post_webhook(order_body(8021), webhook_id="w-8021")
    await asyncio.sleep(2)
    first.kill()

    second = HubProcess(data_dir, config, log_name="hub-2.log")
    try:
        second.post_webhook(order_body(8022), webhook_id="w-8022")
        database = Database(f"sqlite:///{data_dir / 'entrepot.db'}")

        async def both_done() -> bool:
            with database.read() as session:
                statuses = dict(session.execute(select(Delivery.id, Delivery.status)).all())
            return list(statuses.values()) == ["done", "done"]

        await wait_until(both_done, within=30, message="both deliveries done")
        with database.read() as session:
            attempts = session.scalars(select(Delivery.attempts).order_by(Delivery.id)).all()
        database.dispose()
    finally:
        second.stop()

    assert list(attempts) == [2, 1]
    refs = sorted(order["otherRefNum"] for order in erp.orders())
    assert refs == ["#8021", "#8022"]


def test_kind_3_racing_orders_make_one_customer(tmp_path: Path) -> None:
    erp = ErpSim(tmp_path / "erp", concurrency=8, latency_ms=150)
    erp.add_items("ACME-BOLT-M8")
    data_dir = tmp_path / "hub"
    config = write_config(tmp_path / "hub.toml", erp.url)
    hub = HubProcess(data_dir, config)
    workers = [
        HubProcess(data_dir, config, command="worker", log_name=f"worker-{n}.log") for n in (1, 2)
    ]
    hub.stop()  # the two worker processes do the work; only intake used the server
    database = Database(f"sqlite:///{data_dir / 'entrepot.db'}")
    try:
        for number in (8031, 8032):
            body = json.dumps(order_body(number)).encode()
            envelope = WebhookEnvelope(
                "shopify",
                SHOP,
                "orders/create",
                f"w-{number}",
                None,
                None,
                {"x-shopify-topic": "orders/create"},
            )
            store_receipt(database, envelope, body)
            time.sleep(0.05)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(erp.orders()) < 2:
            time.sleep(0.1)
        with database.read() as session:
            store_customers = session.scalar(select(func.count()).select_from(Customer))
        customers = erp.customers()
        entities = {order["entity"]["externalId"] for order in erp.orders()}
    finally:
        for worker in workers:
            worker.stop()
        database.dispose()
        erp.close()

    assert len(customers) == 1
    assert entities == {customers[0]["externalId"]}
    assert store_customers == 1


async def test_kind_4_contention_at_go_live(tmp_path: Path) -> None:
    erp = ErpSim(tmp_path / "erp", concurrency=10, latency_ms=200)
    erp.add_items("ACME-BOLT-M8")
    settings = hub_settings(
        tmp_path / "hub", erp.url, max_concurrency=5, requests_per_second=100, max_attempts=20
    )
    failures = random.Random(44)
    injected = 0

    def fail_some_updates(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        nonlocal injected
        if statement.lstrip().upper().startswith("UPDATE") and failures.random() < 0.05:
            injected += 1
            raise sqlite3.OperationalError("database is locked")

    try:
        async with running_hub(settings) as hub:
            event.listen(hub.runtime.database.engine, "before_cursor_execute", fail_some_updates)
            for number in range(100_000, 101_000):
                await hub.post_webhook(order_body(number), webhook_id=f"w-{number}")
            await hub.wait_drained(within=180)
            event.remove(hub.runtime.database.engine, "before_cursor_execute", fail_some_updates)
            summary = await hub.summary()
            with hub.runtime.database.read() as session:
                in_flight = session.scalar(
                    select(func.count()).where(Delivery.status == "in_flight")
                )
        posted = erp.orders()
    finally:
        erp.close()

    assert injected > 0
    assert summary["orders"] == {"accepted": 1000}
    assert in_flight == 0
    assert len(posted) == 1000
    assert {order["writeCount"] for order in posted} == {1}


async def test_kind_5_known_address_reused(tmp_path: Path, erp: ErpSim) -> None:
    first = order_body(8051)
    first["shipping_address"]["address1"] = "12 Main St"
    second = order_body(8052, updated_at="2025-03-04T09:14:07-08:00")
    second["shipping_address"]["address1"] = "12 main st "
    third = order_body(8053, updated_at="2025-03-05T09:14:07-08:00")
    third["shipping_address"]["address1"] = "12  MAIN  St"
    third["shipping_address"]["city"] = third["shipping_address"]["city"].upper()

    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        for number, body in ((8051, first), (8052, second), (8053, third)):
            await hub.post_webhook(body, webhook_id=f"w-{number}")
            await hub.wait_drained()
        states = [(await hub.order(str(n)))["state"] for n in (8051, 8052, 8053)]
        with hub.runtime.database.read() as session:
            shipping_ids = session.execute(
                select(func.count(func.distinct(CustomerAddress.match_key))).where(
                    CustomerAddress.match_key.contains("main st")
                )
            ).scalar()

    assert states == ["accepted", "accepted", "accepted"]
    assert shipping_ids == 1
    [customer] = erp.customers()
    labels = {order["shipAddressList"] for order in erp.orders()}
    assert len(labels) == 1
    main_street = [
        entry
        for entry in customer["addressBook"]["items"]
        if " ".join(entry["addressBookAddress"]["addr1"].split()).lower() == "12 main st"
    ]
    assert len(main_street) == 1


async def test_kind_6_stale_claim_reclaimed(tmp_path: Path, erp: ErpSim) -> None:
    settings = hub_settings(tmp_path, erp.url)
    body = order_body(8061)
    async with running_hub(settings, workers=False) as hub:
        await hub.post_webhook(body, webhook_id="w-8061")
        # A worker claims it and dies: its lease runs out in half a second.
        claimed = hub.runtime.database.write(
            lambda session: claim_receipts(session, "dead-worker", 0.5, 10)
        )
        assert [receipt.status for receipt in claimed] == ["processing"]

    async with running_hub(settings) as hub:
        redelivered = await hub.post_webhook(body, webhook_id="w-8061")
        await hub.wait_drained()
        view = await hub.order("8061")

    assert redelivered.json()["duplicate"] is True
    assert view["state"] == "accepted"
    [receipt] = view["receipts"]
    assert receipt["attempts"] == 2
    assert receipt["duplicates"] == 1
    [posted] = erp.orders()
    assert posted["writeCount"] == 1


def test_kind_6_live_claim_not_reclaimed(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'hub.db'}")
    from entrepot.store.migrate import upgrade_to_head

    upgrade_to_head(database)
    envelope = WebhookEnvelope("shopify", SHOP, "orders/create", "w-1", None, None, {})
    store_receipt(database, envelope, b"{}")
    first = database.write(lambda s: claim_receipts(s, "worker-a", 30, 10))
    second = database.write(lambda s: claim_receipts(s, "worker-b", 30, 10))
    database.dispose()
    assert len(first) == 1
    assert second == []


async def test_kind_7_concurrent_same_webhook_one_submission(tmp_path: Path, erp: ErpSim) -> None:
    settings = hub_settings(tmp_path, erp.url)
    body = json.dumps(order_body(8071)).encode()
    envelope = WebhookEnvelope(
        "shopify",
        SHOP,
        "orders/create",
        "w-8071",
        "e-8071",
        None,
        {"x-shopify-topic": "orders/create"},
    )
    async with running_hub(settings, workers=False):
        pass  # creates the schema
    consumers = [Database(settings.store.database_url()) for _ in range(2)]
    start = threading.Barrier(2)
    results: list[Any] = []

    def consume(database: Database) -> None:
        start.wait()
        results.append(store_receipt(database, envelope, body))

    threads = [threading.Thread(target=consume, args=(db,)) for db in consumers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for database in consumers:
        database.dispose()

    async with running_hub(settings) as hub:
        both = await asyncio.gather(
            hub.post_webhook(body, webhook_id="w-8071", event_id="e-8071"),
            hub.post_webhook(body, webhook_id="w-8071-b", event_id="e-8071"),
        )
        await hub.wait_drained()
        with hub.runtime.database.read() as session:
            receipts = session.scalar(select(func.count()).select_from(Receipt))

    assert sorted(result.duplicate for result in results) == [False, True]
    assert [response.json()["duplicate"] for response in both] == [True, True]
    assert receipts == 1
    writes = [r for r in erp.requests() if r["method"] == "PUT" and "salesOrder" in r["path"]]
    assert len(writes) == 1


async def test_kind_11_update_before_create(tmp_path: Path, erp: ErpSim) -> None:
    created = order_body(
        8111, updated_at="2025-03-03T09:14:07.000-08:00", financial_status="pending"
    )
    updated = order_body(8111, updated_at="2025-03-03T09:14:07.800-08:00", financial_status="paid")
    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        await hub.post_webhook(updated, topic="orders/updated", webhook_id="w-upd")
        await hub.wait_drained()
        late = await hub.post_webhook(created, topic="orders/create", webhook_id="w-create")
        await hub.wait_drained()
        view = await hub.order("8111")
        late_receipt = await hub.order(late.json()["correlation_id"])

    assert view["state"] == "accepted"
    [posted] = erp.orders()
    assert posted["writeCount"] == 1
    stored = {r["topic"]: r for r in view["receipts"]}
    assert stored["orders/updated"]["status"] == "processed"
    assert stored["orders/create"]["status"] == "ignored"
    assert "older" in stored["orders/create"]["outcome"]
    assert late_receipt["channel_order_id"] == "8111"
    erp_order = erp.admin.get(
        "/services/rest/record/v1/salesOrder/eid:shopify:acme-fasteners.myshopify.com:8111"
    ).json()
    assert erp_order["custbody_payment_status"] == "paid"
