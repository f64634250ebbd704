"""Events from the hub's changes, through the outbox relay and the database bus, to an
idempotent subscriber, on the embedded store."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, delete, select, update
from sqlalchemy.orm import Session

from entrepot.events.bus import Subscription
from entrepot.events.database_bus import DatabaseBus
from entrepot.events.envelope import Event
from entrepot.events.inbox import InboxOutcome, apply_once
from entrepot.events.outbox import append
from entrepot.events.relay import OutboxRelay
from entrepot.spokes.failures import PermanentFailure, RetryLater
from entrepot.store.database import Database
from entrepot.store.migrate import upgrade_to_head
from entrepot.store.tables import EventDeadLetter, EventDelivery, OutboxEvent
from tests.harness import ErpSim, hub_settings, order_body, running_hub, wait_until

# A read model that the subscriber of these tests keeps: one row per subject.
VIEW = Table(
    "test_order_view",
    MetaData(),
    Column("subject", String(400), primary_key=True),
    Column("state", String(40)),
    Column("version", String(80)),
    Column("applied", Integer),
)


def _database(path: Path) -> Database:
    database = Database(f"sqlite:///{path}")
    upgrade_to_head(database)
    VIEW.create(database.engine, checkfirst=True)
    return database


def _project(event: Event) -> Callable[[Session], None]:
    def effect(session: Session) -> None:
        row = session.execute(select(VIEW).where(VIEW.c.subject == event.subject)).first()
        state = str(event.data.get("state") or event.type)
        if row is None:
            session.execute(
                VIEW.insert().values(
                    subject=event.subject, state=state, version=event.sourceversion, applied=1
                )
            )
        else:
            session.execute(
                update(VIEW)
                .where(VIEW.c.subject == event.subject)
                .values(state=state, version=event.sourceversion, applied=row.applied + 1)
            )

    return effect


def _subscriber(database: Database, name: str, outcomes: list[InboxOutcome]):  # type: ignore[no-untyped-def]
    async def handle(event: Event) -> None:
        outcome = await asyncio.to_thread(
            database.write, lambda session: apply_once(session, name, event, _project(event))
        )
        outcomes.append(outcome)

    return handle


async def _run_until(bus: DatabaseBus, subscription: Subscription, handler, done) -> None:  # type: ignore[no-untyped-def]
    stop = asyncio.Event()
    task = asyncio.create_task(bus.run_subscriber(subscription, handler, stop.is_set))
    try:
        await wait_until(done, 30, "subscriber caught up")
    finally:
        stop.set()
        await task


async def test_hub_changes_reach_the_subscriber_once(tmp_path: Path, erp: ErpSim) -> None:
    settings = hub_settings(tmp_path, erp.url)
    async with running_hub(settings) as hub:
        for order_id in (7301, 7302):
            await hub.post_webhook(order_body(order_id))
        await hub.wait_drained()
        database = hub.runtime.database
    VIEW.create(database.engine, checkfirst=True)
    bus = DatabaseBus(database, owner="test")
    subscription = Subscription(
        "view", frozenset({"order.received", "order.validated", "order.accepted"})
    )
    await bus.register(subscription)
    relay = OutboxRelay(database, bus, poll_interval=0.05)
    outcomes: list[InboxOutcome] = []
    # The hub's own relay published the events while it ran, when "view" did not
    # exist yet; this relay publishes them again.
    database.write(lambda s: s.execute(update(OutboxEvent).values(published_at=None)))

    published = await relay.relay_once()
    await _run_until(
        bus, subscription, _subscriber(database, "view", outcomes), lambda: _settled(outcomes, 6)
    )
    # The relay crashed after publishing, before marking: everything goes again.
    database.write(lambda s: s.execute(update(OutboxEvent).values(published_at=None)))
    database.write(lambda s: s.execute(delete(EventDelivery)))
    again = await relay.relay_once()
    await _run_until(
        bus, subscription, _subscriber(database, "view", outcomes), lambda: _settled(outcomes, 12)
    )

    with database.read() as session:
        types = [
            (row.subject.rsplit("/", 1)[-1], row.subject_seq, row.type)
            for row in session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))
        ]
        view = {
            row.subject.rsplit("/", 1)[-1]: (row.state, row.applied)
            for row in session.execute(select(VIEW))
        }
    assert published == again == 6
    assert [entry for entry in types if entry[0] == "7301"] == [
        ("7301", 1, "order.received"),
        ("7301", 2, "order.validated"),
        ("7301", 3, "order.accepted"),
    ]
    assert outcomes.count(InboxOutcome.APPLIED) == 6
    assert outcomes.count(InboxOutcome.DUPLICATE) == 6
    assert view == {"7301": ("accepted", 3), "7302": ("accepted", 3)}


async def _settled(outcomes: list[InboxOutcome], count: int) -> bool:
    return len(outcomes) >= count


def _event(subject: str, version: int, **data: object) -> Event:
    return Event(
        type="inventory.changed",
        subject=subject,
        data={"state": f"v{version}", **data},
        sourceversion=f"2026-12-04T10:00:{version:02d}+00:00",
    )


async def test_storm_of_repeats_out_of_order_ends_at_newest(tmp_path: Path) -> None:
    """Each event three times, shuffled: every subject ends at its newest version."""
    database = _database(tmp_path / "store.db")
    bus = DatabaseBus(database, owner="test")
    subscription = Subscription("view", frozenset({"inventory.changed"}))
    await bus.register(subscription)
    events = [_event(f"inventory/erp/WH/SKU-{s}", v) for s in range(5) for v in range(1, 7)]
    storm = events * 3
    random.Random(7).shuffle(storm)
    outcomes: list[InboxOutcome] = []

    def write_storm(session: Session) -> None:
        seen: set[str] = set()
        for event in storm:
            if event.id not in seen:
                append(session, event)
                seen.add(event.id)

    database.write(write_storm)
    for start in range(0, len(storm), 10):
        await bus.publish(storm[start : start + 10])
    await _run_until(
        bus,
        subscription,
        _subscriber(database, "view", outcomes),
        lambda: _settled(outcomes, len(events)),
    )

    with database.read() as session:
        view = {row.subject: row.version for row in session.execute(select(VIEW))}
    assert len(outcomes) == 30
    assert view == {f"inventory/erp/WH/SKU-{s}": "2026-12-04T10:00:06+00:00" for s in range(5)}
    assert outcomes.count(InboxOutcome.STALE) >= 1


async def test_poison_event_is_dead_lettered_without_holding_others(tmp_path: Path) -> None:
    database = _database(tmp_path / "store.db")
    bus = DatabaseBus(database, owner="test")
    subscription = Subscription(
        "view", frozenset({"inventory.changed"}), max_deliveries=3, redeliver_after_seconds=0.01
    )
    await bus.register(subscription)
    poison = _event("inventory/erp/WH/POISON", 1, poison=True)
    flaky = _event("inventory/erp/WH/FLAKY", 1)
    events = [poison, flaky] + [_event(f"inventory/erp/WH/OK-{n}", 1) for n in range(4)]
    events.append(_event("inventory/erp/WH/POISON", 2))
    database.write(lambda session: [append(session, event) for event in events])
    await bus.publish(events)
    handled: list[str] = []
    tries: dict[str, int] = {}

    async def handle(event: Event) -> None:
        tries[event.id] = tries.get(event.id, 0) + 1
        if event.data.get("poison"):
            raise PermanentFailure("the event names an item that does not exist")
        if event.id == flaky.id and tries[event.id] < 3:
            raise RetryLater("the read model is busy")
        handled.append(event.subject)

    await _run_until(bus, subscription, handle, lambda: _count(handled, 6))

    with database.read() as session:
        dead = list(session.scalars(select(EventDeadLetter)))
    assert [(letter.event_id, letter.subscriber) for letter in dead] == [(poison.id, "view")]
    assert "refused after 1 deliveries" in dead[0].reason
    assert tries[flaky.id] == 3
    assert sorted(handled) == sorted(
        ["inventory/erp/WH/FLAKY", "inventory/erp/WH/POISON"]
        + [f"inventory/erp/WH/OK-{n}" for n in range(4)]
    )


async def _count(items: list[str], count: int) -> bool:
    return len(items) >= count
