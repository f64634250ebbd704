"""Limits of the database bus that the contract suite does not reach."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from entrepot.config import EventSettings, EventSubscriberSettings, redact_url
from entrepot.events import workers
from entrepot.events.bus import MAX_REDELIVER_DELAY_SECONDS, Subscription
from entrepot.events.database_bus import DatabaseBus
from entrepot.events.envelope import Event
from entrepot.events.nats_bus import servers_of
from entrepot.spokes.failures import RetryLater
from entrepot.store.tables import EventDelivery
from entrepot.store.types import utc_now
from tests.event_store import ORDER_TYPES, publish, store_in, write_order_events
from tests.webhook_receiver import RECEIVER_SECRET, running_receiver

FEED = Subscription("feed", frozenset(ORDER_TYPES), redeliver_after_seconds=0.01)


async def test_huge_retry_after_capped(tmp_path: Path) -> None:
    """A subscriber asking for a retry in 10**12 s gets one within the cap, and the
    subscriber keeps running."""
    database = store_in(tmp_path)
    events = write_order_events(database, (1001,))
    await publish(database, FEED, events[:1])
    bus = DatabaseBus(database, owner="test", poll_interval=0.05)
    calls: list[str] = []
    called = asyncio.Event()
    stopping = False

    async def throttled(event: Event) -> None:
        calls.append(event.id)
        called.set()
        raise RetryLater("HTTP 429", retry_after=1e12)

    task = asyncio.create_task(bus.run_subscriber(FEED, throttled, lambda: stopping))
    await asyncio.wait_for(called.wait(), 10)
    await asyncio.sleep(0.3)
    stopping = True
    await asyncio.wait_for(task, 10)
    with database.read() as session:
        delivery = session.scalars(select(EventDelivery)).one()

    assert calls == [events[0].id]
    assert delivery.status == "pending"
    assert delivery.attempts == 1
    latest = utc_now() + timedelta(seconds=MAX_REDELIVER_DELAY_SECONDS)
    assert latest - timedelta(seconds=10) < delivery.next_attempt_at <= latest


async def test_stop_cuts_off_slow_subscriber(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscriber that never responds holds up a stop for the grace period only."""
    monkeypatch.setattr(workers, "STOP_GRACE_SECONDS", 0.5)
    database = store_in(tmp_path)
    with running_receiver(delay=30) as receiver:
        subscriber = EventSubscriberSettings.model_validate(
            {
                "url": receiver.url,
                "secret": RECEIVER_SECRET,
                "types": list(ORDER_TYPES),
                "timeout_seconds": 60,
            }
        )
        settings = EventSettings(relay_interval_seconds=0.05, subscribers={"slow": subscriber})
        event_workers = workers.EventWorkers(settings, database, owner="t", poll_interval=0.05)
        stopping = asyncio.Event()
        task = asyncio.create_task(event_workers.run(stopping))
        write_order_events(database, (1001,))
        for _ in range(200):
            if receiver.requests:
                break
            await asyncio.sleep(0.05)
        stopping.set()
        started = time.monotonic()
        await asyncio.wait_for(task, 10)
        took = time.monotonic() - started
        with database.read() as session:
            statuses = set(session.scalars(select(EventDelivery.status)))

    assert len(receiver.requests) == 1
    assert took < 3
    assert statuses <= {"pending", "in_flight"}


def test_bus_url_shown_without_password() -> None:
    url = "nats://user:s3cret@127.0.0.1:4222,nats://127.0.0.1:4223"

    assert redact_url(url) == "nats://***@127.0.0.1:4222,nats://127.0.0.1:4223"
    assert servers_of(url) == ["nats://user:s3cret@127.0.0.1:4222", "nats://127.0.0.1:4223"]
