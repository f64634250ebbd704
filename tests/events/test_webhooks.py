"""Signed webhooks to event subscribers, through the database bus, to a receiver on a
loopback port that checks every signature."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from entrepot.config import EventSubscriberSettings
from entrepot.demo.processes import free_port
from entrepot.events.database_bus import DatabaseBus
from entrepot.events.envelope import Event
from entrepot.events.outbox import append
from entrepot.events.webhooks import (
    WebhookSubscriber,
    retry_after_seconds,
    sign,
    verify_signature,
)
from entrepot.spokes.failures import PermanentFailure, RetryLater
from entrepot.store.database import Database
from entrepot.store.migrate import upgrade_to_head
from entrepot.store.tables import EventDeadLetter, EventDelivery
from tests.harness import wait_until
from tests.webhook_receiver import RECEIVER_SECRET, Response, running_receiver


def _settings(url: str, **changes: Any) -> EventSubscriberSettings:
    values: dict[str, Any] = {
        "url": url,
        "secret": RECEIVER_SECRET,
        "types": ["inventory.changed"],
        "requests_per_second": 200,
        "max_concurrency": 4,
        "timeout_seconds": 5,
        "max_deliveries": 5,
        "redeliver_after_seconds": 0.05,
        **changes,
    }
    return EventSubscriberSettings.model_validate(values)


def _event(sku: str, **data: object) -> Event:
    return Event(
        type="inventory.changed", subject=f"inventory/erp/WH/{sku}", data={"sku": sku, **data}
    )


async def _deliver(
    tmp_path: Path,
    settings: EventSubscriberSettings,
    events: list[Event],
    done: Callable[[Database], Awaitable[bool]],
) -> Database:
    """Publish ``events`` on a database bus and run the webhook subscriber until ``done``."""
    database = Database(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade_to_head(database)
    subscriber = WebhookSubscriber("warehouse-app", settings)
    bus = DatabaseBus(database, owner="test", poll_interval=0.02)
    await bus.register(subscriber.subscription)
    database.write(lambda session: [append(session, event) for event in events])
    await bus.publish(events)
    stop = asyncio.Event()
    task = asyncio.create_task(
        bus.run_subscriber(subscriber.subscription, subscriber, stop.is_set)
    )
    try:
        await wait_until(lambda: done(database), 30, "deliveries settled")
    finally:
        stop.set()
        await task
        await subscriber.aclose()
    return database


def _all_finished(count: int) -> Callable[[Database], Awaitable[bool]]:
    async def finished(database: Database) -> bool:
        with database.read() as session:
            statuses = list(session.scalars(select(EventDelivery.status)))
        return len(statuses) == count and all(s in ("done", "dead") for s in statuses)

    return finished


async def test_events_arrive_signed(tmp_path: Path) -> None:
    events = [_event(f"SKU-{n}", on_hand=n) for n in range(3)]
    with running_receiver() as receiver:
        await _deliver(tmp_path, _settings(receiver.url), events, _all_finished(3))

    assert receiver.bad_signatures == 0
    assert sorted(r.event["id"] for r in receiver.requests) == sorted(e.id for e in events)
    for request in receiver.requests:
        assert request.content_type == "application/cloudevents+json"
        assert request.event_id_header == request.event["id"]
        assert request.event["specversion"] == "1.0"
    received = {r.event["id"]: Event.model_validate(r.event) for r in receiver.requests}
    assert [received[event.id] for event in events] == events


async def test_unavailable_then_ok_is_retried(tmp_path: Path) -> None:
    event = _event("SKU-1")
    with running_receiver() as receiver:
        receiver.script = lambda _event, seen: (
            Response(503, b"down for a deploy", {"Retry-After": "1"}) if seen == 0 else Response()
        )
        database = await _deliver(tmp_path, _settings(receiver.url), [event], _all_finished(1))

    with database.read() as session:
        delivery = session.scalars(select(EventDelivery)).one()
        dead = list(session.scalars(select(EventDeadLetter)))
    first, second = receiver.arrivals(event.id)
    assert delivery.status == "done"
    assert delivery.attempts == 2
    assert "HTTP 503: down for a deploy" in (delivery.last_error or "")
    # Retry-After (1 s) wins over redeliver_after_seconds (0.05 s).
    assert second - first >= 0.95
    assert dead == []
    assert [e["id"] for e in receiver.unique_events()] == [event.id]


async def test_bad_request_goes_to_dead_letters(tmp_path: Path) -> None:
    refused = _event("SKU-BAD")
    fine = _event("SKU-OK")
    with running_receiver() as receiver:
        receiver.script = lambda event, _seen: (
            Response(400, b'{"error": "unknown sku SKU-BAD"}')
            if event["id"] == refused.id
            else Response(204, b"")
        )
        database = await _deliver(
            tmp_path, _settings(receiver.url), [refused, fine], _all_finished(2)
        )

    with database.read() as session:
        dead = session.scalars(select(EventDeadLetter)).one()
        rows = session.execute(select(EventDelivery.subject, EventDelivery.status)).all()
        statuses = {subject: status for subject, status in rows}
    assert dead.subscriber == "warehouse-app"
    assert dead.event_id == refused.id
    assert dead.attempts == 1
    assert dead.status == "open"
    assert dead.reason == (
        "refused after 1 deliveries: subscriber warehouse-app rejected the event with "
        'HTTP 400: {"error": "unknown sku SKU-BAD"}'
    )
    assert statuses == {refused.subject: "dead", fine.subject: "done"}
    assert len(receiver.arrivals(refused.id)) == 1


async def test_slow_receiver_held_to_max_concurrency(tmp_path: Path) -> None:
    events = [_event(f"SKU-{n}") for n in range(8)]
    with running_receiver(delay=0.25) as receiver:
        await _deliver(
            tmp_path, _settings(receiver.url, max_concurrency=2), events, _all_finished(8)
        )

    assert len(receiver.unique_events()) == 8
    assert receiver.peak_in_flight == 2


async def test_requests_paced_to_rate(tmp_path: Path) -> None:
    events = [_event(f"SKU-{n}") for n in range(6)]
    with running_receiver() as receiver:
        await _deliver(
            tmp_path,
            _settings(receiver.url, requests_per_second=5, max_concurrency=6),
            events,
            _all_finished(6),
        )

    arrivals = sorted(r.arrived for r in receiver.requests)
    assert len(arrivals) == 6
    # Six requests at 5 per second span five intervals of 0.2 s.
    assert arrivals[-1] - arrivals[0] >= 0.9


async def test_timeout_and_refused_connection_retry_later() -> None:
    with running_receiver(delay=1.0) as receiver:
        slow = WebhookSubscriber("slow", _settings(receiver.url, timeout_seconds=0.2))
        with pytest.raises(RetryLater) as timed_out:
            await slow(_event("SKU-1"))
        await slow.aclose()
    closed = WebhookSubscriber("gone", _settings(f"http://127.0.0.1:{free_port()}/events"))
    with pytest.raises(RetryLater) as refused:
        await closed(_event("SKU-1"))
    await closed.aclose()

    assert timed_out.value.reason == "POST to subscriber slow timed out after 0.2 s"
    assert refused.value.reason.startswith("POST to subscriber gone failed: ConnectError")


async def test_throttled_answer_carries_retry_after() -> None:
    with running_receiver() as receiver:
        receiver.script = lambda _event, _seen: Response(429, b"slow down", {"Retry-After": "7"})
        subscriber = WebhookSubscriber("busy", _settings(receiver.url))
        with pytest.raises(RetryLater) as throttled:
            await subscriber(_event("SKU-1"))
        receiver.script = lambda _event, _seen: Response(404, b"no such hook " * 40)
        with pytest.raises(PermanentFailure) as missing:
            await subscriber(_event("SKU-2"))
        await subscriber.aclose()

    assert throttled.value.retry_after == 7.0
    assert throttled.value.status_code == 429
    assert missing.value.status_code == 404
    excerpt = missing.value.reason.split("HTTP 404: ", 1)[1]
    assert excerpt == ("no such hook " * 40)[:200] + "..."


def test_signature_verifies() -> None:
    body = b'{"id": "e-1"}'
    header = sign("s3cret", 1_700_000_000, body)

    assert header == "v1=" + _hex_hmac("s3cret", b'1700000000.{"id": "e-1"}')
    assert verify_signature("s3cret", "1700000000", body, header, now=1_700_000_010)
    assert verify_signature("s3cret", 1_700_000_000, body.decode(), header, now=1_700_000_000)


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "now"),
    [
        ("s3cret", "1700000000", b'{"id": "e-2"}', 1_700_000_000),  # tampered body
        ("s3cret", "1700000001", b'{"id": "e-1"}', 1_700_000_000),  # tampered timestamp
        ("other", "1700000000", b'{"id": "e-1"}', 1_700_000_000),  # wrong secret
        ("s3cret", "1700000000", b'{"id": "e-1"}', 1_700_000_301),  # replayed late
        ("s3cret", "1700000000", b'{"id": "e-1"}', 1_699_999_699),  # from the future
        ("s3cret", "1.7e9", b'{"id": "e-1"}', 1_700_000_000),  # not whole seconds
        ("s3cret", "", b'{"id": "e-1"}', 1_700_000_000),  # missing
    ],
)
def test_signature_rejects(secret: str, timestamp: str, body: bytes, now: float) -> None:
    header = sign("s3cret", 1_700_000_000, b'{"id": "e-1"}')
    assert not verify_signature(secret, timestamp, body, header, now=now)


def test_signature_header_lists() -> None:
    body = b"{}"
    good = sign("s3cret", 1_700_000_000, body)
    other = sign("old-secret", 1_700_000_000, body)
    digest = good.removeprefix("v1=")

    assert verify_signature("s3cret", "1700000000", body, f"{other}, {good}", now=1_700_000_000)
    assert not verify_signature("s3cret", "1700000000", body, f"v0={digest}", now=1_700_000_000)
    assert not verify_signature("s3cret", "1700000000", body, digest, now=1_700_000_000)
    assert verify_signature(
        "s3cret", "1700000000", body, good, tolerance_seconds=10, now=1_700_000_010
    )
    assert not verify_signature(
        "s3cret", "1700000000", body, good, tolerance_seconds=10, now=1_700_000_011
    )


@pytest.mark.parametrize("header", ["v1=é", "v1=\u00e9" * 32, "v1=", "=", "v1==="])
def test_signature_odd_header_false(header: str) -> None:
    assert not verify_signature("s3cret", "1700000000", b"{}", header, now=1_700_000_000)


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0

    assert retry_after_seconds("3", now=now) == 3.0
    assert retry_after_seconds(" 1.5 ", now=now) == 1.5
    assert retry_after_seconds("Tue, 14 Nov 2023 22:13:40 GMT", now=now) == 20.0
    assert retry_after_seconds("Tue, 14 Nov 2023 22:13:00 GMT", now=now) == 0.0
    assert retry_after_seconds("-4", now=now) == 0.0
    assert retry_after_seconds("soon", now=now) is None
    assert retry_after_seconds("nan", now=now) is None
    assert retry_after_seconds(None, now=now) is None


def _hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def test_headers_signed_with_clock() -> None:
    subscriber = WebhookSubscriber(
        "clocked", _settings("http://127.0.0.1:9/events"), clock=lambda: 1_700_000_123.9
    )
    event = _event("SKU-1")
    body = event.to_json()
    headers = subscriber.signed_headers(event, body)
    asyncio.run(subscriber.aclose())

    assert headers["X-Entrepot-Timestamp"] == "1700000123"
    assert headers["X-Entrepot-Event-Id"] == event.id
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert verify_signature(
        RECEIVER_SECRET, "1700000123", body, headers["X-Entrepot-Signature"], now=1_700_000_200
    )
