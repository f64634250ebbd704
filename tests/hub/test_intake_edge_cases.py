"""Intake cases at the edges: repeats in the same second, refunds, retried
cancellations, missing headers, receipts taken over by another worker, and
receipts whose processing crashes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import cast

from sqlalchemy import func, select

from entrepot.hub.intake import IntakeProcessor, IntakeResult
from entrepot.hub.intake_worker import IntakeWorker
from entrepot.spokes.protocols import (
    ChannelMessage,
    OrderReference,
    WebhookEnvelope,
    load_channel_spokes,
)
from entrepot.store.receipts import claim_receipts
from entrepot.store.tables import DeadLetter, Order, Receipt
from tests.harness import (
    ErpSim,
    Hub,
    hub_settings,
    order_body,
    running_hub,
    wait_until,
    webhook_headers,
)

CANCELLED = {
    "updated_at": "2025-03-03T10:00:00-08:00",
    "cancelled_at": "2025-03-03T10:00:00-08:00",
    "cancel_reason": "customer",
}


def refund_body(order_id: int | None, amount: str = "29.00") -> dict[str, object]:
    body: dict[str, object] = {
        "id": 77001,
        "note": "damaged",
        "refund_line_items": [{"line_item_id": 1, "quantity": 1}],
        "transactions": [
            {"kind": "refund", "status": "success", "amount": amount, "currency": "USD"}
        ],
    }
    if order_id is not None:
        body["order_id"] = order_id
    return body


async def test_same_second_change_applied(tmp_path: Path, erp: ErpSim) -> None:
    first = order_body(9601)
    changed = order_body(9601)
    changed["line_items"][0]["quantity"] = 30
    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        await hub.post_webhook(first, webhook_id="w-1")
        await hub.wait_drained()
        await hub.post_webhook(changed, topic="orders/updated", webhook_id="w-2")
        await hub.wait_drained()
        view = await hub.order("9601")

    [posted] = erp.orders()
    assert posted["lines"][0]["quantity"] == 30
    assert posted["writeCount"] == 2
    assert "same-second version applied" in [step["event"] for step in view["history"]]


async def test_same_second_repeat_ignored(tmp_path: Path, erp: ErpSim) -> None:
    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        await hub.post_webhook(order_body(9602), webhook_id="w-1")
        await hub.wait_drained()
        await hub.post_webhook(order_body(9602), topic="orders/updated", webhook_id="w-2")
        await hub.wait_drained()
        view = await hub.order("9602")

    assert [r["status"] for r in view["receipts"]] == ["processed", "ignored"]
    assert "already applied" in view["receipts"][1]["outcome"]
    assert erp.orders()[0]["writeCount"] == 1


async def test_retried_cancellation_reaches_erp(tmp_path: Path, erp: ErpSim) -> None:
    settings = hub_settings(tmp_path, erp.url, max_attempts=2)
    async with running_hub(settings) as hub:
        await hub.post_webhook(order_body(9603), webhook_id="w-create")
        await hub.wait_drained()
        erp.fault(kind="unavailable", seconds=60)
        await hub.post_webhook(
            order_body(9603, **CANCELLED), topic="orders/cancelled", webhook_id="w-cancel"
        )
        await hub.wait_drained()
        [dead_letter] = (await hub.client.get("/api/dead-letters")).json()

        erp.admin.delete("/_sim/faults").raise_for_status()
        await hub.client.post(f"/api/dead-letters/{dead_letter['id']}/retry", json={"by": "ops"})
        await hub.wait_drained()
        view = await hub.order("9603")

    [posted] = erp.orders()
    assert posted["status"] == "cancelled"
    assert view["state"] == "cancelled"
    assert [d["status"] for d in view["deliveries"]] == ["done", "dead", "done"]


async def test_refund_before_order_kept(tmp_path: Path, erp: ErpSim) -> None:
    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        refund = await hub.post_webhook(
            refund_body(9604), topic="refunds/create", webhook_id="w-refund"
        )
        await hub.wait_drained()
        early = await hub.order("9604")
        await hub.post_webhook(order_body(9604), webhook_id="w-create")
        await hub.wait_drained()
        view = await hub.order("9604")

    assert early["state"] == "received"
    assert view["state"] == "accepted"
    assert view["correlation_id"] == refund.json()["correlation_id"]
    events = [step["event"] for step in view["history"]]
    assert events[:2] == ["received", "refund recorded"]
    assert "refund 77001 of 29.00 USD" in view["history"][1]["detail"]


async def test_refund_without_order_rejected_alone(tmp_path: Path, erp: ErpSim) -> None:
    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        await hub.post_webhook(refund_body(None), topic="refunds/create", webhook_id="w-r")
        await hub.wait_drained()
        dead_letters = (await hub.client.get("/api/dead-letters")).json()
        orders = (await hub.client.get("/api/orders")).json()

    assert [d["reason"] for d in dead_letters] == ["order_id: missing"]
    assert orders == []


async def test_bad_refund_leaves_order_alone(tmp_path: Path, erp: ErpSim) -> None:
    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        await hub.post_webhook(order_body(9605), webhook_id="w-create")
        await hub.wait_drained()
        await hub.post_webhook(
            refund_body(9605, amount="lots"), topic="refunds/create", webhook_id="w-refund"
        )
        await hub.wait_drained()
        view = await hub.order("9605")

    assert view["state"] == "accepted"
    assert view["last_error"] is None
    assert view["history"][-1]["event"] == "refunds/create rejected"
    assert "transactions[0].amount" in view["history"][-1]["detail"]


async def test_missing_topic_rejected_unstored(tmp_path: Path) -> None:
    body = json.dumps(order_body(9606)).encode()
    headers = webhook_headers(body, webhook_id="w-1")
    del headers["X-Shopify-Topic"]
    async with running_hub(hub_settings(tmp_path, "http://127.0.0.1:9"), workers=False) as hub:
        response = await hub.client.post("/webhooks/shopify", content=body, headers=headers)
        with hub.runtime.database.read() as session:
            stored = session.scalar(select(func.count()).select_from(Receipt))

    assert response.status_code == 400
    assert response.json() == {"error": "missing X-Shopify-Topic header"}
    assert stored == 0


async def test_taken_over_receipt_counted_once(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, "http://127.0.0.1:9")
    invalid = order_body(9607)
    del invalid["line_items"][0]["sku"]
    async with running_hub(settings, workers=False) as hub:
        await hub.post_webhook(invalid, webhook_id="w-1")
        database = hub.runtime.database
        [slow] = database.write(lambda s: claim_receipts(s, "worker-a", 0.05, 1))
        await asyncio.sleep(0.1)
        [fast] = database.write(lambda s: claim_receipts(s, "worker-b", 30, 1))
        processor = IntakeProcessor(database, load_channel_spokes(settings), settings.routing)

        finished = processor.process(fast)
        late = processor.process(slow)
        with database.read() as session:
            dead_letters = session.scalar(select(func.count()).select_from(DeadLetter))
            order = session.scalars(select(Order)).one()

    assert finished.status == "failed"
    assert late.status == "lost"
    assert dead_letters == 1
    assert order.state == "rejected"


# Valid JSON nested far deeper than Python's recursion limit lets json parse.
DEEP_BODY = b'{"a":' * 200_000 + b"1" + b"}" * 200_000


async def test_deep_body_fails_beside_good_order(tmp_path: Path, erp: ErpSim) -> None:
    async with running_hub(hub_settings(tmp_path, erp.url), workers=False) as hub:
        deep = await hub.post_webhook(DEEP_BODY, webhook_id="w-deep")
        await hub.post_webhook(order_body(9608), webhook_id="w-good")
        # Both receipts wait before the workers start, so one claim takes both.
        stopping = asyncio.Event()
        hub.runtime.build_workers()
        workers = asyncio.create_task(hub.runtime.run_workers(stopping))
        try:
            await hub.wait_drained()
        finally:
            stopping.set()
            await workers
        with hub.runtime.database.read() as session:
            receipts = session.scalars(select(Receipt).order_by(Receipt.id)).all()
            dead_letters = session.scalars(select(DeadLetter)).all()

    assert deep.status_code == 200
    assert [(r.webhook_id, r.status) for r in receipts] == [
        ("w-deep", "failed"),
        ("w-good", "processed"),
    ]
    assert [r.attempts for r in receipts] == [1, 1]
    assert receipts[0].error == "body: invalid JSON: nested too deeply to parse"
    assert [d.reason for d in dead_letters] == [receipts[0].error]
    assert dead_letters[0].receipt_id == receipts[0].id
    assert [order["otherRefNum"] for order in erp.orders()] == ["#9608"]


class BrokenSpoke:
    """A channel spoke whose every method fails the way a bug would."""

    def verify(self, headers: Mapping[str, str], body: bytes) -> WebhookEnvelope:
        raise AssertionError("not called by intake")

    def interpret(self, topic: str, account: str, body: bytes) -> ChannelMessage:
        raise RuntimeError("interpret broke")

    def order_reference(self, topic: str, body: bytes) -> OrderReference | None:
        raise RuntimeError("order_reference broke")


async def test_spoke_crash_recorded_as_failure(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, "http://127.0.0.1:9")
    async with running_hub(settings, workers=False) as hub:
        await hub.post_webhook(order_body(9609), webhook_id="w-1")
        database = hub.runtime.database
        [claimed] = database.write(lambda s: claim_receipts(s, "worker-a", 30, 1))
        processor = IntakeProcessor(database, {"shopify": BrokenSpoke()}, settings.routing)

        result = processor.process(claimed)
        with database.read() as session:
            receipt = session.get(Receipt, claimed.id)
            [dead_letter] = session.scalars(select(DeadLetter)).all()

    assert result.status == "failed"
    assert receipt is not None
    assert receipt.status == "failed"
    assert receipt.lease_owner is None
    assert receipt.error == "mapping failed: RuntimeError('interpret broke')"
    assert dead_letter.reason == receipt.error
    assert dead_letter.stage == "intake"
    assert dead_letter.order_id is None


class GarbageSpoke(BrokenSpoke):
    """A channel spoke that returns something that is not a channel message."""

    def interpret(self, topic: str, account: str, body: bytes) -> ChannelMessage:
        return cast(ChannelMessage, object())


async def test_unexpected_error_recorded_as_failure(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, "http://127.0.0.1:9")
    async with running_hub(settings, workers=False) as hub:
        await hub.post_webhook(order_body(9613), webhook_id="w-1")
        database = hub.runtime.database
        [claimed] = database.write(lambda s: claim_receipts(s, "worker-a", 30, 1))
        processor = IntakeProcessor(database, {"shopify": GarbageSpoke()}, settings.routing)

        result = processor.process(claimed)
        with database.read() as session:
            receipt = session.get(Receipt, claimed.id)
            [dead_letter] = session.scalars(select(DeadLetter)).all()

    expected = "processing failed: AttributeError(\"'object' object has no attribute 'kind'\")"
    assert result.status == "failed"
    assert receipt is not None
    assert receipt.status == "failed"
    assert receipt.outcome == "processing failed"
    assert receipt.error == expected
    assert dead_letter.reason == expected
    assert dead_letter.error_code == "internal_error"
    assert dead_letter.receipt_id == claimed.id


class CrashingProcessor(IntakeProcessor):
    """A processor that raises for the receipts of the given webhook ids."""

    def __init__(self, processor: IntakeProcessor, crash_on: set[str]) -> None:
        self._inner = processor
        self._crash_on = crash_on

    def process(self, receipt: Receipt) -> IntakeResult:
        if receipt.webhook_id in self._crash_on:
            raise RuntimeError("the store went away")
        return self._inner.process(receipt)


async def test_intake_worker_survives_crashed_receipt(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, "http://127.0.0.1:9")
    async with running_hub(settings, workers=False) as hub:
        for number in (9610, 9611, 9612):
            await hub.post_webhook(order_body(number), webhook_id=f"w-{number}")
        database = hub.runtime.database
        processor = IntakeProcessor(database, hub.runtime.channels, settings.routing)
        queued: list[str] = []
        worker = IntakeWorker(
            database,
            CrashingProcessor(processor, {"w-9611"}),
            owner="worker-a",
            lease_seconds=30,
            poll_interval=0.05,
            batch_size=10,
            on_queued=queued.append,
        )
        stopping = asyncio.Event()
        running = asyncio.create_task(worker.run(stopping))
        try:
            await wait_until(lambda: _settled(hub, 2), 10, "two receipts processed")
        finally:
            stopping.set()
            await running
        with database.read() as session:
            statuses = dict(session.execute(select(Receipt.webhook_id, Receipt.status)).all())

    assert statuses == {"w-9610": "processed", "w-9611": "processing", "w-9612": "processed"}
    assert queued == ["erp", "erp"]


async def _settled(hub: Hub, count: int) -> bool:
    with hub.runtime.database.read() as session:
        processed = session.scalar(
            select(func.count()).select_from(Receipt).where(Receipt.status == "processed")
        )
    return processed == count
