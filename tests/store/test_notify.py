"""LISTEN/NOTIFY on PostgreSQL: the store's triggers and the listener that wakes workers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from functools import partial

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from entrepot.events.envelope import Event
from entrepot.events.outbox import append
from entrepot.store import deliveries, notify, pushes
from entrepot.store.database import Database
from entrepot.store.migrate import upgrade_to_head
from entrepot.store.tables import EventDelivery, Order, OutboxEvent, Receipt

SHOP = "acme-fasteners.myshopify.com"
Notifications = asyncio.Queue[tuple[str, str | None]]


@pytest.fixture
def database(postgres_url: str) -> Iterator[Database]:
    database = Database(postgres_url)
    upgrade_to_head(database)
    yield database
    database.dispose()


@pytest.fixture
async def notifications(database: Database) -> AsyncIterator[Notifications]:
    """The notifications a running listener receives, after those of its connecting."""
    queue: Notifications = asyncio.Queue()
    listener = notify.NotificationListener(database.engine, reconnect_seconds=0.1)
    for channel in notify.CHANNELS:
        listener.on(channel, partial(_record, queue, channel))
    stopping = asyncio.Event()
    task = asyncio.create_task(listener.run(stopping))
    await asyncio.wait_for(listener.listening.wait(), 10)
    for _ in notify.CHANNELS:
        assert queue.get_nowait()[1] is None
    yield queue
    stopping.set()
    await asyncio.wait_for(task, 10)


def _record(queue: Notifications, channel: str, payload: str | None) -> None:
    queue.put_nowait((channel, payload))


async def _next(queue: Notifications) -> tuple[str, str | None]:
    return await asyncio.wait_for(queue.get(), 5)


def _add_order(session: Session) -> int:
    order = Order(
        correlation_id=str(uuid.uuid4()),
        channel="shopify",
        account=SHOP,
        channel_order_id="5001",
        state="validated",
    )
    session.add(order)
    session.flush()
    return order.id


def _add_receipt(session: Session, webhook_id: str) -> Receipt:
    receipt = Receipt(
        correlation_id=str(uuid.uuid4()),
        channel="shopify",
        account=SHOP,
        topic="orders/create",
        webhook_id=webhook_id,
        headers={},
        body=b"{}",
    )
    session.add(receipt)
    session.flush()
    return receipt


def _add_event_delivery(session: Session, event: Event) -> None:
    outbox_id = session.scalars(
        select(OutboxEvent.id).where(OutboxEvent.event_id == event.id)
    ).one()
    session.add(
        EventDelivery(
            subscriber="warehouse-app",
            outbox_id=outbox_id,
            subject=event.subject,
            status="pending",
            attempts=0,
        )
    )


async def test_new_work_notifies_its_channel(
    database: Database, notifications: Notifications
) -> None:
    order_id = await asyncio.to_thread(database.write, _add_order)

    await asyncio.to_thread(database.write, lambda s: _add_receipt(s, "w-1"))
    receipt = await _next(notifications)
    await asyncio.to_thread(
        database.write, lambda s: deliveries.enqueue(s, "erp-east", order_id, "upsert", "c-1")
    )
    delivery = await _next(notifications)
    await asyncio.to_thread(
        database.write,
        lambda s: pushes.enqueue_push(s, "shopify", SHOP, pushes.INVENTORY, "SKU@1", {}),
    )
    push = await _next(notifications)
    event = Event(type="order.accepted", subject="order/shopify/5001", data={})
    await asyncio.to_thread(database.write, lambda s: append(s, event))
    outbox = await _next(notifications)
    await asyncio.to_thread(database.write, lambda s: _add_event_delivery(s, event))
    event_delivery = await _next(notifications)

    assert receipt == (notify.RECEIPTS, "")
    assert delivery == (notify.DELIVERIES, "erp-east")
    assert push == (notify.PUSHES, "")
    assert outbox == (notify.OUTBOX, "")
    assert event_delivery == (notify.EVENT_DELIVERIES, "warehouse-app")


async def test_one_notification_per_transaction(
    database: Database, notifications: Notifications
) -> None:
    def add_many(session: Session) -> None:
        for number in range(5):
            _add_receipt(session, f"w-{number}")

    await asyncio.to_thread(database.write, add_many)
    first = await _next(notifications)
    await asyncio.sleep(0.3)

    assert first == (notify.RECEIPTS, "")
    assert notifications.empty()


async def test_rolled_back_work_notifies_nothing(
    database: Database, notifications: Notifications
) -> None:
    def add_then_fail(session: Session) -> None:
        _add_receipt(session, "w-1")
        raise RuntimeError("rolled back on purpose")

    with pytest.raises(RuntimeError, match="on purpose"):
        await asyncio.to_thread(database.write, add_then_fail)
    await asyncio.sleep(0.3)

    assert notifications.empty()


async def test_work_made_waiting_again_notifies(
    database: Database, notifications: Notifications
) -> None:
    receipt = await asyncio.to_thread(database.write, lambda s: _add_receipt(s, "w-1"))
    await _next(notifications)

    def set_status(status: str) -> None:
        database.write(
            lambda s: s.execute(
                text("UPDATE receipts SET status = :status WHERE id = :id"),
                {"status": status, "id": receipt.id},
            )
        )

    await asyncio.to_thread(set_status, "processed")
    await asyncio.sleep(0.3)
    quiet_after_processed = notifications.empty()
    await asyncio.to_thread(set_status, "received")
    replayed = await _next(notifications)

    assert quiet_after_processed
    assert replayed == (notify.RECEIPTS, "")


async def test_listener_reconnects_after_losing_its_connection(
    database: Database, notifications: Notifications
) -> None:
    def terminate_listener() -> int:
        with database.engine.begin() as connection:
            return len(
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                    )
                ).all()
            )

    terminated = await asyncio.to_thread(terminate_listener)
    after_reconnect = [await _next(notifications) for _ in notify.CHANNELS]
    await asyncio.to_thread(database.write, lambda s: _add_receipt(s, "w-1"))
    receipt = await _next(notifications)

    assert terminated == 1
    assert sorted(after_reconnect) == sorted((channel, None) for channel in notify.CHANNELS)
    assert receipt == (notify.RECEIPTS, "")


def test_listener_rejects_sqlite() -> None:
    database = Database("sqlite://")
    with pytest.raises(ValueError, match="LISTEN needs PostgreSQL, not sqlite"):
        notify.NotificationListener(database.engine)
    database.dispose()
