"""Delivering outbox events again to subscribers.

A replay selects events from the outbox, the record of every event on either
bus, and sends each one again to each chosen subscriber that takes its type
(see `entrepot.events.resend`). The subscribers' inboxes, or a webhook
receiver's check of the event id, make an event that they already handled have
no effect the second time, so running the same replay twice changes nothing
more than running it once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from entrepot.events.dead_letters import close_dead_letters
from entrepot.events.resend import Redelivery, Resend
from entrepot.store.tables import EventSubscription, OutboxEvent


@dataclass(frozen=True)
class EventFilter:
    """Outbox events to select: created at or after ``since`` and before ``until``,
    of any of ``types`` (all types when empty), of one subject and correlation id."""

    since: datetime | None = None
    until: datetime | None = None
    types: frozenset[str] = frozenset()
    subject: str | None = None
    correlation_id: str | None = None


@dataclass
class ReplayCounts:
    """Deliveries that a replay put back, by outcome."""

    reset: int = 0
    created: int = 0
    in_flight: int = 0
    published: int = 0
    events: set[int] = field(default_factory=set)

    def add(self, outcome: Redelivery, outbox_id: int) -> None:
        self.events.add(outbox_id)
        if outcome is Redelivery.RESET:
            self.reset += 1
        elif outcome is Redelivery.CREATED:
            self.created += 1
        elif outcome is Redelivery.PUBLISHED:
            self.published += 1
        else:
            self.in_flight += 1

    def merge(self, other: ReplayCounts) -> None:
        self.reset += other.reset
        self.created += other.created
        self.in_flight += other.in_flight
        self.published += other.published
        self.events |= other.events


def matching_events(session: Session, event_filter: EventFilter) -> list[tuple[int, str]]:
    """Return the outbox ids and types of the selected events, oldest first."""
    query = select(OutboxEvent.id, OutboxEvent.type).order_by(OutboxEvent.id)
    if event_filter.since is not None:
        query = query.where(OutboxEvent.created_at >= event_filter.since)
    if event_filter.until is not None:
        query = query.where(OutboxEvent.created_at < event_filter.until)
    if event_filter.types:
        query = query.where(OutboxEvent.type.in_(sorted(event_filter.types)))
    if event_filter.subject is not None:
        query = query.where(OutboxEvent.subject == event_filter.subject)
    if event_filter.correlation_id is not None:
        query = query.where(OutboxEvent.correlation_id == event_filter.correlation_id)
    return [(outbox_id, event_type) for outbox_id, event_type in session.execute(query)]


def registered_subscribers(session: Session) -> dict[str, frozenset[str]]:
    """Return the subscribers registered with the database bus and their event types."""
    rows = session.scalars(select(EventSubscription))
    return {row.name: frozenset(row.types) for row in rows}


def replay_events(
    session: Session,
    events: Sequence[tuple[int, str]],
    subscribers: Mapping[str, frozenset[str]],
    *,
    by: str,
    resend: Resend,
) -> ReplayCounts:
    """Send each of ``events`` (outbox id, type) again, through ``resend``, to each
    of ``subscribers`` (name, types) that takes its type, and count the outcomes.

    The open event dead letters of those events and subscribers are marked
    retried by ``by``.
    """
    counts = ReplayCounts()
    ids = [outbox_id for outbox_id, _ in events]
    query = select(OutboxEvent).where(OutboxEvent.id.in_(ids)).order_by(OutboxEvent.id)
    rows = list(session.scalars(query))
    for name, types in subscribers.items():
        chosen = [row for row in rows if row.type in types]
        for row, outcome in zip(chosen, resend(session, name, chosen), strict=True):
            counts.add(outcome, row.id)
            close_dead_letters(session, name, row.event_id, by)
    return counts
