"""Sending outbox events again to one subscriber, on either bus.

A replay and a retried event dead letter both do it. On the database bus the
event's delivery to the subscriber goes back to pending with its attempts at 0,
or is created when the subscriber was added after the event. A delivery in flight
goes back to pending when it ends. On NATS the event is published again on the
subscriber's own resend subject, which only that subscriber handles. Either way
the subscriber's check of the event id makes an event it already handled have no
effect the second time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from entrepot.events.database_bus import IN_FLIGHT, PENDING, is_registered
from entrepot.events.envelope import Event
from entrepot.store.tables import EventDelivery, OutboxEvent
from entrepot.store.types import utc_now

if TYPE_CHECKING:
    from entrepot.events.nats_bus import NatsBus


class Redelivery(StrEnum):
    """The outcome of sending one event again to one subscriber."""

    RESET = "reset"
    CREATED = "created"
    IN_FLIGHT = "in_flight"
    PUBLISHED = "published"


class SubscriberNotConfiguredError(LookupError):
    """Raised when a resend names a subscriber that no configuration runs (and, on the
    database bus, that is not registered): its events would wait with no process to
    take them."""

    def __init__(self, subscriber: str) -> None:
        super().__init__(
            f"subscriber {subscriber!r} is not in [events.subscribers], so no worker "
            "would take its events; configure it again first"
        )
        self.subscriber = subscriber


class Resend(Protocol):
    def __call__(
        self, session: Session, subscriber: str, events: Sequence[OutboxEvent]
    ) -> list[Redelivery]:
        """Send ``events`` again to ``subscriber``, in order, within ``session``'s
        transaction, and return the outcome of each."""
        ...


def put_back(session: Session, subscriber: str, events: Sequence[OutboxEvent]) -> list[Redelivery]:
    """Resend on the database bus: put each delivery back to pending, or create it."""
    return [put_back_one(session, subscriber, event) for event in events]


def put_back_one(session: Session, subscriber: str, event: OutboxEvent) -> Redelivery:
    """Put the delivery of ``event`` to ``subscriber`` back to pending, with its
    attempts at 0, or create it. A delivery in flight is marked instead, and goes back
    to pending when it ends."""
    delivery = session.scalars(
        select(EventDelivery)
        .where(EventDelivery.subscriber == subscriber, EventDelivery.outbox_id == event.id)
        .with_for_update()
    ).one_or_none()
    now = utc_now()

    if delivery is None:
        session.add(
            EventDelivery(
                subscriber=subscriber,
                outbox_id=event.id,
                subject=event.subject,
                status=PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
        session.flush()
        return Redelivery.CREATED
    if delivery.status == IN_FLIGHT:
        # A worker has claimed it, so it goes back to pending once that delivery ends.
        delivery.resend_requested = True
        return Redelivery.IN_FLIGHT

    delivery.status = PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = now
    delivery.last_error = None
    delivery.finished_at = None
    return Redelivery.RESET


def _put_back_to_known(configured: frozenset[str]) -> Resend:
    """Return `put_back` for the subscribers in ``configured`` or registered with the
    database bus: a delivery for any other would wait with no worker to take it."""

    def resend(
        session: Session, subscriber: str, events: Sequence[OutboxEvent]
    ) -> list[Redelivery]:
        if subscriber not in configured and not is_registered(session, subscriber):
            raise SubscriberNotConfiguredError(subscriber)
        return put_back(session, subscriber, events)

    return resend


class NatsResend:
    """Resend on NATS: publish each event again on the subscriber's resend subject.

    Use it as a context manager, in a thread that runs no event loop. It connects
    ``bus`` at its first call, so that a retry of a dead letter that does not exist
    fails as not found even when the server is down, and keeps it open on an event
    loop of its own. All the events it sends share one key, so sending the same
    event to the same subscriber twice within the server's duplicate window stores
    it once. `RetryLater` comes out of a call when the server is unreachable or a
    publish fails.
    """

    def __init__(self, bus: NatsBus, *, configured: frozenset[str] | None = None) -> None:
        self.key = uuid.uuid4().hex
        self._bus = bus
        self._configured = configured
        self._runner = asyncio.Runner()
        self._connected = False

    def __enter__(self) -> NatsResend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if self._connected:
                self._runner.run(self._bus.close())
        finally:
            self._runner.close()

    def __call__(
        self, session: Session, subscriber: str, events: Sequence[OutboxEvent]
    ) -> list[Redelivery]:
        if self._configured is not None and subscriber not in self._configured:
            raise SubscriberNotConfiguredError(subscriber)
        envelopes = [Event.model_validate(event.envelope) for event in events]
        if not self._connected:
            self._runner.run(self._bus.connect())
            self._connected = True
        self._runner.run(self._bus.resend(subscriber, envelopes, key=self.key))
        return [Redelivery.PUBLISHED] * len(envelopes)


@contextmanager
def opened_resend(bus_url: str, configured: frozenset[str] | None = None) -> Iterator[Resend]:
    """Yield the resend of the bus that ``bus_url`` names (empty: the database bus).

    A resend to a subscriber outside ``configured`` raises
    `SubscriberNotConfiguredError`, on the database bus only when the subscriber is
    not registered with it either.
    """
    if not bus_url:
        yield put_back if configured is None else _put_back_to_known(configured)
        return
    from entrepot.events.nats_bus import NatsBus

    with NatsResend(NatsBus(bus_url), configured=configured) as resend:
        yield resend
