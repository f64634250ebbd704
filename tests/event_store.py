"""A store with outbox events of a few orders, and a subscriber of the database bus
to run until its deliveries are settled, for the tests of replay and dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from entrepot.config import load_settings
from entrepot.events.bus import Handler, Subscription
from entrepot.events.database_bus import DatabaseBus
from entrepot.events.envelope import Event, order_subject
from entrepot.events.inbox import InboxOutcome, apply_once
from entrepot.events.outbox import append
from entrepot.store.database import Database
from entrepot.store.migrate import upgrade_to_head
from entrepot.store.tables import EventDelivery, OutboxEvent
from tests.harness import wait_until

ORDER_TYPES = ("order.received", "order.validated", "order.accepted")
# Order N's three events are created at FIRST_EVENT_AT + (N mod 100) minutes + 0, 1, 2 s.
FIRST_EVENT_AT = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def store_in(data_dir: Path) -> Database:
    """Open (and create) the SQLite store that ``--data-dir data_dir`` names."""
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = load_settings(store={"data_dir": data_dir})
    database = Database(settings.store.database_url())
    upgrade_to_head(database)
    return database


def order_subject_of(number: int) -> str:
    return order_subject("shopify", "acme.myshopify.com", str(number))


def write_order_events(database: Database, numbers: tuple[int, ...]) -> list[Event]:
    """Write the three lifecycle events of each order to the outbox, with their
    creation times set as FIRST_EVENT_AT says, and correlation id ``corr-N``."""
    events = [
        Event(
            type=event_type,
            subject=order_subject_of(number),
            data={"order_number": number, "state": event_type.split(".")[1]},
            correlationid=f"corr-{number}",
        )
        for number in numbers
        for event_type in ORDER_TYPES
    ]

    def write(session: Session) -> None:
        for event in events:
            append(session, event)
            number = int(event.data["order_number"])
            step = ORDER_TYPES.index(event.type)
            created = FIRST_EVENT_AT + timedelta(minutes=number % 100, seconds=step)
            session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.event_id == event.id)
                .values(created_at=created)
            )

    database.write(write)
    return events


def inbox_handler(
    database: Database, name: str, outcomes: list[tuple[str, InboxOutcome]]
) -> Handler:
    """Return a subscriber that applies each event once through its inbox and
    records (event id, outcome)."""

    async def handle(event: Event) -> None:
        outcome = await asyncio.to_thread(
            database.write, lambda session: apply_once(session, name, event, lambda _s: None)
        )
        outcomes.append((event.id, outcome))

    return handle


async def drain(database: Database, subscription: Subscription, handler: Handler) -> None:
    """Run the subscriber until none of its deliveries is pending or in flight."""
    bus = DatabaseBus(database, owner="test", poll_interval=0.02)
    stop = asyncio.Event()
    task = asyncio.create_task(bus.run_subscriber(subscription, handler, stop.is_set))
    try:
        await wait_until(_settled(database, subscription.name), 30, "deliveries settled")
    finally:
        stop.set()
        await task


def _settled(database: Database, subscriber: str) -> Callable[[], Awaitable[bool]]:
    async def settled() -> bool:
        with database.read() as session:
            open_count = len(
                list(
                    session.scalars(
                        select(EventDelivery.id).where(
                            EventDelivery.subscriber == subscriber,
                            EventDelivery.status.in_(["pending", "in_flight"]),
                        )
                    )
                )
            )
        return open_count == 0

    return settled


async def publish(
    database: Database, subscription: Subscription, events: list[Event], *, register: bool = True
) -> None:
    """Register ``subscription`` when ``register`` is true, then fan ``events`` out to
    the registered subscribers, as the relay would."""
    bus = DatabaseBus(database, owner="test")
    if register:
        await bus.register(subscription)
    await bus.publish(events)
