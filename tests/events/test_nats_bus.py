"""The NATS JetStream bus against a real nats-server started by this module."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.js.api import RawStreamMsg

from entrepot.events.bus import Handler, Subscription
from entrepot.events.envelope import (
    INVOICE_POSTED,
    ORDER_ACCEPTED,
    ORDER_CANCELLED,
    ORDER_RECEIVED,
    Event,
)
from entrepot.events.nats_bus import (
    DEAD_DELIVERIES_HEADER,
    DEAD_REASON_HEADER,
    DEAD_REMEDY_HEADER,
    DEAD_STREAM_SEQUENCE_HEADER,
    NatsBus,
    check_subscription_name,
    subject_tokens,
)
from entrepot.spokes.failures import PermanentFailure, RetryLater
from tests.events.natsserver import NatsServer, free_port, running_nats_server

SHARED_NATS_URL = "nats://127.0.0.1:4222"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    yield from running_nats_server(tmp_path_factory)


@pytest.fixture
async def running_server(nats_server: NatsServer) -> NatsServer:
    """The module's server, started again if an earlier test left it stopped."""
    if nats_server.process is None:
        nats_server.start()
    return nats_server


_names = itertools.count(1)


def new_bus(url: str, **options: float) -> NatsBus:
    """A bus on a stream and subject prefix of its own, so tests share no events."""
    number = next(_names)
    token = uuid.uuid4().hex[:8]
    return NatsBus(
        url,
        stream=f"TEST_{token}_{number}",
        subject_prefix=f"test{token}.events",
        reconnect_wait_seconds=0.2,
        publish_timeout_seconds=2.0,
        **options,  # type: ignore[arg-type]
    )


def order_event(number: int, *, event_type: str = ORDER_RECEIVED, **fields: object) -> Event:
    return Event(
        type=event_type,
        subject=f"order/shopify/acme.myshopify.com/{number}",
        data={"number": number, **fields},
    )


async def wait_until(condition: Callable[[], bool], within: float, description: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {description}")
        await asyncio.sleep(0.02)


class Subscriber:
    """A `run_subscriber` task that the test stops when it has seen enough."""

    def __init__(self, bus: NatsBus, subscription: Subscription, handler: Handler) -> None:
        self.stop = False
        self.task = asyncio.create_task(
            bus.run_subscriber(subscription, handler, lambda: self.stop)
        )

    async def finish(self) -> None:
        self.stop = True
        await asyncio.wait_for(self.task, 15)


async def dead_letters(bus: NatsBus) -> list[RawStreamMsg]:
    client = await nats.connect(bus.url)
    try:
        js = client.jetstream()
        info = await js.stream_info(bus.dead_stream)
        return [
            await js.get_msg(bus.dead_stream, sequence)
            for sequence in range(info.state.first_seq, info.state.last_seq + 1)
            if info.state.messages
        ]
    finally:
        await client.close()


def subscription(name: str, **limits: float) -> Subscription:
    types = frozenset({ORDER_RECEIVED, ORDER_ACCEPTED, ORDER_CANCELLED})
    defaults: dict[str, float] = {"redeliver_after_seconds": 0.05, "ack_wait_seconds": 5.0}
    return Subscription(name=name, types=types, **(defaults | limits))  # type: ignore[arg-type]


# Subjects and names


def test_subject_tokens_escape_nats_wildcards() -> None:
    tokens = subject_tokens("order/shop.ify/a b/*>/%/")
    assert tokens == "order.shop%2Eify.a%20b.%2A%3E.%25.%"
    assert all(token for token in tokens.split("."))


def test_subscription_name_rejects_dots() -> None:
    with pytest.raises(ValueError, match="invalid subscription name"):
        check_subscription_name("erp.orders")
    check_subscription_name("erp-orders_1")


# Publishing and delivery


async def test_republished_id_delivered_once(running_server: NatsServer) -> None:
    bus = new_bus(running_server.url)
    await bus.connect()
    events = [order_event(n) for n in range(1, 4)]
    await bus.publish(events)
    await bus.publish([events[1]])
    seen: list[str] = []

    async def handle(event: Event) -> None:
        seen.append(event.id)

    subscriber = Subscriber(bus, subscription("dedupe"), handle)
    await wait_until(lambda: len(seen) >= 3, 10, "three deliveries")
    await asyncio.sleep(0.5)
    await subscriber.finish()
    stored = await bus.jetstream().stream_info(bus.stream)
    await bus.close()

    assert sorted(seen) == sorted(event.id for event in events)
    assert stored.state.messages == 3


async def test_subject_order_kept_under_concurrency(running_server: NatsServer) -> None:
    bus = new_bus(running_server.url, fetch_batch=8)
    await bus.connect()
    per_subject = 15
    events = []
    for index in range(per_subject):
        events.append(order_event(1, index=index))
        events.append(order_event(2, index=index))
    await bus.publish(events)
    handled: dict[str, list[int]] = {}
    active = 0
    max_active = 0
    rng = random.Random(7)

    async def handle(event: Event) -> None:
        nonlocal active, max_active
        active += 1
        max_active = max(max_active, active)
        await asyncio.sleep(rng.uniform(0, 0.03))
        handled.setdefault(event.subject, []).append(event.data["index"])
        active -= 1

    subscriber = Subscriber(bus, subscription("order"), handle)
    await wait_until(lambda: sum(map(len, handled.values())) >= 2 * per_subject, 20, "all events")
    await subscriber.finish()
    await bus.close()

    assert list(handled.values()) == [list(range(per_subject))] * 2
    assert max_active == 2


async def test_retry_later_redelivers_in_order(running_server: NatsServer) -> None:
    bus = new_bus(running_server.url)
    await bus.connect()
    first = order_event(5)
    second = order_event(5, event_type=ORDER_ACCEPTED)
    await bus.publish([first, second])
    attempts: dict[str, int] = {}
    handled: list[str] = []

    async def handle(event: Event) -> None:
        attempts[event.id] = attempts.get(event.id, 0) + 1
        if event.id == first.id and attempts[event.id] < 3:
            raise RetryLater("the ERP is down", retry_after=0.2)
        handled.append(event.type)

    subscriber = Subscriber(bus, subscription("retry"), handle)
    await wait_until(lambda: len(handled) >= 2, 15, "both events")
    await subscriber.finish()
    dead = await dead_letters(bus)
    await bus.close()

    assert handled == [ORDER_RECEIVED, ORDER_ACCEPTED]
    assert attempts[first.id] == 3
    assert attempts[second.id] == 1
    assert dead == []


async def test_poison_event_dead_lettered(running_server: NatsServer) -> None:
    bus = new_bus(running_server.url)
    await bus.connect()
    poison = order_event(66)
    after_poison = order_event(66, event_type=ORDER_CANCELLED)
    rejected = order_event(67)
    others = [order_event(n) for n in range(100, 110)]
    await bus.publish([poison, after_poison, rejected, *others])
    attempts: dict[str, int] = {}
    finished_at: dict[str, float] = {}

    async def handle(event: Event) -> None:
        attempts[event.id] = attempts.get(event.id, 0) + 1
        if event.id == poison.id:
            await asyncio.sleep(0.1)
            raise ValueError("cannot map the order")
        if event.id == rejected.id:
            raise PermanentFailure("unknown SKU ABC", remedy="create the item in the ERP")
        finished_at[event.id] = time.monotonic()

    limits = subscription("poison", max_deliveries=3, redeliver_after_seconds=0.3)
    subscriber = Subscriber(bus, limits, handle)
    await wait_until(lambda: after_poison.id in finished_at, 20, "the event after the poison")
    await subscriber.finish()
    dead = await dead_letters(bus)
    await bus.close()

    assert attempts[poison.id] == 3
    assert attempts[rejected.id] == 1
    assert attempts[after_poison.id] == 1
    assert all(attempts[event.id] == 1 for event in others)
    # The other subjects were handled while the poison event was still failing.
    assert max(finished_at[event.id] for event in others) < finished_at[after_poison.id] - 0.5
    by_id = {Event.from_json(message.data).id: message for message in dead}
    assert sorted(by_id) == sorted([poison.id, rejected.id])
    poison_letter = by_id[poison.id]
    assert poison_letter.headers is not None
    assert poison_letter.headers[DEAD_DELIVERIES_HEADER] == "3"
    assert "ValueError('cannot map the order')" in poison_letter.headers[DEAD_REASON_HEADER]
    assert poison_letter.headers[DEAD_STREAM_SEQUENCE_HEADER] == "1"
    assert poison_letter.data == poison.to_json()
    rejected_headers = by_id[rejected.id].headers
    assert rejected_headers is not None
    assert rejected_headers[DEAD_REASON_HEADER] == "unknown SKU ABC"
    assert rejected_headers[DEAD_REMEDY_HEADER] == "create the item in the ERP"


async def test_types_outside_subscription_skipped(running_server: NatsServer) -> None:
    bus = new_bus(running_server.url)
    await bus.connect()
    await bus.publish([order_event(1), order_event(2, event_type="invoice.posted")])
    await bus.publish([order_event(3, event_type=ORDER_CANCELLED)])
    seen: list[str] = []

    async def handle(event: Event) -> None:
        seen.append(event.type)

    subscribed = Subscription(
        name="types", types=frozenset({ORDER_RECEIVED, ORDER_CANCELLED}), ack_wait_seconds=5
    )
    subscriber = Subscriber(bus, subscribed, handle)
    await wait_until(lambda: len(seen) >= 2, 10, "two events")
    await asyncio.sleep(0.5)
    await subscriber.finish()
    info = await bus.jetstream().consumer_info(bus.stream, "types")
    await bus.close()

    assert seen == [ORDER_RECEIVED, ORDER_CANCELLED]
    assert info.num_ack_pending == 0
    assert info.num_pending == 0


async def test_unacknowledged_last_delivery_recorded(running_server: NatsServer) -> None:
    """A subscriber killed during the last delivery leaves the server's advisory."""
    bus = new_bus(running_server.url)
    await bus.connect()
    event = order_event(9)
    await bus.publish([event])
    started = asyncio.Event()

    async def hang(event: Event) -> None:
        started.set()
        await asyncio.sleep(60)

    limits = subscription("killed", max_deliveries=1, ack_wait_seconds=1.0)
    crashed = Subscriber(bus, limits, hang)
    await asyncio.wait_for(started.wait(), 10)
    crashed.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await crashed.task

    async def ignore(event: Event) -> None:
        raise AssertionError("no delivery after the last one")

    # The server checks for expired deliveries when a pull request is waiting.
    successor = Subscriber(bus, limits, ignore)
    letters: list[RawStreamMsg] = []
    for _ in range(50):
        letters = await dead_letters(bus)
        if letters:
            break
        await asyncio.sleep(0.1)
    await successor.finish()
    await bus.close()

    assert len(letters) == 1
    assert letters[0].subject == f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{bus.stream}.killed"
    advisory = json.loads(letters[0].data)
    assert advisory["stream_seq"] == 1
    assert advisory["deliveries"] == 1


# Outages


async def test_server_restart_loses_no_published_event(running_server: NatsServer) -> None:
    bus = new_bus(running_server.url)
    await bus.connect()
    events = [order_event(n % 4, index=n) for n in range(40)]
    await bus.publish(events)
    handled: set[str] = set()

    async def handle(event: Event) -> None:
        await asyncio.sleep(0.02)
        handled.add(event.id)

    subscriber = Subscriber(bus, subscription("outage", ack_wait_seconds=2.0), handle)
    await wait_until(lambda: len(handled) >= 5, 10, "the first deliveries")
    running_server.kill()
    await wait_until(lambda: bus._client is not None and not bus._client.is_connected, 5, "loss")
    with pytest.raises(RetryLater, match="unreachable"):
        await bus.publish([order_event(99)])
    handled_before_restart = len(handled)
    await asyncio.sleep(1.0)
    running_server.start()
    await wait_until(lambda: len(handled) == len(events), 30, "every event after the restart")
    late = order_event(100)
    await publish_when_connected(bus, late)
    await wait_until(lambda: late.id in handled, 10, "an event published after the restart")
    await subscriber.finish()
    await bus.close()

    assert handled_before_restart < len(events)
    assert handled >= {event.id for event in events}


async def publish_when_connected(bus: NatsBus, event: Event) -> None:
    for _ in range(50):
        try:
            await bus.publish([event])
            return
        except RetryLater:
            await asyncio.sleep(0.1)
    raise AssertionError("publish kept failing after the restart")


async def test_connect_unreachable_raises_retry_later(tmp_path: Path) -> None:
    bus = NatsBus(f"nats://127.0.0.1:{free_port()}", reconnect_wait_seconds=0.05)
    with pytest.raises(RetryLater, match="unreachable"):
        await bus.connect()


# The shared server


async def test_shared_server_round_trip() -> None:
    """One publish and consume on the NATS server that developers and CI share."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", 4222), 2)
        writer.close()
    except (OSError, TimeoutError) as error:
        message = f"no NATS server at {SHARED_NATS_URL}: {error!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    bus = new_bus(SHARED_NATS_URL)
    await bus.connect()
    try:
        event = order_event(1)
        await bus.publish([event])
        seen: list[str] = []

        async def handle(received: Event) -> None:
            seen.append(received.id)

        subscriber = Subscriber(bus, subscription("shared"), handle)
        await wait_until(lambda: bool(seen), 10, "the event")
        await subscriber.finish()
        assert seen == [event.id]
    finally:
        js = bus.jetstream()
        for stream in (bus.stream, bus.dead_stream):
            await js.delete_stream(stream)
        await bus.close()


# Processes of one subscription with different types


async def mixed_types_handled(url: str) -> tuple[list[str], list[str]]:
    """Run two processes of one subscription, the second taking one more type, and
    publish events of both types; return the types each handled. The first may
    handle events of the second's type too, so that none is lost."""
    bus = new_bus(url)
    await bus.connect()
    narrow = subscription("mixed")
    wide = Subscription(
        name="mixed",
        types=narrow.types | {INVOICE_POSTED},
        redeliver_after_seconds=0.05,
        ack_wait_seconds=5.0,
    )
    handled: dict[str, list[str]] = {"narrow": [], "wide": []}

    def recording(name: str) -> Handler:
        async def handle(event: Event) -> None:
            handled[name].append(event.type)

        return handle

    first = Subscriber(bus, narrow, recording("narrow"))
    await asyncio.sleep(0.3)
    second_bus = NatsBus(
        url, stream=bus.stream, subject_prefix=bus.subject_prefix, reconnect_wait_seconds=0.2
    )
    await second_bus.connect()
    second = Subscriber(second_bus, wide, recording("wide"))
    await asyncio.sleep(0.3)
    invoices = [order_event(n, event_type=INVOICE_POSTED) for n in range(6)]
    await bus.publish([*invoices, order_event(9)])
    await wait_until(
        lambda: (
            handled["narrow"].count(INVOICE_POSTED) + handled["wide"].count(INVOICE_POSTED) >= 6
        ),
        20,
        "every invoice event",
    )
    await asyncio.sleep(0.5)
    await first.finish()
    await second.finish()
    await second_bus.close()
    await bus.close()
    return handled["narrow"], handled["wide"]


async def test_other_process_types_not_lost(running_server: NatsServer) -> None:
    narrow, wide = await mixed_types_handled(running_server.url)

    assert narrow.count(INVOICE_POSTED) + wide.count(INVOICE_POSTED) == 6
    assert narrow.count(ORDER_RECEIVED) + wide.count(ORDER_RECEIVED) == 1


async def test_close_during_outage_raises_nothing(running_server: NatsServer) -> None:
    bus = new_bus(running_server.url)
    await bus.connect()
    running_server.kill()
    await wait_until(lambda: bus._client is not None and not bus._client.is_connected, 5, "loss")

    await bus.close()

    assert bus._client is None
