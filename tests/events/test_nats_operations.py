"""Event dead letters and replay on the NATS bus: the keeper copies the dead-letter
stream into the store, and operators list, retry, discard and replay from the CLI
while the workers run, against a nats-server of the test's own."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from entrepot.cli import app
from entrepot.config import load_settings
from entrepot.events.bus import Subscription
from entrepot.events.dead_letters import EventDeadLetterClosedError, retry_event_dead_letter
from entrepot.events.envelope import ORDER_ACCEPTED, ORDER_RECEIVED, Event
from entrepot.events.nats_bus import NatsBus
from entrepot.events.nats_dead_letters import KEEPER_NAME, NatsDeadLetterKeeper
from entrepot.events.resend import NatsResend
from entrepot.events.workers import EventWorkers
from entrepot.store.database import Database
from entrepot.store.tables import EventDeadLetter
from tests.event_store import ORDER_TYPES, store_in, write_order_events
from tests.events.natsserver import NatsServer, running_nats_server
from tests.harness import wait_until
from tests.webhook_receiver import RECEIVER_SECRET, Response, WebhookReceiver, running_receiver

pytestmark = pytest.mark.timeout(120)

runner = CliRunner()


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A server of the test's own, so that the default stream names start empty."""
    yield from running_nats_server(tmp_path_factory)


def write_config(path: Path, nats_url: str, receiver_url: str) -> Path:
    types = ", ".join(f'"{event_type}"' for event_type in ORDER_TYPES)
    path.write_text(
        f'[events]\nbus_url = "{nats_url}"\nrelay_interval_seconds = 0.05\n\n'
        f'[events.subscribers.feed]\nurl = "{receiver_url}"\nsecret = "{RECEIVER_SECRET}"\n'
        f"types = [{types}]\nrequests_per_second = 100\nredeliver_after_seconds = 0.05\n"
    )
    return path


@contextlib.asynccontextmanager
async def running_workers(config: Path, database: Database) -> AsyncIterator[EventWorkers]:
    settings = load_settings(config)
    workers = EventWorkers(settings.events, database, owner="test", poll_interval=0.05)
    stopping = asyncio.Event()
    task = asyncio.create_task(workers.run(stopping))
    try:
        yield workers
    finally:
        stopping.set()
        await asyncio.wait_for(task, 20)


async def cli(*args: str) -> Result:
    """Run the CLI in a thread, as NATS resends need a thread without an event loop."""
    return await asyncio.to_thread(runner.invoke, app, list(args))


def open_letters(database: Database) -> list[EventDeadLetter]:
    with database.read() as session:
        query = select(EventDeadLetter).where(EventDeadLetter.status == "open")
        return list(session.scalars(query.order_by(EventDeadLetter.id)))


async def wait_for(condition: Callable[[], bool], within: float, description: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {description}")
        await asyncio.sleep(0.05)


def requests_of(receiver: WebhookReceiver, event_id: str) -> int:
    return len(receiver.arrivals(event_id))


async def test_dead_letters_and_replay_from_cli(tmp_path: Path, nats_server: NatsServer) -> None:
    database = store_in(tmp_path / "data")
    events = write_order_events(database, (1001, 1002))
    accepted = [event for event in events if event.type == ORDER_ACCEPTED]
    received = [event for event in events if event.type == ORDER_RECEIVED]
    rejecting = True

    def answer(event: dict[str, Any], _seen: int) -> Response:
        if rejecting and event["type"] == ORDER_ACCEPTED:
            return Response(400, b"unknown order")
        return Response()

    with running_receiver() as receiver:
        receiver.script = answer
        config = write_config(tmp_path / "entrepot.toml", nats_server.url, receiver.url)
        base = ["--config", str(config), "--data-dir", str(tmp_path / "data")]
        async with running_workers(config, database):
            await wait_for(lambda: len(open_letters(database)) == 2, 30, "two dead letters")
            rejecting = False
            listed = await cli("events", "dlq", "list", "--json", *base)
            by_event = {letter.event_id: letter.id for letter in open_letters(database)}
            retried = await cli(
                "events", "dlq", "retry", str(by_event[accepted[0].id]), "--by", "alice", *base
            )
            discarded = await cli(
                "events", "dlq", "discard", str(by_event[accepted[1].id]), "--by", "bob", *base
            )
            await wait_for(
                lambda: requests_of(receiver, accepted[0].id) == 2, 20, "the retried event"
            )
            replayed = await cli(
                "replay", "--subscriber", "feed", "--type", ORDER_RECEIVED, "--by", "carol", *base
            )
            await wait_for(
                lambda: all(requests_of(receiver, event.id) == 2 for event in received),
                20,
                "the replayed events",
            )
            await asyncio.sleep(0.3)

    with database.read() as session:
        letters = {row.event_id: row for row in session.scalars(select(EventDeadLetter))}
    assert listed.exit_code == 0, listed.output
    assert retried.exit_code == 0, retried.output
    assert discarded.exit_code == 0, discarded.output
    assert replayed.exit_code == 0, replayed.output
    assert "Replayed 2 of 2 matching events to feed: 2 published again." in " ".join(
        replayed.output.split()
    )
    assert sorted(letters) == sorted(event.id for event in accepted)
    assert [(row.status, row.resolved_by) for row in letters.values()] == [
        ("retried", "alice"),
        ("discarded", "bob"),
    ]
    assert all(row.attempts == 1 and "400" in row.reason for row in letters.values())
    assert requests_of(receiver, accepted[1].id) == 1
    accepted_ids = {event["id"] for event in receiver.unique_events()}
    assert accepted_ids == {event.id for event in events} - {accepted[1].id}
    assert all(requests_of(receiver, event.id) == 1 for event in events[1::3])
    assert receiver.bad_signatures == 0


async def test_retry_fails_bus_unreachable(tmp_path: Path) -> None:
    database = store_in(tmp_path / "data")
    [event, *_] = write_order_events(database, (1001,))
    database.write(lambda session: session.add(dead_letter_of(event, "feed")))
    config = tmp_path / "entrepot.toml"
    write_config(config, "nats://127.0.0.1:9", "http://127.0.0.1:9/events")
    base = ["--config", str(config), "--data-dir", str(tmp_path / "data")]

    retried = await cli("events", "dlq", "retry", "1", "--by", "alice", *base)
    replayed = await cli("replay", "--all-subscribers", "--by", "alice", *base)
    missing = await cli("events", "dlq", "retry", "999", "--by", "alice", *base)
    database.write(lambda session: session.add(dead_letter_of(event, "gone")))
    unconfigured = await cli("events", "dlq", "retry", "2", "--by", "alice", *base)

    assert retried.exit_code == 1
    assert "The event bus is unavailable: NATS server at nats://127.0.0.1:9" in " ".join(
        retried.output.split()
    )
    assert replayed.exit_code == 1
    assert "Replay stopped after 0 of 3 events" in " ".join(replayed.output.split())
    assert missing.exit_code == 1
    assert "Event dead letter 999 not found." in missing.output
    assert unconfigured.exit_code == 1
    assert "Subscriber 'gone' is not in [events.subscribers]" in " ".join(
        unconfigured.output.split()
    )
    assert [letter.status for letter in open_letters(database)] == ["open", "open"]


def dead_letter_of(event: Event, subscriber: str) -> EventDeadLetter:
    return EventDeadLetter(
        subscriber=subscriber,
        event_id=event.id,
        subject=event.subject,
        type=event.type,
        envelope=event.model_dump(mode="json", exclude_none=True),
        reason="rejected",
        attempts=1,
        status="open",
    )


# The keeper


def new_bus(url: str) -> NatsBus:
    return NatsBus(url, reconnect_wait_seconds=0.2, publish_timeout_seconds=2.0)


async def keep_all(bus: NatsBus, database: Database) -> None:
    """Run a keeper until it has copied everything in the dead-letter stream."""
    stopping = False
    keeper = NatsDeadLetterKeeper(bus, database)
    task = asyncio.create_task(keeper.run(lambda: stopping))
    js = bus.jetstream()

    async def caught_up() -> bool:
        try:
            info = await js.consumer_info(bus.dead_stream, KEEPER_NAME)
        except Exception:
            return False
        return not info.num_pending and not info.num_ack_pending

    await wait_until(caught_up, 20, "the keeper to catch up")
    stopping = True
    await asyncio.wait_for(task, 10)


async def test_keeper_copies_each_message_once(tmp_path: Path, nats_server: NatsServer) -> None:
    database = store_in(tmp_path)
    bus = new_bus(nats_server.url)
    await bus.connect()
    event = Event(type=ORDER_RECEIVED, subject="order/shopify/acme/9", data={"number": 9})
    await bus.publish([event])
    await bus.jetstream().publish(f"{bus.subject_prefix}.order.received.x", b"not json")
    started = asyncio.Event()

    async def hang(_event: Event) -> None:
        started.set()
        await asyncio.sleep(60)

    limits = Subscription(
        "killed", frozenset({ORDER_RECEIVED}), max_deliveries=1, ack_wait_seconds=1.0
    )
    crashed = asyncio.create_task(bus.run_subscriber(limits, hang, lambda: False))
    await asyncio.wait_for(started.wait(), 10)
    crashed.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await crashed
    # The server notices the expired last delivery when a pull request waits.
    stop_successor = False
    successor = asyncio.create_task(bus.run_subscriber(limits, hang, lambda: stop_successor))

    async def two_dead_letters() -> bool:
        info = await bus.jetstream().stream_info(bus.dead_stream)
        return info.state.messages >= 2

    await wait_until(two_dead_letters, 20, "the advisory and the invalid message")
    stop_successor = True
    await asyncio.wait_for(successor, 10)
    await keep_all(bus, database)
    await bus.jetstream().delete_consumer(bus.dead_stream, KEEPER_NAME)
    await keep_all(bus, database)
    with database.read() as session:
        rows = sorted(session.scalars(select(EventDeadLetter)), key=lambda row: row.id)
    rows.sort(key=lambda row: row.source_key or "")
    with pytest.raises(EventDeadLetterClosedError, match="is not in the outbox"):
        await asyncio.to_thread(retry_over_nats, nats_server.url, database, rows[-1].id)
    await bus.close()

    assert [(row.subscriber, row.event_id, row.type) for row in rows] == [
        ("killed", event.id, ORDER_RECEIVED),
        ("killed", "", ""),
    ]
    assert rows[0].envelope["data"] == {"number": 9}
    assert rows[0].attempts == 1
    assert rows[0].reason.startswith("none of its 1 deliveries was acknowledged")
    assert rows[1].envelope == {"unreadable": "not json"}
    assert "not a valid event" in rows[1].reason
    assert [row.source_key for row in rows] == [
        f"nats:{bus.stream}/killed/1",
        f"nats:{bus.stream}/killed/2",
    ]


def retry_over_nats(url: str, database: Database, dead_letter_id: int) -> None:
    with NatsResend(new_bus(url)) as resend:
        retry_event_dead_letter(database, dead_letter_id, "ops", resend)
