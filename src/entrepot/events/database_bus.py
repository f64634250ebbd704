"""The bus on the store's own database: embedded on SQLite, or shared on PostgreSQL.

Publishing fans an outbox event out into one delivery per subscription that takes
its type. A subscriber claims due deliveries under a lease, as target workers
claim theirs, and never more than one open delivery of a subject at a time, so
the events of one subject are handled in order and different subjects in
parallel. On PostgreSQL the claims skip rows that other workers hold locked.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from asyncio import FIRST_COMPLETED
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeGuard

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from entrepot.events.bus import MAX_REDELIVER_DELAY_SECONDS, Handler, Subscription
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
    """A delivery that this worker claimed. ``claim`` is the delivery's claim count
    at that time, which distinguishes this claim from any later one."""

    delivery_id: int
    attempts: int
    event: Event
    claim: int


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

    def wake(self) -> None:
        """Make the subscribers of this bus claim now instead of at their next poll."""
        self._wake.set()

    async def register(self, subscription: Subscription) -> None:
        """Record the subscription, so publishing fans events out to it from now on."""
        await asyncio.to_thread(self._database.write, lambda s: _register(s, subscription))

    async def run_subscriber(
        self, subscription: Subscription, handler: Handler, stopping: Callable[[], bool]
    ) -> None:
        """Claim and handle the subscription's events until ``stopping()``.

        Claims go on while earlier ones are handled, up to twice
        ``max_concurrency`` events in hand (``claim_limit`` without it), so one slow
        call does not hold up the events of other subjects.
        """
        await self.register(subscription)
        log.info("Subscriber %s started.", subscription.name)
        concurrency = subscription.max_concurrency
        slots = asyncio.Semaphore(concurrency or self._claim_limit)
        capacity = 2 * concurrency if concurrency else self._claim_limit
        in_hand: dict[int, ClaimedEvent] = {}
        batches: set[asyncio.Task[None]] = set()
        renewal = asyncio.create_task(self._renew_leases(subscription, in_hand))
        try:
            while not stopping():
                room = min(capacity - len(in_hand), self._claim_limit)
                claimed = await asyncio.to_thread(self._claim, subscription, room) if room else []
                if not claimed:
                    await self._wait_for_work(batches)
                    continue
                in_hand.update((item.delivery_id, item) for item in claimed)
                batch = self._handle_claimed(
                    subscription, handler, claimed, slots, in_hand, stopping
                )
                batches.add(asyncio.create_task(batch))
                _collect_finished(batches)
            await asyncio.gather(*batches)
        finally:
            for task in [*batches, renewal]:
                task.cancel()
            await asyncio.gather(*batches, renewal, return_exceptions=True)
        log.info("Subscriber %s stopped.", subscription.name)

    async def _wait_for_work(self, batches: set[asyncio.Task[None]]) -> None:
        """Wait for a wake-up, a batch to finish, or the poll interval; re-raise what
        a finished batch raised."""
        self._wake.clear()
        woken: asyncio.Task[bool] = asyncio.create_task(self._wake.wait())
        waited: list[asyncio.Future[Any]] = [woken, *batches]
        await asyncio.wait(waited, timeout=self._poll_interval, return_when=FIRST_COMPLETED)
        woken.cancel()
        _collect_finished(batches)

    async def _handle_claimed(
        self,
        subscription: Subscription,
        handler: Handler,
        claimed: list[ClaimedEvent],
        slots: asyncio.Semaphore,
        in_hand: dict[int, ClaimedEvent],
        stopping: Callable[[], bool],
    ) -> None:
        """Handle one claim's events, each subject in order. Each event leaves
        ``in_hand`` once recorded. Once ``stopping()``, the events not started yet go
        back unattempted."""
        by_subject: dict[str, list[ClaimedEvent]] = defaultdict(list)
        for item in claimed:
            by_subject[item.event.subject].append(item)
        await asyncio.gather(
            *(
                self._handle_in_order(subscription, handler, items, slots, in_hand, stopping)
                for items in by_subject.values()
            )
        )

    async def _renew_leases(
        self, subscription: Subscription, in_hand: dict[int, ClaimedEvent]
    ) -> None:
        """Extend the leases of the deliveries in hand every third of ``ack_wait``."""
        while True:
            await asyncio.sleep(subscription.ack_wait_seconds / 3)
            items = list(in_hand.values())
            if not items:
                continue
            try:
                renew = functools.partial(
                    renew_leases, items=items, owner=self._owner, subscription=subscription
                )
                await asyncio.to_thread(self._database.write, renew)
            except Exception as error:
                # The leases may run out, and another worker then takes the events
                # over. Recording an outcome checks that the claim is still this one.
                log.warning(
                    "Subscriber %s could not renew the leases of %d events: %r",
                    subscription.name,
                    len(items),
                    error,
                )

    async def _handle_in_order(
        self,
        subscription: Subscription,
        handler: Handler,
        items: list[ClaimedEvent],
        slots: asyncio.Semaphore,
        in_hand: dict[int, ClaimedEvent],
        stopping: Callable[[], bool],
    ) -> None:
        """Handle one subject's claimed events in order, each call within ``ack_wait``
        from its start, once a slot is free.

        A handler still running after ``ack_wait`` is cancelled and its event put
        back for a later attempt. NOTE: work the handler runs in a thread goes on
        after the cancel, so only the subscriber's inbox keeps its effect to one.
        """
        for index, item in enumerate(items):
            async with slots:
                stopped = stopping()
                if not stopped:
                    failure = await self._call(subscription, handler, item)
            if stopped:
                await self._give_back(items[index:], in_hand)
                return
            await asyncio.to_thread(self._record, subscription, item, failure)
            in_hand.pop(item.delivery_id, None)
            if failure is not None:
                # The rest of this subject waits behind the failed event, unattempted.
                await self._give_back(items[index + 1 :], in_hand)
                return

    async def _give_back(
        self, items: list[ClaimedEvent], in_hand: dict[int, ClaimedEvent]
    ) -> None:
        await asyncio.to_thread(self._release, items)
        for item in items:
            in_hand.pop(item.delivery_id, None)

    async def _call(
        self,
        subscription: Subscription,
        handler: Handler,
        item: ClaimedEvent,
    ) -> DeliveryFailure | None:
        """Run the handler on one event; return its failure, or None on success."""
        try:
            async with asyncio.timeout(subscription.ack_wait_seconds):
                await handler(item.event)
        except DeliveryFailure as exc:
            return exc
        except TimeoutError:
            return RetryLater(
                f"the handler did not finish within {subscription.ack_wait_seconds} s"
            )
        except Exception as exc:
            log.exception("Subscriber %s failed on event %s.", subscription.name, item.event.id)
            return RetryLater(f"the handler failed: {exc!r}")
        return None

    def _claim(self, subscription: Subscription, limit: int) -> list[ClaimedEvent]:
        return self._database.write(
            lambda session: claim_events(session, subscription, self._owner, limit)
        )

    def _release(self, items: list[ClaimedEvent]) -> None:
        if items:
            self._database.write(lambda session: release(session, items))

    def _record(
        self, subscription: Subscription, item: ClaimedEvent, failure: DeliveryFailure | None
    ) -> None:
        self._database.write(lambda session: record_outcome(session, subscription, item, failure))


def _collect_finished(batches: set[asyncio.Task[None]]) -> None:
    """Drop the finished batches, re-raising the first failure among them."""
    for task in [task for task in batches if task.done()]:
        batches.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


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
        if delivery.resend_requested:
            # The abandoned delivery was to be sent again: this claim is that resend.
            delivery.attempts, delivery.resend_requested = 0, False
        if delivery.status == IN_FLIGHT and delivery.attempts >= subscription.max_deliveries:
            _dead_letter_abandoned(session, subscription, delivery, Event.model_validate(envelope))
            continue
        delivery.status = IN_FLIGHT
        delivery.lease_owner = owner
        delivery.lease_expires_at = lease
        delivery.attempts += 1
        delivery.claims += 1
        event = Event.model_validate(envelope)
        claimed.append(ClaimedEvent(delivery.id, delivery.attempts, event, delivery.claims))
    return claimed


def renew_leases(
    session: Session, items: Sequence[ClaimedEvent], owner: str, subscription: Subscription
) -> None:
    """Extend by ``ack_wait`` from now the leases of ``items`` that ``owner`` holds.

    A lease that has run out stays so: the next event of its subject may have been
    claimed since, and a renewal would put two events of one subject in flight.
    """
    now = utc_now()
    session.execute(
        update(EventDelivery)
        .where(
            EventDelivery.id.in_([item.delivery_id for item in items]),
            EventDelivery.status == IN_FLIGHT,
            EventDelivery.lease_owner == owner,
            EventDelivery.lease_expires_at >= now,
        )
        .values(lease_expires_at=now + timedelta(seconds=subscription.ack_wait_seconds))
    )


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
    if delivery.resend_requested:
        _start_over(delivery, subscription, failure, now)
        return
    if failure is None:
        delivery.status, delivery.finished_at = DONE, now
        return
    if not is_registered(session, subscription.name):
        _drop_unsubscribed(session, delivery, item)
        return
    delivery.last_error = failure.reason
    retry = isinstance(failure, RetryLater) and item.attempts < subscription.max_deliveries
    if retry:
        delivery.status = PENDING
        delivery.next_attempt_at = now + timedelta(seconds=_delay(subscription, failure))
        return
    delivery.status, delivery.finished_at = DEAD, now
    _dead_letter(session, subscription, item, failure)


def _start_over(
    delivery: EventDelivery,
    subscription: Subscription,
    failure: DeliveryFailure | None,
    now: datetime,
) -> None:
    """Put back, with no attempts used, a delivery that a replay or a retry requested
    again while it was in flight. After a failure it waits as a retry would."""
    delay = 0.0 if failure is None else _delay(subscription, failure)
    delivery.status = PENDING
    delivery.attempts = 0
    delivery.resend_requested = False
    delivery.next_attempt_at = now + timedelta(seconds=delay)
    delivery.last_error = None if failure is None else failure.reason


def _delay(subscription: Subscription, failure: DeliveryFailure) -> float:
    """Seconds before the next attempt after ``failure``: its Retry-After, if any."""
    delay = getattr(failure, "retry_after", None) or subscription.redeliver_after_seconds
    return float(min(delay, MAX_REDELIVER_DELAY_SECONDS))


def _dead_letter_abandoned(
    session: Session, subscription: Subscription, delivery: EventDelivery, event: Event
) -> None:
    """Dead-letter a delivery whose last allowed attempt never finished."""
    delivery.status, delivery.finished_at = DEAD, utc_now()
    delivery.lease_owner = None
    delivery.lease_expires_at = None
    failure = RetryLater("the worker stopped or was killed during the last allowed delivery")
    item = ClaimedEvent(delivery.id, delivery.attempts, event, delivery.claims)
    _dead_letter(session, subscription, item, failure)


def release(session: Session, items: Sequence[ClaimedEvent]) -> None:
    """Put claimed deliveries back as they were, their attempt given back."""
    for item in items:
        delivery = session.get(EventDelivery, item.delivery_id, with_for_update=True)
        if not _still_claimed(delivery, item):
            continue
        if not is_registered(session, delivery.subscriber):
            _drop_unsubscribed(session, delivery, item)
            continue
        delivery.status = PENDING
        # A resend asked for during the claim is met by the next delivery.
        delivery.attempts = 0 if delivery.resend_requested else delivery.attempts - 1
        delivery.resend_requested = False
        delivery.lease_owner = None
        delivery.lease_expires_at = None


def is_registered(session: Session, subscriber: str) -> bool:
    """Tell whether ``subscriber`` is registered with the database bus."""
    return session.get(EventSubscription, subscriber) is not None


def _drop_unsubscribed(session: Session, delivery: EventDelivery, item: ClaimedEvent) -> None:
    """Delete a delivery that would wait again for a subscriber unsubscribed during
    its claim, as unsubscribing deleted its pending ones."""
    session.delete(delivery)
    log.info(
        "Event %s not sent again: subscriber %s was unsubscribed while it was in flight.",
        item.event.id,
        delivery.subscriber,
    )


def _still_claimed(delivery: EventDelivery | None, item: ClaimedEvent) -> TypeGuard[EventDelivery]:
    """Tell whether ``item``'s claim is the delivery's current one. A claim whose
    lease ran out may have been taken over since. The attempts cannot show it,
    because a replay sets them back to 0, so the claim count is compared."""
    return delivery is not None and delivery.status == IN_FLIGHT and delivery.claims == item.claim


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
