"""Cancellations before and after an order reaches the ERP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.harness import ErpSim, hub_settings, order_body, running_hub

CANCELLED = {
    "updated_at": "2025-03-03T10:00:00-08:00",
    "cancelled_at": "2025-03-03T10:00:00-08:00",
    "cancel_reason": "customer",
}


async def test_cancel_after_posting_cancels_in_erp(tmp_path: Path, erp: ErpSim) -> None:
    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        await hub.post_webhook(order_body(9301), webhook_id="w-create")
        await hub.wait_drained()
        await hub.post_webhook(
            order_body(9301, **CANCELLED), topic="orders/cancelled", webhook_id="w-cancel"
        )
        await hub.wait_drained()
        view = await hub.order("9301")

    assert view["state"] == "cancelled"
    [posted] = erp.orders()
    assert posted["status"] == "cancelled"
    assert [d["action"] for d in view["deliveries"]] == ["upsert", "cancel"]
    assert [d["status"] for d in view["deliveries"]] == ["done", "done"]


async def test_cancel_before_posting_sends_nothing(tmp_path: Path, erp: ErpSim) -> None:
    # The ERP is closed for maintenance, so the order waits in the queue.
    opens = datetime.now(UTC) - timedelta(seconds=1)
    window = f"{opens.isoformat()}/{(opens + timedelta(minutes=5)).isoformat()}"
    settings = hub_settings(tmp_path, erp.url, maintenance_windows=[window])
    async with running_hub(settings) as hub:
        await hub.post_webhook(order_body(9302), webhook_id="w-create")
        await hub.post_webhook(
            order_body(9302, **CANCELLED), topic="orders/cancelled", webhook_id="w-cancel"
        )
        await hub.wait_drained()
        view = await hub.order("9302")

    assert view["state"] == "cancelled"
    assert view["erp_id"] is None
    assert [d["status"] for d in view["deliveries"]] == ["nothing_to_do"]
    assert view["deliveries"][0]["outcome"] == "order cancelled before it was posted"
    assert erp.requests() == []


async def test_update_after_cancel_refused(tmp_path: Path, erp: ErpSim) -> None:
    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        await hub.post_webhook(order_body(9303), webhook_id="w-create")
        await hub.wait_drained()
        await hub.post_webhook(
            order_body(9303, **CANCELLED), topic="orders/cancelled", webhook_id="w-cancel"
        )
        await hub.wait_drained()
        later = order_body(9303, updated_at="2025-03-03T11:00:00-08:00", note="too late")
        await hub.post_webhook(later, topic="orders/updated", webhook_id="w-late")
        await hub.wait_drained()
        view = await hub.order("9303")

    assert view["state"] == "cancelled"
    refused = [step for step in view["history"] if step["refused"]]
    assert len(refused) == 1
    assert refused[0]["detail"].startswith("cancelled cannot become validated")
    assert erp.orders()[0]["writeCount"] == 1
