"""The bus on the store's own database: embedded on SQLite, or shared on PostgreSQL.

Publishing fans an outbox event out into one delivery per subscription that takes
its type. A subscriber claims due deliveries under a lease, as target workers
claim theirs, and never more than one open delivery of a subject at a time, so
the events of one subject are handled in order and different subjects in
parallel. On PostgreSQL the claims skip rows that other workers hold locked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeGuard

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session, aliased

from entrepot.events.bus import Handler, Subscription
from entrepot.events.envelope import Event
from entrepot.spokes.failures import DeliveryFailure, PermanentFailure, RetryLater
from entrepot.store.database import Database
from entrepot.store.inserts import insert_if_absent
from entrepot.store.tables import (
    EventDeadLetter,
    EventDelivery,
    EventSubscription,
    OutboxEvent,
)
from entrepot.store.types import utc_now

log = logging.getLogger(__name__)

PENDING = "pending"
IN_FLIGHT = "in_flight"
DONE = "done"
DEAD = "dead"
OPEN = (PENDING, IN_FLIGHT)


@dataclass(frozen=True)
class ClaimedEvent:
    delivery_id: int
    attempts: int
    event: Event


class DatabaseBus:
    """An `EventBus` whose streams are tables of the store."""

    def __init__(
        self,
        database: Database,
        *,
        owner: str,
        poll_interval: float = 0.2,
        claim_limit: int = 50,
    ) -> None:
        self._database = database
        self._owner = owner
        self._poll_interval = poll_interval
        self._claim_limit = claim_limit
        self._wake = asyncio.Event()

    async def connect(self) -> None:
        """Nothing to open: the tables come with the store's migrations."""

    async def close(self) -> None:
        """Nothing to close: the store belongs to the caller."""

    async def publish(self, events: Sequence[Event]) -> None:
        await asyncio.to_thread(self._database.write, lambda s: _fan_out(s, events))
        self._wake.set()

    async def register(self, subscription: Subscription) -> None:
        """Record the subscription, so publishing fans events out to it from now on."""
        await asyncio.to_thread(self._database.write, lambda s: _register(s, subscription))

    async def run_subscriber(
        self, subscription: Subscription, handler: Handler, stopping: Callable[[], bool]
    ) -> None:
        await self.register(subscription)
        log.info("Subscriber %s started.", subscription.name)
        while not stopping():
            # Taken before the claim, so the handlers' deadline comes before the lease
            # that the claim records runs out.
            deadline = asyncio.get_running_loop().time() + subscription.ack_wait_seconds
            claimed = await asyncio.to_thread(self._claim, subscription)
            if not claimed:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval)
                continue
            by_subject: dict[str, list[ClaimedEvent]] = defaultdict(list)
            for item in claimed:
                by_subject[item.event.subject].append(item)
            await asyncio.gather(
                *(
                    self._handle_in_order(subscription, handler, items, deadline)
                    for items in by_subject.values()
                )
            )
        log.info("Subscriber %s stopped.", subscription.name)

    async def _handle_in_order(
        self,
        subscription: Subscription,
        handler: Handler,
        items: list[ClaimedEvent],
        deadline: float,
    ) -> None:
        """Handle one subject's claimed events in order, each within the claim's lease.

        A handler still running at ``deadline`` is cancelled and its event put back
        for a later attempt, because another consumer may claim it once the lease
        has run out. NOTE: work the handler runs in a thread goes on after the
        cancel, so only the subscriber's inbox keeps its effect to one.
        """
        for item in items:
            failure: DeliveryFailure | None = None
            try:
                async with asyncio.timeout_at(deadline):
                    await handler(item.event)
            except DeliveryFailure as exc:
                failure = exc
            except TimeoutError:
                failure = RetryLater(
                    f"the handler did not finish within {subscription.ack_wait_seconds} s"
                )
            except Exception as exc:
                log.exception(
                    "Subscriber %s failed on event %s.", subscription.name, item.event.id
                )
                failure = RetryLater(f"the handler failed: {exc!r}")
            await asyncio.to_thread(self._record, subscription, item, failure)
            if failure is not None:
                # The rest of this subject waits behind the failed event, unattempted.
                rest = items[items.index(item) + 1 :]
                await asyncio.to_thread(self._release, rest)
                return

    def _claim(self, subscription: Subscription) -> list[ClaimedEvent]:
        return self._database.write(
            lambda session: claim_events(session, subscription, self._owner, self._claim_limit)
        )

    def _release(self, items: list[ClaimedEvent]) -> None:
        if items:
            self._database.write(lambda session: release(session, items))

    def _record(
        self, subscription: Subscription, item: ClaimedEvent, failure: DeliveryFailure | None
    ) -> None:
        self._database.write(lambda session: record_outcome(session, subscription, item, failure))


def _fan_out(session: Session, events: Sequence[Event]) -> None:
    subscriptions = list(session.scalars(select(EventSubscription)))
    ids = [event.id for event in events]
    rows = {
        row.event_id: row
        for row in session.scalars(select(OutboxEvent).where(OutboxEvent.event_id.in_(ids)))
    }
    now = utc_now()
    for event in events:
        row = rows.get(event.id)
        if row is None:
            log.warning("Event %s is not in the outbox; the database bus skips it.", event.id)
            continue
        for subscription in subscriptions:
            if event.type not in subscription.types:
                continue
            insert_if_absent(
                session,
                EventDelivery.__table__,  # type: ignore[arg-type]
                {
                    "subscriber": subscription.name,
                    "outbox_id": row.id,
                    "subject": row.subject,
                    "status": PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                },
                ["subscriber", "outbox_id"],
            )


def _register(session: Session, subscription: Subscription) -> None:
    row = session.get(EventSubscription, subscription.name, with_for_update=True)
    types = sorted(subscription.types)
    if row is None:
        session.add(EventSubscription(name=subscription.name, types=types, created_at=utc_now()))
    elif sorted(row.types) != types:
        row.types = types


def claim_events(
    session: Session, subscription: Subscription, owner: str, limit: int
) -> list[ClaimedEvent]:
    """Take due deliveries of ``subscription``, oldest first, the first open one of each
    subject only; those whose worker died (lease run out) count as due."""
    now = utc_now()
    earlier = aliased(EventDelivery)
    blocked = exists().where(
        earlier.subscriber == EventDelivery.subscriber,
        earlier.subject == EventDelivery.subject,
        earlier.id != EventDelivery.id,
        or_(
            and_(earlier.status == IN_FLIGHT, earlier.lease_expires_at >= now),
            and_(earlier.status.in_(OPEN), earlier.outbox_id < EventDelivery.outbox_id),
        ),
    )
    due = or_(
        and_(EventDelivery.status == IN_FLIGHT, EventDelivery.lease_expires_at < now),
        and_(EventDelivery.status == PENDING, EventDelivery.next_attempt_at <= now),
    )
    rows = session.execute(
        select(EventDelivery, OutboxEvent.envelope)
        .join(OutboxEvent, OutboxEvent.id == EventDelivery.outbox_id)
        .where(EventDelivery.subscriber == subscription.name, due, ~blocked)
        .order_by(EventDelivery.outbox_id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=EventDelivery)
    ).all()
    lease = now + timedelta(seconds=subscription.ack_wait_seconds)
    claimed = []
    for delivery, envelope in rows:
        delivery.status = IN_FLIGHT
        delivery.lease_owner = owner
        delivery.lease_expires_at = lease
        delivery.attempts += 1
        claimed.append(
            ClaimedEvent(delivery.id, delivery.attempts, Event.model_validate(envelope))
        )
    return claimed


def record_outcome(
    session: Session,
    subscription: Subscription,
    item: ClaimedEvent,
    failure: DeliveryFailure | None,
) -> None:
    """Close the delivery, put it back for a later attempt, or dead-letter it."""
    delivery = session.get(EventDelivery, item.delivery_id, with_for_update=True)
    if not _still_claimed(delivery, item):
        return
    now = utc_now()
    delivery.lease_owner = None
    delivery.lease_expires_at = None
    if failure is None:
        delivery.status, delivery.finished_at = DONE, now
        return
    delivery.last_error = failure.reason
    retry = isinstance(failure, RetryLater) and item.attempts < subscription.max_deliveries
    if retry:
        delay = getattr(failure, "retry_after", None) or subscription.redeliver_after_seconds
        delivery.status = PENDING
        delivery.next_attempt_at = now + timedelta(seconds=delay)
        return
    delivery.status, delivery.finished_at = DEAD, now
    _dead_letter(session, subscription, item, failure)


def release(session: Session, items: Sequence[ClaimedEvent]) -> None:
    """Put claimed deliveries back as they were, their attempt given back."""
    for item in items:
        delivery = session.get(EventDelivery, item.delivery_id, with_for_update=True)
        if not _still_claimed(delivery, item):
            continue
        delivery.status = PENDING
        delivery.attempts -= 1
        delivery.lease_owner = None
        delivery.lease_expires_at = None


def _still_claimed(delivery: EventDelivery | None, item: ClaimedEvent) -> TypeGuard[EventDelivery]:
    """Tell whether ``item``'s claim is the delivery's current one. A claim whose
    lease ran out may have been taken over since, which counted another attempt."""
    return (
        delivery is not None
        and delivery.status == IN_FLIGHT
        and delivery.attempts == item.attempts
    )


def _dead_letter(
    session: Session, subscription: Subscription, item: ClaimedEvent, failure: DeliveryFailure
) -> None:
    kind = "refused" if isinstance(failure, PermanentFailure) else "attempts exhausted"
    reason = f"{kind} after {item.attempts} deliveries: {failure.reason}"
    session.add(
        EventDeadLetter(
            subscriber=subscription.name,
            event_id=item.event.id,
            subject=item.event.subject,
            type=item.event.type,
            envelope=item.event.model_dump(mode="json", exclude_none=True),
            reason=reason,
            attempts=item.attempts,
            created_at=utc_now(),
        )
    )
    log.error(
        "Event %s (%s, %s) dead-lettered for subscriber %s: %s",
        item.event.id,
        item.event.type,
        item.event.correlationid,
        subscription.name,
        reason,
    )
