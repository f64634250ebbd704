"""Limits of the database bus that the contract suite does not reach."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from entrepot.config import EventSettings, EventSubscriberSettings, redact_url
from entrepot.events import workers
from entrepot.events.bus import MAX_REDELIVER_DELAY_SECONDS, Subscription
from entrepot.events.database_bus import (
    DatabaseBus,
    claim_events,
    record_outcome,
    release,
    renew_leases,
)
from entrepot.events.envelope import Event
from entrepot.events.nats_bus import servers_of
from entrepot.events.replay import EventFilter, ReplayCounts, matching_events, replay_events
from entrepot.events.resend import put_back
from entrepot.events.subscriptions import unsubscribe
from entrepot.spokes.failures import PermanentFailure, RetryLater
from entrepot.store.tables import EventDeadLetter, EventDelivery, OutboxEvent
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


@pytest.mark.parametrize("first_call", ["succeeds", "fails its last attempt"])
async def test_replay_during_flight_sends_again(tmp_path: Path, first_call: str) -> None:
    """An event replayed while its delivery is in flight is handed to the subscriber
    again once that delivery ends, with no attempts used, whatever its outcome."""
    database = store_in(tmp_path)
    events = write_order_events(database, (1001,))
    feed = Subscription("feed", FEED.types, max_deliveries=1, redeliver_after_seconds=0.01)
    await publish(database, feed, events[:1])
    bus = DatabaseBus(database, owner="test", poll_interval=0.05)
    calls: list[str] = []
    in_call, go_on = asyncio.Event(), asyncio.Event()
    stopping = False

    async def handle(event: Event) -> None:
        calls.append(event.id)
        if len(calls) == 1:
            in_call.set()
            await go_on.wait()
            if first_call != "succeeds":
                raise RetryLater("HTTP 503")

    task = asyncio.create_task(bus.run_subscriber(feed, handle, lambda: stopping))
    await asyncio.wait_for(in_call.wait(), 10)
    first = EventFilter(types=frozenset({events[0].type}))

    def replay_first(session: Session) -> ReplayCounts:
        chosen = matching_events(session, first)
        return replay_events(session, chosen, {"feed": feed.types}, by="test", resend=put_back)

    counts = await asyncio.to_thread(database.write, replay_first)
    go_on.set()
    for _ in range(200):
        if len(calls) == 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    stopping = True
    await asyncio.wait_for(task, 10)
    with database.read() as session:
        delivery = session.scalars(select(EventDelivery)).one()
        letters = session.scalars(select(EventDeadLetter)).all()

    assert (counts.in_flight, counts.reset) == (1, 0)
    assert calls == [events[0].id, events[0].id]
    assert (delivery.status, delivery.attempts, delivery.resend_requested) == ("done", 1, False)
    assert letters == []


async def test_abandoned_last_delivery_resent_when_asked(tmp_path: Path) -> None:
    """A delivery abandoned on its last attempt after a replay asked for it again is
    claimed afresh instead of dead-lettered."""
    database = store_in(tmp_path)
    events = write_order_events(database, (1001,))
    feed = Subscription("feed", FEED.types, max_deliveries=2)
    await publish(database, feed, events[:1])

    def abandon(session: Session) -> None:
        delivery = session.scalars(select(EventDelivery)).one()
        delivery.status, delivery.attempts, delivery.resend_requested = "in_flight", 2, True
        delivery.lease_owner, delivery.lease_expires_at = "dead", utc_now() - timedelta(seconds=1)

    database.write(abandon)
    claimed = database.write(lambda s: claim_events(s, feed, "test", 10))
    with database.read() as session:
        delivery = session.scalars(select(EventDelivery)).one()
        letters = session.scalars(select(EventDeadLetter)).all()

    assert [(item.event.id, item.attempts) for item in claimed] == [(events[0].id, 1)]
    assert (delivery.status, delivery.lease_owner, delivery.resend_requested) == (
        "in_flight",
        "test",
        False,
    )
    assert letters == []


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


async def test_unsubscribe_drops_resend_requests(tmp_path: Path) -> None:
    """Unsubscribing ends the requests to send again the deliveries still in flight,
    so they end as done instead of coming back for a subscriber that is gone."""
    database = store_in(tmp_path)
    events = write_order_events(database, (1001,))
    await publish(database, FEED, events)
    [held] = database.write(lambda s: claim_events(s, FEED, "test", 10))

    def request_resend(session: Session) -> None:
        session.get_one(EventDelivery, held.delivery_id).resend_requested = True

    database.write(request_resend)
    removed = database.write(lambda s: unsubscribe(s, "feed"))
    database.write(lambda s: record_outcome(s, FEED, held, None))
    with database.read() as session:
        delivery = session.get_one(EventDelivery, held.delivery_id)

    assert removed == 2
    assert delivery.resend_requested is False
    assert delivery.status == "done"


def _expire_leases(session: Session) -> None:
    for delivery in session.scalars(
        select(EventDelivery).where(EventDelivery.status == "in_flight")
    ):
        delivery.lease_expires_at = utc_now() - timedelta(seconds=1)


async def test_stale_claim_ignored_after_replay(tmp_path: Path) -> None:
    """A worker whose lease ran out records nothing over the claim that took its event
    over, even when a replay set the attempts back in between, so the next event of the
    subject waits for the new claim."""
    database = store_in(tmp_path)
    events = write_order_events(database, (1001,))
    await publish(database, FEED, events[:2])
    [paused] = database.write(lambda s: claim_events(s, FEED, "paused", 10))
    database.write(lambda s: put_back(s, "feed", s.scalars(select(OutboxEvent)).all()[:1]))
    database.write(_expire_leases)
    [live] = database.write(lambda s: claim_events(s, FEED, "live", 10))

    database.write(lambda s: record_outcome(s, FEED, paused, None))
    behind = database.write(lambda s: claim_events(s, FEED, "live", 10))
    with database.read() as session:
        delivery = session.get_one(EventDelivery, live.delivery_id)

    assert (paused.attempts, live.attempts) == (1, 1)
    assert live.event.id == paused.event.id
    assert (delivery.status, delivery.lease_owner) == ("in_flight", "live")
    assert behind == []


@pytest.mark.parametrize("ending", ["retry", "refusal", "stop"])
async def test_unsubscribed_during_flight_dropped(tmp_path: Path, ending: str) -> None:
    """A delivery whose subscriber is unsubscribed while it is in flight, and that then
    fails or is given back at a stop, is deleted instead of waiting with no worker to
    take it, and makes no dead letter."""
    database = store_in(tmp_path)
    events = write_order_events(database, (1001,))
    await publish(database, FEED, events[:1])
    [held] = database.write(lambda s: claim_events(s, FEED, "test", 10))
    database.write(lambda s: unsubscribe(s, "feed"))

    if ending == "stop":
        database.write(lambda s: release(s, [held]))
    else:
        failure = RetryLater("HTTP 503") if ending == "retry" else PermanentFailure("HTTP 400")
        database.write(lambda s: record_outcome(s, FEED, held, failure))
    with database.read() as session:
        deliveries = session.scalars(select(EventDelivery)).all()
        letters = session.scalars(select(EventDeadLetter)).all()

    assert deliveries == []
    assert letters == []


async def test_lease_run_out_not_renewed(tmp_path: Path) -> None:
    """A worker cannot renew a lease that has run out, since the subject's next event
    may have been claimed by then."""
    database = store_in(tmp_path)
    events = write_order_events(database, (1001,))
    await publish(database, FEED, events[:1])
    [held] = database.write(lambda s: claim_events(s, FEED, "paused", 10))
    database.write(_expire_leases)

    database.write(lambda s: renew_leases(s, [held], "paused", FEED))
    with database.read() as session:
        delivery = session.get_one(EventDelivery, held.delivery_id)

    assert delivery.lease_expires_at is not None
    assert delivery.lease_expires_at < utc_now()
