"""The event bus contract, run on every backend: the database bus on SQLite and on
PostgreSQL, and the NATS JetStream bus (with the outbox and the inbox on SQLite), on
Debian's nats-server and on a newer one that fsyncs every write before its ack.

Each test writes events to the outbox or publishes them, runs subscribers whose
handler applies a projection through `apply_once`, and checks the store
afterwards: which effects happened, what the inbox recorded, and what the bus
still has in flight or in its dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.js.errors
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from entrepot.events.bus import EventBus, Handler, Subscription
from entrepot.events.database_bus import DONE, OPEN, DatabaseBus
from entrepot.events.dead_letters import (
    EventDeadLetterClosedError,
    discard_event_dead_letter,
    retry_event_dead_letter,
)
from entrepot.events.envelope import INVENTORY_CHANGED, Event
from entrepot.events.inbox import InboxOutcome, apply_once
from entrepot.events.nats_bus import NatsBus
from entrepot.events.nats_dead_letters import KEEPER_NAME, NatsDeadLetterKeeper
from entrepot.events.outbox import append
from entrepot.events.relay import OutboxRelay
from entrepot.events.replay import (
    EventFilter,
    matching_events,
    registered_subscribers,
    replay_events,
)
from entrepot.events.resend import NatsResend, Resend, put_back
from entrepot.spokes.failures import RetryLater
from entrepot.store.database import Database
from entrepot.store.migrate import upgrade_to_head
from entrepot.store.tables import EventDeadLetter, EventDelivery, InboxEntry, OutboxEvent
from tests.events.natsserver import NatsServer, running_nats_server
from tests.stores import postgres_database

pytestmark = pytest.mark.timeout(90)

SUBSCRIBER = "contract"
TYPES = frozenset({INVENTORY_CHANGED})

# The subscriber's own tables: one row per effect, and a read model per subject.
METADATA = MetaData()
EFFECTS = Table(
    "contract_effects",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64)),
    Column("subject", String(400)),
)
VIEW = Table(
    "contract_view",
    METADATA,
    Column("subject", String(400), primary_key=True),
    Column("version", String(80)),
    Column("applied", Integer),
)


# Backends


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter as either backend stores it."""

    id: int
    event_id: str
    deliveries: int
    reason: str
    status: str


class Backend:
    """A store for the outbox, the inbox and the read model, and a bus beside it."""

    name: str

    def __init__(self, database: Database) -> None:
        self.database = database
        # The maximum number of events one consumer takes at a time: a claim on the database bus,
        # a fetch on NATS.
        self.batch = 32
        self._buses: list[EventBus] = []

    async def bus(self, owner: str) -> EventBus:
        """A connected bus for one consumer or relay; each has its own connection."""
        raise NotImplementedError

    async def prepare(self, subscription: Subscription) -> None:
        """Create the subscription before any event is published to it."""
        raise NotImplementedError

    async def dead_letters(self, subscription: Subscription) -> list[DeadLetter]:
        """Return the subscription's event dead letters in the store, oldest first."""
        with self.database.read() as session:
            rows = session.scalars(
                select(EventDeadLetter)
                .where(EventDeadLetter.subscriber == subscription.name)
                .order_by(EventDeadLetter.id)
            )
            return [
                DeadLetter(row.id, row.event_id, row.attempts, row.reason, row.status)
                for row in rows
            ]

    def resend(self) -> AbstractContextManager[Resend]:
        """Open the backend's resend, to be used in a thread that runs no event loop."""
        raise NotImplementedError

    async def in_flight(self, subscription: Subscription) -> int:
        """Count the events that the bus has not settled for the subscription yet."""
        raise NotImplementedError

    async def close(self) -> None:
        for bus in self._buses:
            await bus.close()
        self.database.dispose()


class DatabaseBackend(Backend):
    async def bus(self, owner: str) -> EventBus:
        bus = DatabaseBus(self.database, owner=owner, poll_interval=0.05, claim_limit=self.batch)
        self._buses.append(bus)
        return bus

    async def prepare(self, subscription: Subscription) -> None:
        await DatabaseBus(self.database, owner="setup").register(subscription)

    def resend(self) -> AbstractContextManager[Resend]:
        return nullcontext(put_back)

    async def in_flight(self, subscription: Subscription) -> int:
        with self.database.read() as session:
            count = session.scalar(
                select(func.count())
                .select_from(EventDelivery)
                .where(
                    EventDelivery.subscriber == subscription.name,
                    EventDelivery.status.in_(OPEN),
                )
            )
        return int(count or 0)


_streams = itertools.count(1)


class NatsBackend(Backend):
    def __init__(self, database: Database, url: str) -> None:
        super().__init__(database)
        token = uuid.uuid4().hex[:8]
        self.url = url
        self.stream = f"CONTRACT_{token}_{next(_streams)}"
        self.prefix = f"contract{token}.events"
        self.duplicate_window_seconds = 120.0
        self._keeper: asyncio.Task[None] | None = None
        self._keeper_stopping = False

    async def bus(self, owner: str) -> EventBus:
        bus = self._new_bus()
        await bus.connect()
        self._buses.append(bus)
        return bus

    def _new_bus(self) -> NatsBus:
        return NatsBus(
            self.url,
            stream=self.stream,
            subject_prefix=self.prefix,
            reconnect_wait_seconds=0.2,
            publish_timeout_seconds=2.0,
            duplicate_window_seconds=self.duplicate_window_seconds,
            fetch_batch=self.batch,
        )

    async def prepare(self, subscription: Subscription) -> None:
        bus = self._new_bus()
        await bus.connect()
        try:
            await bus.jetstream().add_consumer(self.stream, bus.consumer_config(subscription))
        finally:
            await bus.close()

    async def dead_letters(self, subscription: Subscription) -> list[DeadLetter]:
        """Let a dead-letter keeper copy the dead-letter stream into the store, then
        read the store."""
        if self._keeper is None:
            bus = await self.bus("keeper")
            assert isinstance(bus, NatsBus)
            keeper = NatsDeadLetterKeeper(bus, self.database)
            self._keeper = asyncio.create_task(keeper.run(lambda: self._keeper_stopping))
        await wait_for_consumer(self.url, f"{self.stream}_DEAD", KEEPER_NAME)
        return await super().dead_letters(subscription)

    def resend(self) -> AbstractContextManager[Resend]:
        return NatsResend(self._new_bus())

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper_stopping = True
            await asyncio.wait_for(self._keeper, 15)
        await super().close()

    async def in_flight(self, subscription: Subscription) -> int:
        client = await nats.connect(self.url)
        try:
            info = await client.jetstream().consumer_info(self.stream, subscription.name)
        finally:
            await client.close()
        return int(info.num_ack_pending) + int(info.num_pending)


async def wait_for_consumer(url: str, stream: str, name: str, within: float = 15.0) -> None:
    """Wait until the consumer exists and has nothing pending or unacknowledged."""
    client = await nats.connect(url)
    deadline = time.monotonic() + within
    try:
        js = client.jetstream()
        while True:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                info = await js.consumer_info(stream, name)
                if not info.num_pending and not info.num_ack_pending:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"consumer {name} on {stream} did not catch up in {within} s")
            await asyncio.sleep(0.05)
    finally:
        await client.close()


def open_store(url: str) -> Database:
    database = Database(url)
    upgrade_to_head(database)
    METADATA.create_all(database.engine)
    return database


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    yield from running_nats_server(tmp_path_factory)


@pytest.fixture(scope="module")
def syncing_nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server of 2.10 or later set up as in production: fsync before each ack."""
    yield from running_nats_server(tmp_path_factory, sync_always=True)


@pytest.fixture(params=["sqlite", "postgresql", "nats", "nats-sync"])
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def nats_url(request: pytest.FixtureRequest, backend_name: str) -> str | None:
    """The URL of the module's nats-server, started only for the NATS backends."""
    if not backend_name.startswith("nats"):
        return None
    fixture = "nats_server" if backend_name == "nats" else "syncing_nats_server"
    server: NatsServer = request.getfixturevalue(fixture)
    return server.url


@pytest.fixture
async def backend(
    backend_name: str, nats_url: str | None, tmp_path: Path
) -> AsyncIterator[Backend]:
    if backend_name == "postgresql":
        with postgres_database() as url:
            chosen: Backend = DatabaseBackend(open_store(url))
            chosen.name = backend_name
            yield chosen
            await chosen.close()
        return
    database = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    chosen = DatabaseBackend(database) if nats_url is None else NatsBackend(database, nats_url)
    chosen.name = backend_name
    yield chosen
    await chosen.close()


# The subscriber


@dataclass
class Call:
    """One call of the handler."""

    event: Event
    consumer: str
    started: float
    finished: float = 0.0
    outcome: InboxOutcome | None = None


@dataclass
class Recorder:
    """Runs `apply_once` for each event it gets, and records every call.

    ``latency`` seconds pass before the effect's transaction, as a remote call
    would take. ``attempts`` is passed to `Database.write`. ``fail_first`` names
    events whose first effect transaction raises a serialization failure.
    """

    database: Database
    latency: float = 0.0
    attempts: int = 12
    fail_first: set[str] = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)
    _failed: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self, consumer: str = "main") -> Handler:
        async def handle(event: Event) -> None:
            call = Call(event, consumer, time.monotonic())
            self.calls.append(call)
            if self.latency:
                await asyncio.sleep(self.latency)
            work = functools.partial(apply_once, subscriber=SUBSCRIBER, event=event)
            write = functools.partial(
                self.database.write,
                lambda session: work(session, effect=self._effect(event)),
                attempts=self.attempts,
            )
            call.outcome = await asyncio.to_thread(write)
            call.finished = time.monotonic()

        return handle

    def _effect(self, event: Event) -> Callable[[Session], None]:
        def effect(session: Session) -> None:
            with self._lock:
                fail = event.id in self.fail_first and event.id not in self._failed
                self._failed.add(event.id)
            project(session, event)
            if fail:
                raise serialization_failure()

        return effect

    def outcomes(self, event_id: str) -> list[InboxOutcome | None]:
        return [call.outcome for call in self.calls if call.event.id == event_id]

    def finished(self) -> list[Call]:
        return [call for call in self.calls if call.outcome is not None]


def project(session: Session, event: Event) -> None:
    """The subscriber's effect: record it, and keep the subject's newest version."""
    session.execute(EFFECTS.insert().values(event_id=event.id, subject=event.subject))
    row = session.execute(select(VIEW).where(VIEW.c.subject == event.subject)).first()
    if row is None:
        values = {"subject": event.subject, "version": event.sourceversion, "applied": 1}
        session.execute(VIEW.insert().values(**values))
        return
    session.execute(
        update(VIEW)
        .where(VIEW.c.subject == event.subject)
        .values(version=event.sourceversion, applied=row.applied + 1)
    )


class _SerializationFailure(Exception):
    """Stands in for the driver's error; `is_retryable` reads its ``sqlstate``."""

    sqlstate = "40001"


def serialization_failure() -> OperationalError:
    return OperationalError(
        "UPDATE contract_view", None, _SerializationFailure("could not serialize access")
    )


def effect_counts(database: Database) -> dict[str, int]:
    """Count the effects per event id."""
    with database.read() as session:
        rows = session.execute(
            select(EFFECTS.c.event_id, func.count()).group_by(EFFECTS.c.event_id)
        )
        return {event_id: int(count) for event_id, count in rows}


def view(database: Database) -> dict[str, tuple[str | None, int]]:
    with database.read() as session:
        return {row.subject: (row.version, row.applied) for row in session.execute(select(VIEW))}


def inbox(database: Database) -> dict[str, str]:
    """Return the inbox outcome per event id."""
    with database.read() as session:
        rows = session.scalars(select(InboxEntry).where(InboxEntry.subscriber == SUBSCRIBER))
        return {row.event_id: row.outcome for row in rows}


# Consumers and events


class Consumer:
    """One `run_subscriber` task, stopped gracefully or killed (cancelled)."""

    def __init__(self, bus: EventBus, subscription: Subscription, handler: Handler) -> None:
        self.stopping = False
        self.task = asyncio.create_task(
            bus.run_subscriber(subscription, handler, lambda: self.stopping)
        )

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.wait_for(self.task, 15)

    async def kill(self) -> None:
        """Cancel the task, as the death of its process would end it: nothing more is
        acknowledged or recorded, and leases run out on their own."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def start_consumers(
    backend: Backend, subscription: Subscription, recorder: Recorder, count: int = 1
) -> list[Consumer]:
    consumers = []
    for number in range(count):
        name = f"consumer-{number}"
        bus = await backend.bus(name)
        consumers.append(Consumer(bus, subscription, recorder.handler(name)))
    return consumers


async def wait_until(condition: Callable[[], bool], within: float, description: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {description}")
        await asyncio.sleep(0.02)


def subscription(**limits: float) -> Subscription:
    defaults: dict[str, float] = {"redeliver_after_seconds": 0.05, "ack_wait_seconds": 10.0}
    return Subscription(SUBSCRIBER, TYPES, **(defaults | limits))  # type: ignore[arg-type]


def item_event(sku: str, version: int | None, **data: object) -> Event:
    """An inventory event of one SKU; ``version`` seconds after 10:00 is its source
    version, so a higher number is newer."""
    source_version = None
    if version is not None:
        source_version = f"2026-12-04T10:{version // 60:02d}:{version % 60:02d}+00:00"
    return Event(
        type=INVENTORY_CHANGED,
        subject=f"inventory/erp/WH/{sku}",
        data={"sku": sku, "version": version, **data},
        sourceversion=source_version,
    )


def write_outbox(database: Database, events: list[Event]) -> None:
    database.write(lambda session: [append(session, event) for event in events])


async def relay_all(backend: Backend, bus: EventBus) -> int:
    """Publish every unpublished outbox event, as a relay does; return how many."""
    relay = OutboxRelay(backend.database, bus, poll_interval=0.05)
    total = 0
    while published := await relay.relay_once():
        total += published
    return total


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Return the maximum number of intervals open at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


# Outbox, relay, bus, subscriber


async def test_outbox_events_applied_once_after_republish(backend: Backend) -> None:
    if isinstance(backend, NatsBackend):
        # Short, so that the last publish below comes after the server forgot the ids.
        backend.duplicate_window_seconds = 1.0
    limits = subscription()
    await backend.prepare(limits)
    events = [item_event(f"SKU-{sku}", version) for sku in range(3) for version in range(1, 5)]
    write_outbox(backend.database, events)
    relay_bus = await backend.bus("relay")
    recorder = Recorder(backend.database)
    [consumer] = await start_consumers(backend, limits, recorder)

    first = await relay_all(backend, relay_bus)
    await wait_until(lambda: len(recorder.finished()) >= 12, 20, "the first deliveries")
    # The relay crashed after publishing and before marking: it publishes them again,
    # and the bus drops the copies by event id.
    backend.database.write(lambda s: s.execute(update(OutboxEvent).values(published_at=None)))
    again = await relay_all(backend, relay_bus)
    await asyncio.sleep(0.5)
    calls_after_republish = len(recorder.calls)
    # The bus delivers them again anyway: the database bus by a replay, NATS because
    # the publish comes after its duplicate window.
    if isinstance(backend, NatsBackend):
        await asyncio.sleep(1.1)
        backend.database.write(lambda s: s.execute(update(OutboxEvent).values(published_at=None)))
        await relay_all(backend, relay_bus)
    else:
        backend.database.write(
            lambda s: replay_events(
                s,
                matching_events(s, EventFilter()),
                registered_subscribers(s),
                by="test",
                resend=put_back,
            )
        )
    await wait_until(lambda: len(recorder.finished()) >= 24, 20, "the second deliveries")
    await asyncio.sleep(0.3)
    await consumer.stop()

    assert first == again == 12
    assert calls_after_republish == 12
    assert len(recorder.calls) == 24
    assert effect_counts(backend.database) == {event.id: 1 for event in events}
    for event in events:
        assert recorder.outcomes(event.id) == [InboxOutcome.APPLIED, InboxOutcome.DUPLICATE]
    newest = "2026-12-04T10:00:04+00:00"
    assert view(backend.database) == {f"inventory/erp/WH/SKU-{n}": (newest, 4) for n in range(3)}
    assert await backend.in_flight(limits) == 0


# Ordering


async def test_subject_order_kept_subjects_overlap(backend: Backend) -> None:
    limits = subscription()
    await backend.prepare(limits)
    skus = [f"SKU-{n}" for n in range(4)]
    events = [item_event(sku, version) for version in range(1, 9) for sku in skus]
    write_outbox(backend.database, events)
    recorder = Recorder(backend.database, latency=0.02)
    [consumer] = await start_consumers(backend, limits, recorder)
    await relay_all(backend, await backend.bus("relay"))
    await wait_until(lambda: len(recorder.finished()) >= len(events), 30, "every event")
    await consumer.stop()

    for sku in skus:
        subject = f"inventory/erp/WH/{sku}"
        calls = [call for call in recorder.calls if call.event.subject == subject]
        assert [call.event.data["version"] for call in calls] == list(range(1, 9))
        assert max_overlap([(call.started, call.finished) for call in calls]) == 1
    overall = max_overlap([(call.started, call.finished) for call in recorder.calls])
    assert overall >= 2, "different subjects were never handled at the same time"
    assert all(call.outcome == InboxOutcome.APPLIED for call in recorder.calls)


async def test_subject_order_across_two_consumers(backend: Backend) -> None:
    # One event at a time per consumer, so that both consumers take part.
    backend.batch = 1
    limits = subscription()
    await backend.prepare(limits)
    skus = [f"SKU-{n}" for n in range(3)]
    events = [item_event(sku, version) for version in range(1, 11) for sku in skus]
    write_outbox(backend.database, events)
    recorder = Recorder(backend.database, latency=0.02)
    consumers = await start_consumers(backend, limits, recorder, count=2)
    await relay_all(backend, await backend.bus("relay"))
    await wait_until(lambda: len(recorder.finished()) >= len(events), 30, "every event")
    for consumer in consumers:
        await consumer.stop()

    newest = "2026-12-04T10:00:10+00:00"
    assert {subject: version for subject, (version, _) in view(backend.database).items()} == {
        f"inventory/erp/WH/{sku}": newest for sku in skus
    }
    assert effect_counts(backend.database).keys() <= {event.id for event in events}
    if isinstance(backend, NatsBackend):
        # NOTE: two processes that share one durable NATS consumer take its messages
        # with no order between them, so one subject's events can run at once on
        # both, or out of order. What is kept is the newest state per subject, which
        # the inbox's sourceversion check keeps: older events that come late are
        # recorded as stale instead of applied.
        return
    for sku in skus:
        subject = f"inventory/erp/WH/{sku}"
        calls = [call for call in recorder.calls if call.event.subject == subject]
        assert [call.event.data["version"] for call in calls] == list(range(1, 11))
        assert max_overlap([(call.started, call.finished) for call in calls]) == 1
    assert {call.consumer for call in recorder.calls} == {"consumer-0", "consumer-1"}


# Duplicates out of order


async def test_duplicate_storm_ends_at_newest_version(backend: Backend) -> None:
    limits = subscription()
    await backend.prepare(limits)
    rng = random.Random(11)
    events = [item_event(f"SKU-{sku}", version) for sku in range(5) for version in range(1, 7)]
    storm = [event for event in events for _ in range(rng.randint(1, 3))]
    rng.shuffle(storm)
    first_copies = list({event.id: event for event in storm}.values())
    write_outbox(backend.database, first_copies)
    bus = await backend.bus("publisher")
    for start in range(0, len(storm), 7):
        await bus.publish(storm[start : start + 7])
    recorder = Recorder(backend.database)
    [consumer] = await start_consumers(backend, limits, recorder)
    await wait_until(lambda: len(recorder.finished()) >= len(events), 30, "every event")
    await asyncio.sleep(0.3)
    await consumer.stop()

    # Replay the calls in the order they happened: an event older than the newest
    # one applied to its subject must have been recorded as stale.
    newest: dict[str, int] = {}
    expected: dict[str, str] = {}
    for call in recorder.calls:
        version = call.event.data["version"]
        if call.event.id in expected:
            continue
        stale = version < newest.get(call.event.subject, 0)
        expected[call.event.id] = InboxOutcome.STALE if stale else InboxOutcome.APPLIED
        newest[call.event.subject] = max(version, newest.get(call.event.subject, 0))
    recorded = inbox(backend.database)
    assert recorded == expected
    assert list(expected.values()).count(InboxOutcome.STALE) >= 3
    final = "2026-12-04T10:00:06+00:00"
    assert {subject: version for subject, (version, _) in view(backend.database).items()} == {
        f"inventory/erp/WH/SKU-{sku}": final for sku in range(5)
    }
    applied = [event_id for event_id, outcome in recorded.items() if outcome == "applied"]
    assert sorted(effect_counts(backend.database)) == sorted(applied)
    assert await backend.in_flight(limits) == 0


# Poison event


def failing_on_poison(recorder: Recorder, calls: list[float], failure: Exception) -> Handler:
    """Return a handler that raises ``failure`` on poison events, noting when, and
    records the others."""
    healthy = recorder.handler()

    async def handle(event: Event) -> None:
        if event.data.get("poison"):
            calls.append(time.monotonic())
            raise failure
        await healthy(event)

    return handle


async def test_poison_event_dead_lettered_others_flow(backend: Backend) -> None:
    limits = subscription(max_deliveries=3, redeliver_after_seconds=0.3)
    await backend.prepare(limits)
    poison = item_event("POISON", 1, poison=True)
    after_poison = item_event("POISON", 2)
    others = [item_event(f"OK-{n}", 1) for n in range(8)]
    events = [poison, after_poison, *others]
    write_outbox(backend.database, events)
    recorder = Recorder(backend.database)
    poison_calls: list[float] = []
    handle = failing_on_poison(recorder, poison_calls, ValueError("cannot map the item"))
    consumer = Consumer(await backend.bus("consumer"), limits, handle)
    await relay_all(backend, await backend.bus("relay"))
    await wait_until(
        lambda: after_poison.id in {call.event.id for call in recorder.finished()},
        20,
        "the event after the poison one",
    )
    await consumer.stop()
    letters = await backend.dead_letters(limits)

    assert len(poison_calls) == 3
    assert [letter.event_id for letter in letters] == [poison.id]
    assert letters[0].deliveries == 3
    assert "cannot map the item" in letters[0].reason
    finished = {call.event.id: call.finished for call in recorder.finished()}
    assert sorted(finished) == sorted(event.id for event in [after_poison, *others])
    # The other subjects were done before the poison event's second delivery.
    assert max(finished[event.id] for event in others) < poison_calls[1]
    assert finished[after_poison.id] > poison_calls[-1]
    assert effect_counts(backend.database) == {event.id: 1 for event in [after_poison, *others]}
    assert await backend.in_flight(limits) == 0


# Replay and dead letters


async def test_replay_twice_one_effect(backend: Backend) -> None:
    """Replaying to one subscriber, twice, hands it every event again with no second
    effect, and the other subscriber of those events gets nothing more."""
    limits = subscription()
    other = Subscription("bystander", TYPES, redeliver_after_seconds=0.05)
    await backend.prepare(limits)
    await backend.prepare(other)
    events = [item_event(f"SKU-{n}", 1) for n in range(4)]
    write_outbox(backend.database, events)
    recorder = Recorder(backend.database)
    [consumer] = await start_consumers(backend, limits, recorder)
    bystander_calls: list[str] = []

    async def bystander(event: Event) -> None:
        bystander_calls.append(event.id)

    watcher = Consumer(await backend.bus("bystander"), other, bystander)
    await relay_all(backend, await backend.bus("relay"))
    await wait_until(lambda: len(recorder.finished()) >= 4, 20, "the first deliveries")
    first = await asyncio.to_thread(replay_to_contract, backend)
    await wait_until(lambda: len(recorder.finished()) >= 8, 20, "the first replay")
    second = await asyncio.to_thread(replay_to_contract, backend)
    await wait_until(lambda: len(recorder.finished()) >= 12, 20, "the second replay")
    await asyncio.sleep(0.3)
    await consumer.stop()
    await watcher.stop()

    assert first == second == 4
    assert effect_counts(backend.database) == {event.id: 1 for event in events}
    for event in events:
        assert recorder.outcomes(event.id) == [
            InboxOutcome.APPLIED,
            InboxOutcome.DUPLICATE,
            InboxOutcome.DUPLICATE,
        ]
    assert sorted(bystander_calls) == sorted(event.id for event in events)
    assert await backend.in_flight(limits) == 0
    assert await backend.in_flight(other) == 0


def replay_to_contract(backend: Backend) -> int:
    """Replay every outbox event to the contract subscriber; return how many went."""
    with backend.resend() as resend:
        counts = backend.database.write(
            lambda s: replay_events(
                s, matching_events(s, EventFilter()), {SUBSCRIBER: TYPES}, by="test", resend=resend
            )
        )
    return len(counts.events)


async def test_dead_letters_retried_and_discarded(backend: Backend) -> None:
    """Of two dead letters, the retried one is handled once and the discarded one
    never. Each records who closed it, and a second retry raises."""
    limits = subscription(max_deliveries=2, redeliver_after_seconds=0.1)
    await backend.prepare(limits)
    broken = item_event("BROKEN", 1, poison=True)
    dropped = item_event("REFUSED", 1, poison=True)
    write_outbox(backend.database, [broken, dropped])
    recorder = Recorder(backend.database)
    healthy = recorder.handler()
    mapping_fixed = False

    async def handle(event: Event) -> None:
        if event.data.get("poison") and not mapping_fixed:
            raise ValueError("cannot map the item")
        await healthy(event)

    consumer = Consumer(await backend.bus("consumer"), limits, handle)
    await relay_all(backend, await backend.bus("relay"))
    letters = await wait_for_dead_letters(backend, limits, 2)
    mapping_fixed = True
    by_event = {letter.event_id: letter for letter in letters}
    await asyncio.to_thread(retry_dead_letter, backend, by_event[broken.id].id)
    discard_event_dead_letter(backend.database, by_event[dropped.id].id, "ops")
    await wait_until(lambda: len(recorder.finished()) >= 1, 20, "the retried event")
    with pytest.raises(EventDeadLetterClosedError, match="already retried"):
        await asyncio.to_thread(retry_dead_letter, backend, by_event[broken.id].id)
    await asyncio.sleep(0.3)
    await consumer.stop()
    after = {letter.event_id: letter for letter in await backend.dead_letters(limits)}

    assert sorted(by_event) == sorted([broken.id, dropped.id])
    assert all(letter.deliveries == 2 for letter in letters)
    assert {event_id: letter.status for event_id, letter in after.items()} == {
        broken.id: "retried",
        dropped.id: "discarded",
    }
    assert effect_counts(backend.database) == {broken.id: 1}
    assert recorder.outcomes(broken.id) == [InboxOutcome.APPLIED]
    assert await backend.in_flight(limits) == 0
    with backend.database.read() as session:
        closers = session.scalars(select(EventDeadLetter.resolved_by)).all()
    assert closers == ["ops", "ops"]


def retry_dead_letter(backend: Backend, dead_letter_id: int) -> None:
    with backend.resend() as resend:
        retry_event_dead_letter(backend.database, dead_letter_id, "ops", resend)


async def wait_for_dead_letters(
    backend: Backend, subscription: Subscription, count: int
) -> list[DeadLetter]:
    deadline = time.monotonic() + 20
    while len(letters := await backend.dead_letters(subscription)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(letters)} dead letters after 20 s, not {count}")
        await asyncio.sleep(0.1)
    return letters


async def test_poison_event_with_one_slot_others_flow(backend: Backend) -> None:
    """With one call at a time, a failing subject whose later events wait in hand
    does not hold up the events of other subjects."""
    limits = subscription(max_deliveries=3, redeliver_after_seconds=0.5, max_concurrency=1)
    await backend.prepare(limits)
    poison = item_event("POISON", 1, poison=True)
    behind = [item_event("POISON", version) for version in range(2, 8)]
    others = [item_event(f"OK-{n}", 1) for n in range(6)]
    write_outbox(backend.database, [poison, *behind, *others])
    recorder = Recorder(backend.database)
    poison_calls: list[float] = []
    handle = failing_on_poison(recorder, poison_calls, RetryLater("the item cannot be mapped"))
    consumer = Consumer(await backend.bus("consumer"), limits, handle)
    await relay_all(backend, await backend.bus("relay"))
    await wait_until(lambda: len(recorder.finished()) >= 12, 30, "every other event")
    await consumer.stop()

    finished = {call.event.id: call.finished for call in recorder.finished()}
    assert len(poison_calls) == 3
    assert max(finished[event.id] for event in others) < poison_calls[1]
    assert sorted(finished) == sorted(event.id for event in [*behind, *others])


# Crashes, contention and races


async def test_killed_consumer_event_runs_again(backend: Backend) -> None:
    """A handler of 30 s is running when its consumer is killed at 2 s, and a second
    event is queued: after a new consumer starts, the first event's lease runs out,
    it runs again once, and the second runs.

    ``ack_wait_seconds`` is 3 s instead of the default 30 s, so that the test waits
    about 3 s for the lease. It exceeds the 2 s before the kill, so the killed
    consumer's lease is still live when the new consumer starts.
    """
    limits = subscription(ack_wait_seconds=3.0)
    await backend.prepare(limits)
    # NOTE: the queued event is of another subject. Of the same subject, it would
    # run before the redelivery on NATS, whose server offers new messages while an
    # unacknowledged one waits out its ack_wait; the database bus would hold it back.
    slow, queued = item_event("SLOW", 1), item_event("QUEUED", 1)
    write_outbox(backend.database, [slow])
    relay_bus = await backend.bus("relay")
    started = asyncio.Event()
    first_started: list[float] = []

    async def thirty_seconds(event: Event) -> None:
        first_started.append(time.monotonic())
        started.set()
        await asyncio.sleep(30)

    killed = Consumer(await backend.bus("killed"), limits, thirty_seconds)
    await relay_all(backend, relay_bus)
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(2.0)
    await killed.kill()
    killed_at = time.monotonic()
    write_outbox(backend.database, [queued])
    await relay_all(backend, relay_bus)
    recorder = Recorder(backend.database)
    [successor] = await start_consumers(backend, limits, recorder)
    await wait_until(lambda: len(recorder.finished()) >= 2, 15, "both events")
    await asyncio.sleep(0.5)
    await successor.stop()

    assert len(first_started) == 1
    assert recorder.outcomes(slow.id) == [InboxOutcome.APPLIED]
    assert recorder.outcomes(queued.id) == [InboxOutcome.APPLIED]
    [rerun] = [call for call in recorder.calls if call.event.id == slow.id]
    # Not before the lease ran out, so never beside the killed consumer's run; and
    # not much later either.
    assert rerun.started - first_started[0] >= limits.ack_wait_seconds - 0.1
    assert rerun.started - killed_at < limits.ack_wait_seconds + 3.0
    assert effect_counts(backend.database) == {slow.id: 1, queued.id: 1}
    assert await backend.in_flight(limits) == 0


async def test_waiting_for_a_slot_costs_no_attempt(backend: Backend) -> None:
    """Twelve events of twelve subjects, two handler calls of 0.4 s at a time, and an
    ack_wait of 1 s. The last events wait more than 2 s for a slot and keep their
    lease meanwhile, so each runs once, beside a second consumer."""
    limits = subscription(ack_wait_seconds=1.0, max_concurrency=2, max_deliveries=1)
    await backend.prepare(limits)
    events = [item_event(f"SLOT-{n}", 1) for n in range(12)]
    write_outbox(backend.database, events)
    recorder = Recorder(backend.database, latency=0.4)
    first = Consumer(await backend.bus("first"), limits, recorder.handler("first"))
    await relay_all(backend, await backend.bus("relay"))
    await wait_until(lambda: len(recorder.calls) >= 1, 10, "the first call")
    second = Consumer(await backend.bus("second"), limits, recorder.handler("second"))
    await wait_until(lambda: len(recorder.finished()) >= 12, 30, "every event")
    await asyncio.sleep(0.5)
    await first.stop()
    await second.stop()

    assert sorted(call.event.id for call in recorder.calls) == sorted(e.id for e in events)
    assert await backend.dead_letters(limits) == []
    for consumer in ("first", "second"):
        spans = [(c.started, c.finished) for c in recorder.calls if c.consumer == consumer]
        assert max_overlap(spans) <= 2
    assert await backend.in_flight(limits) == 0


async def test_slow_call_leaves_other_subjects_free(backend: Backend) -> None:
    """While one call of four slots takes 3 s, events of other subjects published
    after it started are handled at once."""
    limits = subscription(max_concurrency=4)
    await backend.prepare(limits)
    slow = item_event("SLOW", 1)
    write_outbox(backend.database, [slow])
    relay_bus = await backend.bus("relay")
    recorder = Recorder(backend.database)
    healthy = recorder.handler()
    started = asyncio.Event()

    async def handle(event: Event) -> None:
        if event.id == slow.id:
            started.set()
            await asyncio.sleep(3)
        await healthy(event)

    consumer = Consumer(await backend.bus("consumer"), limits, handle)
    await relay_all(backend, relay_bus)
    await asyncio.wait_for(started.wait(), 10)
    quick = [item_event(f"QUICK-{n}", 1) for n in range(3)]
    write_outbox(backend.database, quick)
    published = time.monotonic()
    await relay_all(backend, relay_bus)
    await wait_until(lambda: len(recorder.finished()) >= 4, 15, "every event")
    await consumer.stop()

    finished = {call.event.id: call.finished for call in recorder.finished()}
    assert all(finished[event.id] - published < 1.5 for event in quick)
    assert finished[slow.id] > max(finished[event.id] for event in quick)


async def test_abandoned_last_delivery_dead_lettered(backend: Backend) -> None:
    """A consumer killed during the event's only allowed delivery: the event goes to
    the dead letters once its lease runs out, and is not handled again."""
    limits = subscription(ack_wait_seconds=1.0, max_deliveries=1)
    await backend.prepare(limits)
    event = item_event("ABANDONED", 1)
    write_outbox(backend.database, [event])
    started = asyncio.Event()
    calls: list[str] = []

    async def hang(received: Event) -> None:
        calls.append(received.id)
        started.set()
        await asyncio.sleep(30)

    killed = Consumer(await backend.bus("killed"), limits, hang)
    await relay_all(backend, await backend.bus("relay"))
    await asyncio.wait_for(started.wait(), 10)
    await killed.kill()
    successor = Consumer(await backend.bus("successor"), limits, hang)
    letters = await wait_for_dead_letters(backend, limits, 1)
    await successor.stop()

    assert calls == [event.id]
    assert [letter.event_id for letter in letters] == [event.id]
    assert letters[0].deliveries == 1
    assert await backend.in_flight(limits) == 0


async def test_contention_all_applied_once(backend: Backend) -> None:
    """1,000 events of 1,000 orders, 5 consumers, 200 ms handler latency, and 5 % of
    the effect transactions failing with a serialization failure.

    The failure leaves the handler (``attempts=1``) so that the bus, not
    `Database.write`, must deliver the event again.
    """
    limits = subscription(max_deliveries=5)
    await backend.prepare(limits)
    events = [item_event(f"ORDER-{n}", None) for n in range(1000)]
    failing = {event.id for event in random.Random(4).sample(events, 50)}
    write_outbox(backend.database, events)
    recorder = Recorder(backend.database, latency=0.2, attempts=1, fail_first=failing)
    consumers = await start_consumers(backend, limits, recorder, count=5)
    await relay_all(backend, await backend.bus("relay"))
    await wait_until(lambda: len(recorder.finished()) >= 1000, 60, "1,000 events")
    await asyncio.sleep(0.3)
    for consumer in consumers:
        await consumer.stop()

    counts = effect_counts(backend.database)
    assert len(counts) == 1000
    assert set(counts.values()) == {1}
    assert set(inbox(backend.database).values()) == {InboxOutcome.APPLIED}
    assert len(recorder.finished()) == 1000
    assert len(recorder.calls) == 1050
    assert {call.consumer for call in recorder.calls} == {f"consumer-{n}" for n in range(5)}
    assert await backend.in_flight(limits) == 0
    assert await backend.dead_letters(limits) == []
    if isinstance(backend, DatabaseBackend):
        with backend.database.read() as session:
            statuses = set(session.scalars(select(EventDelivery.status)))
        assert statuses == {DONE}


class ConsumerDiedError(Exception):
    """Ends the effect's transaction the way a dead process's connection does."""


async def test_uncommitted_key_redelivered_applied_once(backend: Backend) -> None:
    """The inbox key is written, the consumer dies before its transaction commits,
    and the bus delivers the event again: it is applied once, not skipped as a
    duplicate."""
    limits = subscription(ack_wait_seconds=1.0)
    await backend.prepare(limits)
    event = item_event("KEY", 1)
    write_outbox(backend.database, [event])
    key_recorded = threading.Event()
    die = threading.Event()
    keys_seen: list[int] = []

    def effect(session: Session) -> None:
        keys_seen.append(len(list(session.scalars(select(InboxEntry.event_id)))))
        key_recorded.set()
        die.wait(10)
        raise ConsumerDiedError

    def write() -> None:
        with contextlib.suppress(ConsumerDiedError):
            backend.database.write(lambda session: apply_once(session, SUBSCRIBER, event, effect))

    async def dying(received: Event) -> None:
        await asyncio.to_thread(write)

    victim = Consumer(await backend.bus("victim"), limits, dying)
    await relay_all(backend, await backend.bus("relay"))
    assert await asyncio.to_thread(key_recorded.wait, 10)
    await victim.kill()
    die.set()
    recorder = Recorder(backend.database)
    [successor] = await start_consumers(backend, limits, recorder)
    await wait_until(lambda: len(recorder.finished()) >= 1, 15, "the redelivery")
    await asyncio.sleep(0.3)
    await successor.stop()

    assert keys_seen == [1]
    assert recorder.outcomes(event.id) == [InboxOutcome.APPLIED]
    assert inbox(backend.database) == {event.id: InboxOutcome.APPLIED}
    assert effect_counts(backend.database) == {event.id: 1}
    assert await backend.in_flight(limits) == 0


async def test_committed_redelivery_settled_duplicate(backend: Backend) -> None:
    """The effect commits and the consumer dies before the bus hears of it: the
    redelivery is a duplicate, and the bus settles it instead of offering it forever."""
    limits = subscription(ack_wait_seconds=1.0)
    await backend.prepare(limits)
    event = item_event("ACK", 1)
    write_outbox(backend.database, [event])
    committed = asyncio.Event()
    recorder = Recorder(backend.database)
    apply = recorder.handler("victim")

    async def die_after_commit(received: Event) -> None:
        await apply(received)
        committed.set()
        await asyncio.sleep(30)

    victim = Consumer(await backend.bus("victim"), limits, die_after_commit)
    await relay_all(backend, await backend.bus("relay"))
    await asyncio.wait_for(committed.wait(), 10)
    await victim.kill()
    [successor] = await start_consumers(backend, limits, recorder)
    await wait_until(lambda: len(recorder.finished()) >= 2, 15, "the redelivery")
    await asyncio.sleep(0.3)
    await successor.stop()

    assert recorder.outcomes(event.id) == [InboxOutcome.APPLIED, InboxOutcome.DUPLICATE]
    assert effect_counts(backend.database) == {event.id: 1}
    assert await backend.in_flight(limits) == 0


def _race(databases: list[Database], events: list[Event]) -> list[InboxOutcome]:
    """Run `apply_once` for ``events[i]`` on ``databases[i]``, each in its thread, all
    starting together; the first effect holds its transaction open for 50 ms."""
    barrier = threading.Barrier(len(events))
    outcomes: list[InboxOutcome] = []
    lock = threading.Lock()

    def effect_of(event: Event, hold: float) -> Callable[[Session], None]:
        def effect(session: Session) -> None:
            project(session, event)
            time.sleep(hold)

        return effect

    def run(index: int) -> None:
        event = events[index]
        hold = 0.05 if index == 0 else 0.0
        barrier.wait(5)
        time.sleep(0.005 * index)
        outcome = databases[index].write(
            lambda session: apply_once(session, SUBSCRIBER, event, effect_of(event, hold))
        )
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(events))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    return outcomes


async def test_same_event_concurrently_one_effect(backend: Backend) -> None:
    """Two consumers get the same event within 10 ms, each on its own connection:
    the inbox's unique key on (subscriber, event id) lets exactly one apply it."""
    event = item_event("TWICE", 1)
    other = Database(backend.database.url)
    try:
        outcomes = await asyncio.to_thread(_race, [backend.database, other], [event, event])
    finally:
        other.dispose()

    assert sorted(outcomes) == [InboxOutcome.APPLIED, InboxOutcome.DUPLICATE]
    assert effect_counts(backend.database) == {event.id: 1}
    assert inbox(backend.database) == {event.id: InboxOutcome.APPLIED}


async def test_two_versions_race_newest_wins(backend: Backend) -> None:
    """Two events of one new subject applied at once: both get an inbox entry, and
    the subject ends at the newer version whichever commits first. The older one is
    stale when the newer one committed before it, and applied otherwise."""
    older, newer = item_event("RACE", 1), item_event("RACE", 2)
    other = Database(backend.database.url)
    try:
        for database in (backend.database, other):
            with database.read() as session:
                session.execute(select(1))
        outcomes = await asyncio.to_thread(_race, [backend.database, other], [newer, older])
    finally:
        other.dispose()
    recorded = inbox(backend.database)

    assert len(outcomes) == 2
    assert recorded.keys() == {newer.id, older.id}
    assert recorded[newer.id] == InboxOutcome.APPLIED
    assert recorded[older.id] in {InboxOutcome.APPLIED, InboxOutcome.STALE}
    applied = 2 if recorded[older.id] == InboxOutcome.APPLIED else 1
    newest = "2026-12-04T10:00:02+00:00"
    assert view(backend.database) == {"inventory/erp/WH/RACE": (newest, applied)}


async def test_handler_outliving_lease_not_run_twice(backend: Backend) -> None:
    """A live consumer whose handler runs past ``ack_wait_seconds`` loses the event
    to a timeout, and no other consumer runs it while the first still does."""
    limits = subscription(ack_wait_seconds=1.0, redeliver_after_seconds=0.1)
    await backend.prepare(limits)
    event = item_event("LONG", 1)
    write_outbox(backend.database, [event])
    recorder = Recorder(backend.database)
    apply = recorder.handler()
    runs: list[list[float]] = []

    async def slow_first(received: Event) -> None:
        run = [time.monotonic(), float("inf")]
        runs.append(run)
        try:
            if len(runs) == 1:
                await asyncio.sleep(2.5)
            await apply(received)
        finally:
            run[1] = time.monotonic()

    consumers = [Consumer(await backend.bus(f"live-{n}"), limits, slow_first) for n in range(2)]
    await relay_all(backend, await backend.bus("relay"))
    await wait_until(lambda: len(recorder.finished()) >= 1, 15, "the event")
    await asyncio.sleep(2.0)
    for consumer in consumers:
        await consumer.stop()

    assert len(runs) >= 2
    assert max_overlap([(start, end) for start, end in runs]) == 1
    assert effect_counts(backend.database) == {event.id: 1}
    assert await backend.in_flight(limits) == 0
