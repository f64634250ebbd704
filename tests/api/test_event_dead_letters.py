"""``/api/event-dead-letters``: list, show, retry and discard, behind the API token."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import select

from entrepot.config import ApiSettings, EventSettings, EventSubscriberSettings
from entrepot.events.bus import Subscription
from entrepot.events.envelope import Event
from entrepot.spokes.failures import PermanentFailure
from entrepot.store.database import Database
from entrepot.store.tables import EventDelivery, OutboxEvent
from tests.event_store import ORDER_TYPES, drain, publish, write_order_events
from tests.harness import hub_settings, running_hub

FEED = Subscription("feed", frozenset(ORDER_TYPES))
TOKEN = {"Authorization": "Bearer ops-token"}


async def _dead_letter_accepted(database: Database) -> list[Event]:
    """Write two orders' events and dead-letter their order.accepted for ``feed``."""
    events = write_order_events(database, (1001, 1002))
    await publish(database, FEED, events)

    async def reject_accepted(event: Event) -> None:
        if event.type == "order.accepted":
            raise PermanentFailure("the feed has no such order")

    await drain(database, FEED, reject_accepted)
    return events


def _delivery(database: Database, event_id: str) -> tuple[str, int]:
    with database.read() as session:
        status, attempts = session.execute(
            select(EventDelivery.status, EventDelivery.attempts)
            .join(OutboxEvent, OutboxEvent.id == EventDelivery.outbox_id)
            .where(OutboxEvent.event_id == event_id, EventDelivery.subscriber == "feed")
        ).one()
    return status, attempts


async def test_event_dead_letters_api(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, "http://127.0.0.1:9")
    settings.api = ApiSettings(token=SecretStr("ops-token"))
    async with running_hub(settings, workers=False) as hub:
        database = hub.runtime.database
        await _dead_letter_accepted(database)
        client = hub.client

        anonymous = await client.get("/api/event-dead-letters")
        anonymous_retry = await client.post("/api/event-dead-letters/1/retry", json={"by": "x"})
        listed = await client.get("/api/event-dead-letters", headers=TOKEN)
        first, second = sorted(letter["id"] for letter in listed.json())
        shown = await client.get(f"/api/event-dead-letters/{first}", headers=TOKEN)
        retried = await client.post(
            f"/api/event-dead-letters/{first}/retry", json={"by": "alice"}, headers=TOKEN
        )
        conflict = await client.post(
            f"/api/event-dead-letters/{first}/discard", json={"by": "bob"}, headers=TOKEN
        )
        discarded = await client.post(
            f"/api/event-dead-letters/{second}/discard", json={"by": "bob"}, headers=TOKEN
        )
        nobody = await client.post(
            f"/api/event-dead-letters/{second}/retry", json={"by": ""}, headers=TOKEN
        )
        missing = await client.get("/api/event-dead-letters/999", headers=TOKEN)
        missing_retry = await client.post(
            "/api/event-dead-letters/999/retry", json={"by": "alice"}, headers=TOKEN
        )
        everything = await client.get("/api/event-dead-letters?status=all", headers=TOKEN)
        of_feed = await client.get(
            "/api/event-dead-letters?status=discarded&subscriber=feed", headers=TOKEN
        )
        of_other = await client.get(
            "/api/event-dead-letters?status=all&subscriber=other", headers=TOKEN
        )
        event_id = shown.json()["event_id"]
        after_retry = _delivery(database, event_id)

    assert anonymous.status_code == 401
    assert anonymous_retry.status_code == 401
    assert listed.status_code == 200
    assert [letter["status"] for letter in listed.json()] == ["open", "open"]
    assert shown.status_code == 200
    assert shown.json()["type"] == "order.accepted"
    assert shown.json()["event"]["type"] == "order.accepted"
    assert shown.json()["delivery"]["status"] == "dead"
    assert retried.status_code == 200
    assert retried.json()["status"] == "retried"
    assert retried.json()["resolved_by"] == "alice"
    assert retried.json()["resolved_at"] is not None
    assert after_retry == ("pending", 0)
    assert conflict.status_code == 409
    assert conflict.json()["detail"] == (
        f"event dead letter {first} is already retried (by alice)"
    )
    assert discarded.status_code == 200
    assert discarded.json()["status"] == "discarded"
    assert discarded.json()["resolved_by"] == "bob"
    assert nobody.status_code == 422
    assert missing.status_code == 404
    assert missing.json()["detail"] == "event dead letter 999 not found"
    assert missing_retry.status_code == 404
    assert sorted(letter["status"] for letter in everything.json()) == ["discarded", "retried"]
    assert [letter["id"] for letter in of_feed.json()] == [second]
    assert of_other.json() == []


async def test_retry_answers_503_when_nats_unreachable(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, "http://127.0.0.1:9")
    settings.api = ApiSettings(token=SecretStr("ops-token"))
    feed = EventSubscriberSettings.model_validate(
        {"url": "http://127.0.0.1:9/events", "secret": "s", "types": list(ORDER_TYPES)}
    )
    settings.events = EventSettings(bus_url="nats://127.0.0.1:9", subscribers={"feed": feed})
    async with running_hub(settings, workers=False) as hub:
        database = hub.runtime.database
        await _dead_letter_accepted(database)
        listed = await hub.client.get("/api/event-dead-letters", headers=TOKEN)
        first = min(letter["id"] for letter in listed.json())
        retried = await hub.client.post(
            f"/api/event-dead-letters/{first}/retry", json={"by": "alice"}, headers=TOKEN
        )
        after = await hub.client.get(f"/api/event-dead-letters/{first}", headers=TOKEN)

    assert retried.status_code == 503
    assert retried.json()["detail"].startswith(
        "the event bus is unavailable: NATS server at nats://127.0.0.1:9 is unreachable"
    )
    assert after.json()["status"] == "open"


async def test_out_of_range_id_answers_422(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, "http://127.0.0.1:9")
    settings.api = ApiSettings(token=SecretStr("ops-token"))
    async with running_hub(settings, workers=False) as hub:
        huge = 99999999999999999999999
        shown = await hub.client.get(f"/api/event-dead-letters/{huge}", headers=TOKEN)
        discarded = await hub.client.post(
            f"/api/event-dead-letters/{2**63}/discard", json={"by": "x"}, headers=TOKEN
        )
        order_letter = await hub.client.get(f"/api/dead-letters/{huge}", headers=TOKEN)

    assert shown.status_code == 422
    assert discarded.status_code == 422
    assert order_letter.status_code == 422


async def test_retry_of_unconfigured_subscriber_answers_409(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, "http://127.0.0.1:9")
    settings.api = ApiSettings(token=SecretStr("ops-token"))
    settings.events = EventSettings(bus_url="nats://127.0.0.1:9")
    async with running_hub(settings, workers=False) as hub:
        await _dead_letter_accepted(hub.runtime.database)
        listed = await hub.client.get("/api/event-dead-letters", headers=TOKEN)
        first = min(letter["id"] for letter in listed.json())
        retried = await hub.client.post(
            f"/api/event-dead-letters/{first}/retry", json={"by": "alice"}, headers=TOKEN
        )
        missing = await hub.client.post(
            "/api/event-dead-letters/999/retry", json={"by": "alice"}, headers=TOKEN
        )

    assert retried.status_code == 409
    assert "subscriber 'feed' is not in [events.subscribers]" in retried.json()["detail"]
    assert missing.status_code == 404
