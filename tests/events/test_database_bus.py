"""Limits of the database bus that the contract suite does not reach."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from entrepot.events.bus import MAX_REDELIVER_DELAY_SECONDS, Subscription
from entrepot.events.database_bus import DatabaseBus
from entrepot.events.envelope import Event
from entrepot.spokes.failures import RetryLater
from entrepot.store.tables import EventDelivery
from entrepot.store.types import utc_now
from tests.event_store import ORDER_TYPES, publish, store_in, write_order_events

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
