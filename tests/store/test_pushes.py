"""The channel push queue: a newer inventory level replaces the one still waiting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from entrepot.store import pushes
from entrepot.store.database import Database
from entrepot.store.migrate import upgrade_to_head
from entrepot.store.tables import ChannelPush

SHOP = "acme-fasteners.myshopify.com"


@pytest.fixture
def database(store_url: str) -> Iterator[Database]:
    database = Database(store_url)
    upgrade_to_head(database)
    yield database
    database.dispose()


def _level(database: Database, available: int) -> bool:
    payload = {"sku": "SKU-C", "location_id": 1, "available": available}
    return database.write(
        lambda session: pushes.enqueue_push(
            session, "shopify", SHOP, pushes.INVENTORY, "SKU-C@1", payload
        )
    )


def test_newer_level_replaces_the_waiting_one(database: Database) -> None:

    queued = [_level(database, quantity) for quantity in (10, 8, 6, 4)]

    with database.read() as session:
        rows = list(session.scalars(select(ChannelPush)))
    assert queued == [True, False, False, False]
    assert len(rows) == 1
    assert rows[0].payload["available"] == 4


def test_level_changed_while_sending_queues_one_follow_up(database: Database) -> None:
    _level(database, 10)
    (claimed,) = database.write(lambda session: pushes.claim_pushes(session, "w1", 30, 10))

    follow_ups = [_level(database, quantity) for quantity in (9, 7)]

    with database.read() as session:
        rows = {
            row.status: row.payload["available"] for row in session.scalars(select(ChannelPush))
        }
    assert claimed.payload["available"] == 10
    assert follow_ups == [True, False]
    assert rows == {pushes.IN_FLIGHT: 10, pushes.PENDING: 7}


def test_dead_push_retried_goes_again(database: Database) -> None:
    _level(database, 10)
    (claimed,) = database.write(lambda session: pushes.claim_pushes(session, "w1", 30, 10))

    def give_up(session: Session) -> None:
        row = pushes.owned_push(session, claimed)
        assert row is not None
        pushes.finish_push(row, pushes.DEAD, "Shopify answered 404")

    database.write(give_up)
    database.write(lambda session: pushes.retry_push(session, claimed.id, "dana"))
    (again,) = database.write(lambda session: pushes.claim_pushes(session, "w2", 30, 10))

    assert again.id == claimed.id
    assert again.attempts == 1
    with pytest.raises(pushes.PushNotRetryableError, match="is in_flight, not dead"):
        database.write(lambda session: pushes.retry_push(session, claimed.id, "dana"))
