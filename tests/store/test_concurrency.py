"""Races on the store, run on SQLite and on PostgreSQL.

Each thread opens a `Database` of its own, as a separate process would, so the
threads meet only in the database: SQLite's file lock, or PostgreSQL's row locks.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from entrepot.spokes.protocols import WebhookEnvelope
from entrepot.store import deliveries, erp_links, pushes
from entrepot.store.database import Database
from entrepot.store.deliveries import ClaimedDelivery
from entrepot.store.migrate import upgrade_to_head
from entrepot.store.receipts import claim_receipts, renew_receipt_leases, store_receipt
from entrepot.store.tables import ChannelPush, Delivery, Order, Receipt

T = TypeVar("T")
SHOP = "acme-fasteners.myshopify.com"


@pytest.fixture
def databases(store_url: str) -> Iterator[tuple[Database, Database]]:
    """Two handles on one migrated store, one for each racing thread."""
    first, second = Database(store_url), Database(store_url)
    upgrade_to_head(first)
    yield first, second
    first.dispose()
    second.dispose()


def _race(first: Callable[[], T], second: Callable[[], T]) -> tuple[T, T]:
    """Run both functions at once from two threads; return their results."""
    barrier = threading.Barrier(2)

    def start(work: Callable[[], T]) -> T:
        barrier.wait()
        return work()

    with ThreadPoolExecutor(2) as pool:
        futures = pool.submit(start, first), pool.submit(start, second)
        return futures[0].result(), futures[1].result()


def _envelope(webhook_id: str) -> WebhookEnvelope:
    return WebhookEnvelope(
        channel="shopify",
        account=SHOP,
        topic="orders/create",
        webhook_id=webhook_id,
        event_id=None,
        triggered_at=None,
        headers={"X-Shopify-Webhook-Id": webhook_id},
    )


def _add_orders(database: Database, count: int) -> list[int]:
    def add(session: Session) -> list[int]:
        rows = [
            Order(
                correlation_id=str(uuid.uuid4()),
                channel="shopify",
                account=SHOP,
                channel_order_id=str(number),
                state="validated",
            )
            for number in range(count)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]

    return database.write(add)


def _enqueue(database: Database, order_id: int, action: str) -> bool:
    return database.write(
        lambda session: deliveries.enqueue(session, "erp", order_id, action, str(uuid.uuid4()))
    )


def test_racing_duplicate_receipts_make_one_row(databases: tuple[Database, Database]) -> None:
    first, second = databases
    results = []
    for number in range(20):
        envelope = _envelope(f"w-{number}")
        results.append(
            _race(
                partial(store_receipt, first, envelope, b"{}"),
                partial(store_receipt, second, envelope, b"{}"),
            )
        )

    with first.read() as session:
        rows = list(session.scalars(select(Receipt).order_by(Receipt.id)))
    assert len(rows) == 20
    assert all(row.duplicate_count == 1 for row in rows)
    for from_first, from_second in results:
        assert {from_first.duplicate, from_second.duplicate} == {False, True}
        assert from_first.receipt_id == from_second.receipt_id
        assert from_first.correlation_id == from_second.correlation_id


def test_receipt_claims_are_disjoint(databases: tuple[Database, Database]) -> None:
    first, second = databases
    for number in range(40):
        store_receipt(first, _envelope(f"w-{number}"), b"{}")

    def claim_all(database: Database, owner: str) -> list[int]:
        taken: list[int] = []
        while batch := database.write(lambda s: claim_receipts(s, owner, 30, 3)):
            taken += [receipt.id for receipt in batch]
        return taken

    first_taken, second_taken = _race(
        lambda: claim_all(first, "w1"), lambda: claim_all(second, "w2")
    )

    assert not set(first_taken) & set(second_taken)
    assert len(first_taken) + len(second_taken) == 40


def test_delivery_claims_are_disjoint_and_ordered(databases: tuple[Database, Database]) -> None:
    first, second = databases
    order_ids = _add_orders(first, 30)
    for order_id in order_ids:
        _enqueue(first, order_id, "upsert")
    for order_id in order_ids[::3]:
        _enqueue(first, order_id, "cancel")
    expected = 30 + len(order_ids[::3])
    overtaken: list[tuple[int, int]] = []

    def claim_and_finish(database: Database, owner: str) -> list[ClaimedDelivery]:
        taken: list[ClaimedDelivery] = []
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < 1.0:
            batch = database.write(lambda s: _claim_checking_order(s, owner, overtaken))
            if not batch:
                time.sleep(0.01)
                continue
            idle_since = time.monotonic()
            for claimed in batch:
                database.write(partial(_finish, claimed=claimed))
            taken += batch
        return taken

    first_taken, second_taken = _race(
        lambda: claim_and_finish(first, "w1"), lambda: claim_and_finish(second, "w2")
    )

    assert not {c.id for c in first_taken} & {c.id for c in second_taken}
    assert len(first_taken) + len(second_taken) == expected
    assert overtaken == []
    with first.read() as session:
        statuses = set(session.scalars(select(Delivery.status)))
    assert statuses == {deliveries.DONE}


def _claim_checking_order(
    session: Session, owner: str, overtaken: list[tuple[int, int]]
) -> list[ClaimedDelivery]:
    """Claim up to 4 deliveries, and note any claimed while an earlier delivery of
    its order is still open."""
    batch = deliveries.claim_batch(session, "erp", owner, 30, 4)
    for claimed in batch:
        earlier = session.scalars(
            select(Delivery.id).where(
                Delivery.order_id == claimed.order_id,
                Delivery.id < claimed.id,
                Delivery.status.in_(deliveries.OPEN_STATUSES),
            )
        ).all()
        overtaken += [(claimed.id, earlier_id) for earlier_id in earlier]
    return batch


def _finish(session: Session, *, claimed: ClaimedDelivery) -> None:
    delivery = deliveries.owned(session, claimed)
    assert delivery is not None
    deliveries.finish(delivery, deliveries.DONE, "sent")


def test_expired_delivery_lease_is_taken_over(databases: tuple[Database, Database]) -> None:
    first, second = databases
    [order_id] = _add_orders(first, 1)
    _enqueue(first, order_id, "upsert")
    [dying] = first.write(lambda s: deliveries.claim_batch(s, "erp", "w1", 0.2, 5))

    before_expiry = second.write(lambda s: deliveries.claim_batch(s, "erp", "w2", 30, 5))
    time.sleep(0.3)
    [taken] = second.write(lambda s: deliveries.claim_batch(s, "erp", "w2", 30, 5))
    renewed = first.write(lambda s: deliveries.renew_lease(s, dying, 30))
    with first.read() as session:
        still_owned = deliveries.owned(session, dying)

    assert before_expiry == []
    assert taken.id == dying.id
    assert taken.ambiguous
    assert taken.attempts == 2
    assert not renewed
    assert still_owned is None


def test_expired_receipt_lease_is_taken_over(databases: tuple[Database, Database]) -> None:
    first, second = databases
    store_receipt(first, _envelope("w-1"), b"{}")
    [dying] = first.write(lambda s: claim_receipts(s, "w1", 0.2, 5))

    before_expiry = second.write(lambda s: claim_receipts(s, "w2", 30, 5))
    time.sleep(0.3)
    [taken] = second.write(lambda s: claim_receipts(s, "w2", 30, 5))
    renewed = first.write(lambda s: renew_receipt_leases(s, [dying.id], "w1", 30))

    assert before_expiry == []
    assert taken.id == dying.id
    assert taken.lease_owner == "w2"
    assert taken.attempts == 2
    assert renewed == 0


def test_erp_link_claim_race_has_one_winner(databases: tuple[Database, Database]) -> None:
    first, second = databases
    results = []
    for number in range(20):
        key = f"customer-{number}"
        results.append(
            _race(
                partial(_claim_link, first, key, "w1", 30),
                partial(_claim_link, second, key, "w2", 30),
            )
        )

    assert [sorted(pair) for pair in results] == [[False, True]] * 20


def test_expired_erp_link_claim_is_taken_over(databases: tuple[Database, Database]) -> None:
    first, second = databases

    claimed = _claim_link(first, "customer-1", "w1", 0.2)
    rejected = _claim_link(second, "customer-1", "w2", 30)
    time.sleep(0.3)
    taken_over = _claim_link(second, "customer-1", "w2", 30)
    second.write(lambda s: erp_links.settle(s, "erp", "party", "customer-1", "P-7"))
    after_settle = _claim_link(first, "customer-1", "w1", 30)
    with first.read() as session:
        erp_id = erp_links.linked_id(session, "erp", "party", "customer-1")

    assert claimed
    assert not rejected
    assert taken_over
    assert not after_settle
    assert erp_id == "P-7"


def _claim_link(database: Database, key: str, owner: str, seconds: float) -> bool:
    return database.write(lambda s: erp_links.claim(s, "erp", "party", key, owner, seconds))


def test_racing_pushes_coalesce(databases: tuple[Database, Database]) -> None:
    first, second = databases

    def level(database: Database, available: int) -> Callable[[], bool]:
        payload = {"sku": "SKU-C", "location_id": 1, "available": available}
        return lambda: database.write(
            lambda s: pushes.enqueue_push(s, "shopify", SHOP, pushes.INVENTORY, "SKU-C@1", payload)
        )

    queued = [_race(level(first, 2 * n), level(second, 2 * n + 1)) for n in range(10)]

    with first.read() as session:
        rows = list(session.scalars(select(ChannelPush)))
    assert sorted(queued[0]) == [False, True]
    assert all(pair == (False, False) for pair in queued[1:])
    assert len(rows) == 1
    assert rows[0].payload["available"] in (18, 19)


def test_concurrent_upgrades_both_succeed(store_url: str) -> None:
    first, second = Database(store_url), Database(store_url)

    _race(lambda: upgrade_to_head(first), lambda: upgrade_to_head(second))

    with first.read() as session:
        receipts = session.scalar(select(func.count()).select_from(Receipt))
    first.dispose()
    second.dispose()
    assert receipts == 0
