"""One process of the events benchmark: an event worker or a producer.

``python -m bench.events_worker worker`` runs a subscriber of the bus, and the outbox
relay with ``--relay``, until SIGTERM. ``produce`` appends the events to the outbox,
one transaction per event. ``celery-produce`` sends the same events as Celery tasks.
Both producers print one JSON line: when they started and finished (``time.time()``)
and the CPU seconds they and their database connection used meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from bench.common import process_cpu_seconds
from entrepot.events.bus import Subscription
from entrepot.events.database_bus import DatabaseBus
from entrepot.events.envelope import EVENT_TYPES, Event, order_subject
from entrepot.events.inbox import InboxOutcome, apply_once
from entrepot.events.nats_bus import NatsBus
from entrepot.events.outbox import append
from entrepot.events.relay import OutboxRelay
from entrepot.store.database import Database
from entrepot.store.notify import EVENT_DELIVERIES, OUTBOX, NotificationListener

SUBSCRIBER = "bench-state"
STATE_TABLE = "bench_subject_state"
# The product's defaults: [events] relay_interval_seconds, and DatabaseBus polling.
RELAY_INTERVAL_SECONDS = 0.5
BUS_POLL_SECONDS = 0.2
# Every event of a subject carries the same source version, as the events of one
# order change do, so that no event is stale and every one must be applied.
SOURCE_VERSION = "2026-01-01T00:00:00+00:00"
ORDER_TYPES = sorted(t for t in EVENT_TYPES if t.startswith("order."))

CREATE_STATE_TABLE = text(
    f"CREATE TABLE {STATE_TABLE} (subject VARCHAR(400) PRIMARY KEY, "
    "applied INTEGER NOT NULL, last_event_id VARCHAR(64) NOT NULL)"
)
UPSERT_STATE = text(
    f"INSERT INTO {STATE_TABLE} (subject, applied, last_event_id) "
    "VALUES (:subject, 1, :event_id) ON CONFLICT (subject) DO UPDATE "
    f"SET applied = {STATE_TABLE}.applied + 1, last_event_id = excluded.last_event_id"
)


def build_events(count: int, subjects: int) -> list[Event]:
    """Build ``count`` order events spread round-robin over ``subjects`` orders."""
    events = []
    for number in range(count):
        order = number % subjects
        data: dict[str, Any] = {
            "channel": "shopify",
            "account": "bench",
            "channel_order_id": str(order),
            "order_number": f"#{order}",
            "state": "received",
            "order": {
                "currency": "EUR",
                "total": "93.50",
                "lines": [
                    {"sku": f"SKU-{line}", "quantity": line + 1, "price": "20.00"}
                    for line in range(3)
                ],
            },
        }
        events.append(
            Event(
                type=ORDER_TYPES[number // subjects % len(ORDER_TYPES)],
                subject=order_subject("shopify", "bench", str(order)),
                data=data,
                sourceversion=SOURCE_VERSION,
            )
        )
    return events


def apply_event(database: Database, event: Event) -> InboxOutcome:
    """Apply ``event`` once: an inbox entry and an upsert of its subject's row."""

    def effect(session: Session) -> None:
        session.execute(UPSERT_STATE, {"subject": event.subject, "event_id": event.id})

    return database.write(lambda session: apply_once(session, SUBSCRIBER, event, effect))


def backend_cpu_seconds(database: Database) -> float:
    """Return the CPU seconds of this process's PostgreSQL backend, or 0 on SQLite."""
    if not database.is_postgresql:
        return 0.0
    with database.read() as session:
        pid = session.scalar(text("SELECT pg_backend_pid()"))
    return process_cpu_seconds(int(pid))


async def run_worker(options: argparse.Namespace) -> None:
    database = Database(options.store)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    if options.bus == "nats":
        bus: DatabaseBus | NatsBus = NatsBus(options.nats_url)
    else:
        bus = DatabaseBus(database, owner=f"bench-{os.getpid()}", poll_interval=BUS_POLL_SECONDS)
    await bus.connect()
    subscription = Subscription(SUBSCRIBER, frozenset(EVENT_TYPES))
    if isinstance(bus, DatabaseBus):
        await bus.register(subscription)

    async def handle(event: Event) -> None:
        await asyncio.to_thread(apply_event, database, event)

    runs = [bus.run_subscriber(subscription, handle, stopping.is_set)]
    relay = OutboxRelay(database, bus, poll_interval=RELAY_INTERVAL_SECONDS)
    if options.relay:
        runs.append(relay.run(stopping))
    # As in `entrepot run`: on PostgreSQL the outbox trigger's NOTIFY wakes the relay,
    # and the event deliveries' trigger wakes the subscribers of the database bus.
    if database.is_postgresql:
        listener = NotificationListener(database.engine)
        listener.on(OUTBOX, lambda _payload: relay.wake.set())
        if isinstance(bus, DatabaseBus):
            listener.on(EVENT_DELIVERIES, lambda _payload: bus.wake())
        runs.append(listener.run(stopping))
    await asyncio.to_thread(Path(options.ready_file).touch)
    try:
        await asyncio.gather(*runs)
    finally:
        await bus.close()
        database.dispose()


def produce(options: argparse.Namespace) -> None:
    database = Database(options.store)
    events = build_events(options.events, options.subjects)
    backend_before = backend_cpu_seconds(database)
    cpu_before = time.process_time()
    started = time.time()
    for event in events:
        database.write(lambda session, event=event: append(session, event))
    finished = time.time()
    cpu = time.process_time() - cpu_before
    backend = backend_cpu_seconds(database) - backend_before
    report(started, finished, cpu + backend)
    database.dispose()


def celery_produce(options: argparse.Namespace) -> None:
    from bench.events_celery import apply_event_task

    events = build_events(options.events, options.subjects)
    cpu_before = time.process_time()
    started = time.time()
    for event in events:
        apply_event_task.delay(event.model_dump(mode="json", exclude_none=True))
    finished = time.time()
    report(started, finished, time.process_time() - cpu_before)


def report(started: float, finished: float, cpu_seconds: float) -> None:
    print(json.dumps({"started": started, "finished": finished, "cpu_seconds": cpu_seconds}))


def parse_arguments(arguments: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.events_worker")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run a subscriber, and the relay with --relay")
    worker.add_argument("--store", required=True, help="the store's SQLAlchemy URL")
    worker.add_argument("--bus", choices=("database", "nats"), required=True)
    worker.add_argument("--nats-url", default="", help="the NATS server, for --bus nats")
    worker.add_argument("--relay", action="store_true", help="also run the outbox relay")
    worker.add_argument("--ready-file", required=True, help="created once the worker runs")
    for name in ("produce", "celery-produce"):
        producer = commands.add_parser(name, help="send the events, then print the timings")
        producer.add_argument("--store", required=name == "produce")
        producer.add_argument("--events", type=int, required=True)
        producer.add_argument("--subjects", type=int, required=True)
    return parser.parse_args(arguments)


def main(arguments: list[str]) -> None:
    options = parse_arguments(arguments)
    if options.command == "worker":
        asyncio.run(run_worker(options))
    elif options.command == "produce":
        produce(options)
    else:
        celery_produce(options)


if __name__ == "__main__":
    main(sys.argv[1:])
