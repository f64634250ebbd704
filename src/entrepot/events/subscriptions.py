"""The subscribers registered with the database bus: listing them, and removing one.

A worker registers each configured subscriber when it starts, and from then on
publishing queues a delivery of each event of its types. A subscriber removed
from the configuration stays registered until an operator unsubscribes it,
which deletes its pending deliveries and stops new ones. Its deliveries in
flight finish, and those that fail or are given back at a stop are deleted then,
with no retry or dead letter. Its handled deliveries and dead letters stay.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from entrepot.events.database_bus import IN_FLIGHT, PENDING
from entrepot.store.tables import EventDelivery, EventSubscription


@dataclass(frozen=True)
class RegisteredSubscriber:
    """A subscriber of the database bus and the count of its deliveries by status."""

    name: str
    types: tuple[str, ...]
    deliveries: dict[str, int]


class SubscriberNotFoundError(LookupError):
    """Raised when no subscriber of that name is registered."""

    def __init__(self, name: str) -> None:
        super().__init__(f"subscriber {name!r} is not registered with the database bus")
        self.name = name


def registered(session: Session) -> list[RegisteredSubscriber]:
    """Return the registered subscribers by name, with their delivery counts."""
    counts: dict[str, dict[str, int]] = {}
    rows = session.execute(
        select(EventDelivery.subscriber, EventDelivery.status, func.count()).group_by(
            EventDelivery.subscriber, EventDelivery.status
        )
    )
    for name, status, count in rows:
        counts.setdefault(name, {})[status] = int(count)
    subscriptions = session.scalars(select(EventSubscription).order_by(EventSubscription.name))
    return [
        RegisteredSubscriber(row.name, tuple(sorted(row.types)), counts.get(row.name, {}))
        for row in subscriptions
    ]


def unsubscribe(session: Session, name: str) -> int:
    """Remove the subscriber ``name`` and its pending deliveries; return how many."""
    subscription = session.get(EventSubscription, name, with_for_update=True)
    if subscription is None:
        raise SubscriberNotFoundError(name)
    removed = session.execute(
        delete(EventDelivery).where(
            EventDelivery.subscriber == name, EventDelivery.status == PENDING
        )
    )
    # A replay's request to send an event in flight again ends with the subscriber.
    session.execute(
        update(EventDelivery)
        .where(EventDelivery.subscriber == name, EventDelivery.status == IN_FLIGHT)
        .values(resend_requested=False)
    )
    session.delete(subscription)
    return int(removed.rowcount or 0)  # type: ignore[attr-defined]
