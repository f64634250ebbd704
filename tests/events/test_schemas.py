"""Schema versions of event data: new events in the current version, old ones
upgraded wherever an event is read."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from entrepot.events.bus import Subscription
from entrepot.events.database_bus import DatabaseBus
from entrepot.events.envelope import (
    INVENTORY_CHANGED,
    ORDER_ACCEPTED,
    Event,
    current_schema_version,
)
from entrepot.events.relay import OutboxRelay
from entrepot.store.tables import OutboxEvent
from entrepot.store.types import utc_now
from tests.event_store import store_in

TOTAL = {
    "shop_money": {"amount": "88.00", "currency_code": "EUR"},
    "presentment_money": {"amount": "88.00", "currency_code": "EUR"},
}


def version_one_envelope() -> dict[str, Any]:
    """An order.accepted event as entrepot wrote it before its data had ``total``."""
    return {
        "specversion": "1.0",
        "id": "e-v1",
        "source": "/entrepot/hub",
        "type": ORDER_ACCEPTED,
        "subject": "order/shopify/acme.myshopify.com/1001",
        "time": "2026-11-02T10:00:00+00:00",
        "datacontenttype": "application/json",
        "data": {
            "channel": "shopify",
            "state": "accepted",
            "order": {"schema_version": 1, "totals": {"total": TOTAL}},
        },
        "schemaversion": 1,
    }


def test_old_order_event_upgraded_on_read() -> None:
    event = Event.model_validate(version_one_envelope())

    assert event.schemaversion == 2
    assert event.data["total"] == TOTAL
    assert event.data["state"] == "accepted"


def test_old_event_without_order_gets_no_total() -> None:
    envelope = version_one_envelope()
    envelope["data"] = {"channel": "shopify", "state": "received", "order": None}

    event = Event.model_validate(envelope)

    assert event.schemaversion == 2
    assert event.data["total"] is None


def test_new_event_written_in_current_version() -> None:
    order = Event(type=ORDER_ACCEPTED, subject="order/x", data={"total": TOTAL})
    item = Event(type=INVENTORY_CHANGED, subject="inventory/x", data={"sku": "A"})

    assert order.schemaversion == current_schema_version(ORDER_ACCEPTED) == 2
    assert order.data == {"total": TOTAL}
    assert item.schemaversion == 1


def test_newer_version_left_as_is() -> None:
    envelope = version_one_envelope() | {"schemaversion": 3}

    event = Event.model_validate(envelope)

    assert event.schemaversion == 3
    assert "total" not in event.data


def write_as_stored(session: Session, envelope: dict[str, Any]) -> None:
    """Put ``envelope`` in the outbox unchanged, as an older entrepot wrote it."""
    session.add(
        OutboxEvent(
            event_id=envelope["id"],
            subject=envelope["subject"],
            subject_seq=1,
            type=envelope["type"],
            envelope=envelope,
            created_at=utc_now(),
        )
    )


async def test_old_outbox_event_reaches_subscriber_upgraded(tmp_path: Path) -> None:
    database = store_in(tmp_path)
    database.write(lambda session: write_as_stored(session, version_one_envelope()))
    bus = DatabaseBus(database, owner="test", poll_interval=0.05)
    subscription = Subscription("feed", frozenset({ORDER_ACCEPTED}))
    await bus.register(subscription)
    await OutboxRelay(database, bus, poll_interval=0.05).relay_once()
    received: list[Event] = []
    stopping = False

    async def handle(event: Event) -> None:
        received.append(event)

    task = asyncio.create_task(bus.run_subscriber(subscription, handle, lambda: stopping))
    for _ in range(100):
        if received:
            break
        await asyncio.sleep(0.05)
    stopping = True
    await asyncio.wait_for(task, 10)

    assert [event.id for event in received] == ["e-v1"]
    assert received[0].schemaversion == 2
    assert received[0].data["total"] == TOTAL
