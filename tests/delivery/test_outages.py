"""A target that throttles, fails, closes for maintenance or times out loses nothing."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from entrepot.store.tables import Delivery
from tests.harness import ErpSim, hub_settings, order_body, running_hub


async def test_throttling_and_outage_drain(tmp_path: Path, erp: ErpSim) -> None:
    erp.fault(kind="throttle", count=6, retry_after=1)
    erp.fault(kind="unavailable", seconds=2, retry_after=1)
    numbers = range(9001, 9021)
    async with running_hub(hub_settings(tmp_path, erp.url, max_attempts=8)) as hub:
        for number in numbers:
            await hub.post_webhook(order_body(number), webhook_id=f"w-{number}")
        await hub.wait_drained(within=60)
        summary = await hub.summary()

    posted = erp.orders()
    assert summary["orders"] == {"accepted": 20}
    assert summary["open_dead_letters"] == 0
    assert sorted(order["otherRefNum"] for order in posted) == [f"#{n}" for n in numbers]
    assert {order["writeCount"] for order in posted} == {1}
    statuses = erp.stats()["by_status"]
    assert statuses.get("429", 0) >= 6
    assert statuses.get("503", 0) >= 1


async def test_throttling_uses_no_attempt(tmp_path: Path, erp: ErpSim) -> None:
    erp.fault(kind="throttle", count=3, retry_after=0)
    settings = hub_settings(tmp_path, erp.url, max_concurrency=1, max_attempts=2)
    async with running_hub(settings) as hub:
        await hub.post_webhook(order_body(9031), webhook_id="w-9031")
        await hub.wait_drained()
        view = await hub.order("9031")

    assert view["state"] == "accepted"
    # Three 429 responses and one success, with a budget of two attempts.
    assert view["deliveries"][0]["attempts"] == 1
    assert erp.stats()["by_status"]["429"] == 3


async def test_capped_throttle_pause_logged(
    tmp_path: Path, erp: ErpSim, caplog: pytest.LogCaptureFixture
) -> None:
    erp.fault(kind="throttle", count=1, retry_after=1)
    caplog.set_level(logging.WARNING, logger="entrepot.delivery.recording")
    async with running_hub(hub_settings(tmp_path, erp.url, backoff_max_seconds=0.5)) as hub:
        await hub.post_webhook(order_body(9032), webhook_id="w-9032")
        await hub.wait_drained()

    capped = [r.getMessage() for r in caplog.records if "asked to wait" in r.getMessage()]
    assert capped == ["Target erp asked to wait 1.0 s; waiting 0.5 s, the longest backoff."]


async def test_maintenance_window_sends_nothing(tmp_path: Path, erp: ErpSim) -> None:
    opens = datetime.now(UTC) + timedelta(seconds=2)
    closes = opens + timedelta(seconds=3)
    window = f"{opens.isoformat()}/{closes.isoformat()}"
    settings = hub_settings(tmp_path, erp.url, maintenance_windows=[window], requests_per_second=5)
    async with running_hub(settings) as hub:
        for number in range(9041, 9066):
            await hub.post_webhook(order_body(number), webhook_id=f"w-{number}")
        await hub.wait_drained(within=60)
        with hub.runtime.database.read() as session:
            attempts = set(session.scalars(select(Delivery.attempts)))

    started = [datetime.fromtimestamp(r["started_at"], UTC) for r in erp.requests()]
    inside = [moment for moment in started if opens <= moment < closes]
    assert inside == []
    assert any(moment < opens for moment in started)
    assert any(moment >= closes for moment in started)
    assert len(erp.orders()) == 25
    assert attempts == {1}


async def test_timeout_after_commit_not_written_twice(tmp_path: Path, erp: ErpSim) -> None:
    settings = hub_settings(tmp_path, erp.url, timeout_seconds=1)
    async with running_hub(settings) as hub:
        # The first order writes the customer, so the fault falls on the order write.
        await hub.post_webhook(order_body(9070), webhook_id="w-9070")
        await hub.wait_drained()
        erp.fault(kind="timeout_after_commit", count=1, hang_seconds=3)
        await hub.post_webhook(order_body(9071), webhook_id="w-9071")
        await hub.wait_drained(within=30)
        view = await hub.order("9071")

    posted = {order["otherRefNum"]: order for order in erp.orders()}
    assert posted["#9071"]["writeCount"] == 1
    assert view["state"] == "accepted"
    assert view["deliveries"][0]["attempts"] == 2
    assert "found already there" in view["deliveries"][0]["outcome"]
    # The simulator logs a request when it ends, and the timed-out PUT hangs for 3 s.
    await asyncio.sleep(3.5)
    logged = sorted(
        (r for r in erp.requests() if r["path"].endswith(":9071")), key=lambda r: r["started_at"]
    )
    assert [r["method"] for r in logged] == ["PUT", "GET"]


async def test_every_request_within_rate_budget(tmp_path: Path, erp: ErpSim) -> None:
    # Each order of a new customer costs two requests: the customer and the order.
    settings = hub_settings(tmp_path, erp.url, requests_per_second=5, max_concurrency=4)
    async with running_hub(settings) as hub:
        for number in range(9081, 9087):
            body = order_body(number)
            body["customer"]["id"] = number
            await hub.post_webhook(body, webhook_id=f"w-{number}")
        await hub.wait_drained(within=30)

    started = sorted(r["started_at"] for r in erp.requests())
    assert len(started) == 12
    # A bucket of 2 at 5 per second: any n requests span at least (n - 2) / 5 s,
    # less 50 ms of scheduling slack.
    for first in range(len(started)):
        for last in range(first + 2, len(started)):
            count = last - first + 1
            assert started[last] - started[first] >= (count - 2) / 5 - 0.05
