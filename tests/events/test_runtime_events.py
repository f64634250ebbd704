"""The hub's own event workers: its relay publishes the outbox, and its webhook
subscribers get each order's events, in order."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from entrepot.config import EventSettings, EventSubscriberSettings
from entrepot.events.workers import open_bus
from entrepot.store.tables import EventSubscription, OutboxEvent
from tests.harness import ErpSim, hub_settings, order_body, running_hub, wait_until
from tests.webhook_receiver import RECEIVER_SECRET, WebhookReceiver, running_receiver

ORDER_TYPES = ["order.received", "order.validated", "order.accepted"]


def _subscriber(url: str) -> EventSubscriberSettings:
    return EventSubscriberSettings.model_validate(
        {
            "url": url,
            "secret": RECEIVER_SECRET,
            "types": ORDER_TYPES,
            "requests_per_second": 100,
            "redeliver_after_seconds": 0.05,
        }
    )


async def test_hub_posts_order_events_to_subscriber(tmp_path: Path, erp: ErpSim) -> None:
    order_ids = (7401, 7402, 7403)
    with running_receiver() as receiver:
        settings = hub_settings(tmp_path, erp.url)
        settings.events = EventSettings(
            relay_interval_seconds=0.05, subscribers={"order-feed": _subscriber(receiver.url)}
        )
        async with running_hub(settings) as hub:
            for order_id in order_ids:
                response = await hub.post_webhook(order_body(order_id))
                assert response.status_code == 200
            await hub.wait_drained()
            await wait_until(lambda: _received(receiver, 9), 30, "nine events received")
            database = hub.runtime.database

    with database.read() as session:
        registered = session.get(EventSubscription, "order-feed")
        assert registered is not None
        registered_types = registered.types
    by_order: dict[str, list[str]] = {}
    for event in receiver.unique_events():
        by_order.setdefault(event["data"]["channel_order_id"], []).append(event["type"])
    assert receiver.bad_signatures == 0
    assert by_order == {str(order_id): ORDER_TYPES for order_id in order_ids}
    assert sorted(registered_types) == sorted(ORDER_TYPES)


async def _received(receiver: WebhookReceiver, count: int) -> bool:
    return len(receiver.unique_events()) >= count


async def test_relay_runs_without_subscribers(tmp_path: Path, erp: ErpSim) -> None:
    settings = hub_settings(tmp_path, erp.url)
    settings.events = EventSettings(relay_interval_seconds=0.05)
    async with running_hub(settings) as hub:
        await hub.post_webhook(order_body(7411))
        await hub.wait_drained()
        database = hub.runtime.database

        async def all_published() -> bool:
            with database.read() as session:
                stamps = list(session.scalars(select(OutboxEvent.published_at)))
            return len(stamps) == 3 and None not in stamps

        await wait_until(all_published, 10, "outbox published")

    with database.read() as session:
        types = list(session.scalars(select(OutboxEvent.type).order_by(OutboxEvent.id)))
    assert types == ORDER_TYPES


def test_nats_url_selects_nats_bus(tmp_path: Path) -> None:
    from entrepot.events.nats_bus import NatsBus
    from entrepot.store.database import Database

    database = Database(f"sqlite:///{tmp_path / 'store.db'}")
    bus = open_bus(
        EventSettings(bus_url="nats://127.0.0.1:4222"), database, owner="t", poll_interval=1
    )

    assert isinstance(bus, NatsBus)
    assert bus.url == "nats://127.0.0.1:4222"
