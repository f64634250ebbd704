"""Deliveries: the durable queue of messages per target, with leases.

A delivery is claimed under a lease that its worker renews while the request
runs. A worker that dies stops renewing. Once the lease has run out, another
worker claims the delivery again and marks it ``ambiguous``, because the dead
worker's request may have reached the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from entrepot.store.inserts import insert_if_absent
from entrepot.store.tables import Delivery
from entrepot.store.types import utc_now

PENDING = "pending"
IN_FLIGHT = "in_flight"
DONE = "done"
NOTHING_TO_DO = "nothing_to_do"
DEAD = "dead"
OPEN_STATUSES = (PENDING, IN_FLIGHT)


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery taken by one worker; ``attempts`` counts this attempt."""

    id: int
    target: str
    order_id: int
    action: str
    attempts: int
    ambiguous: bool
    correlation_id: str
    lease_owner: str


def enqueue(
    session: Session, target: str, order_id: int, action: str, correlation_id: str
) -> bool:
    """Queue a delivery unless one is already pending for the same order and action.

    A pending delivery sends the order as it is when it is sent, so a newer version
    folds into it. Returns whether a new delivery was queued.
    """
    now = utc_now()
    return insert_if_absent(
        session,
        Delivery.__table__,  # type: ignore[arg-type]
        {
            "target": target,
            "order_id": order_id,
            "action": action,
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "ambiguous": False,
            "correlation_id": correlation_id,
            "created_at": now,
            "updated_at": now,
        },
        ["target", "order_id", "action"],
        conflict_where=text("status = 'pending'"),
    )


def claim_batch(
    session: Session, target: str, owner: str, lease_seconds: float, limit: int
) -> list[ClaimedDelivery]:
    """Take up to ``limit`` due deliveries of ``target``, oldest first.

    Deliveries of one order go one at a time, in the order they were queued, so a
    cancellation never overtakes the order it cancels. Deliveries whose worker
    died (lease run out) come first, then pending ones that are due.
    """
    now = utc_now()
    earlier = aliased(Delivery)
    blocked = exists().where(
        earlier.order_id == Delivery.order_id,
        earlier.target == Delivery.target,
        earlier.id != Delivery.id,
        or_(
            and_(earlier.status == IN_FLIGHT, earlier.lease_expires_at >= now),
            and_(earlier.status.in_(OPEN_STATUSES), earlier.id < Delivery.id),
        ),
    )
    # Two queries, each of which an index on (target, status, next_attempt_at) serves,
    # instead of one with an OR that makes SQLite scan the table.
    kinds_of_free = (
        and_(Delivery.status == IN_FLIGHT, Delivery.lease_expires_at < now),
        and_(Delivery.status == PENDING, Delivery.next_attempt_at <= now),
    )
    claimed: list[ClaimedDelivery] = []
    for free in kinds_of_free:
        if len(claimed) >= limit:
            break
        candidates = session.scalars(
            select(Delivery)
            .where(Delivery.target == target, free, ~blocked)
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(limit - len(claimed))
            .with_for_update(skip_locked=True)
        ).all()
        claimed += [_take(delivery, owner, now, lease_seconds) for delivery in candidates]
    return claimed


def _take(delivery: Delivery, owner: str, now: datetime, lease_seconds: float) -> ClaimedDelivery:
    if delivery.status == IN_FLIGHT:
        # The worker that held it died with its request possibly sent.
        delivery.ambiguous = True
    delivery.status = IN_FLIGHT
    delivery.lease_owner = owner
    delivery.lease_expires_at = now + timedelta(seconds=lease_seconds)
    delivery.attempts += 1
    delivery.updated_at = now
    return ClaimedDelivery(
        id=delivery.id,
        target=delivery.target,
        order_id=delivery.order_id,
        action=delivery.action,
        attempts=delivery.attempts,
        ambiguous=delivery.ambiguous,
        correlation_id=delivery.correlation_id,
        lease_owner=owner,
    )


def renew_lease(session: Session, claimed: ClaimedDelivery, lease_seconds: float) -> bool:
    """Extend the lease; returns False if another worker has taken the delivery."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.id == claimed.id, Delivery.lease_owner == claimed.lease_owner)
        .where(Delivery.status == IN_FLIGHT)
        .values(lease_expires_at=utc_now() + timedelta(seconds=lease_seconds))
    )
    return bool(getattr(result, "rowcount", 0))


def owned(session: Session, claimed: ClaimedDelivery) -> Delivery | None:
    """Load the delivery if this worker still holds its lease."""
    delivery = session.get(Delivery, claimed.id, with_for_update=True)
    if delivery is None or delivery.lease_owner != claimed.lease_owner:
        return None
    if delivery.status != IN_FLIGHT:
        return None
    return delivery


def finish(delivery: Delivery, status: str, outcome: str) -> None:
    """Close the delivery as done, nothing_to_do or dead."""
    now = utc_now()
    delivery.status = status
    delivery.outcome = outcome
    delivery.lease_owner = None
    delivery.lease_expires_at = None
    delivery.finished_at = now
    delivery.updated_at = now


def reschedule(
    session: Session,
    delivery: Delivery,
    at: datetime,
    *,
    error: str | None,
    ambiguous: bool,
    count_attempt: bool,
) -> None:
    """Put the delivery back in the queue until ``at``.

    ``count_attempt`` false gives the attempt back, because a closed or throttled
    target tells nothing about the message. If a newer pending delivery of
    the same order and action exists, this one folds into it instead.
    """
    if not count_attempt:
        delivery.attempts -= 1
    delivery.last_error = error if error is not None else delivery.last_error
    delivery.ambiguous = delivery.ambiguous or ambiguous
    delivery.lease_owner = None
    delivery.lease_expires_at = None
    delivery.next_attempt_at = at
    delivery.updated_at = utc_now()
    try:
        with session.begin_nested():
            delivery.status = PENDING
            session.flush()
    except IntegrityError:
        _fold_into_pending(session, delivery, at)


def _fold_into_pending(session: Session, delivery: Delivery, at: datetime) -> None:
    waiting = session.scalars(
        select(Delivery).where(
            Delivery.target == delivery.target,
            Delivery.order_id == delivery.order_id,
            Delivery.action == delivery.action,
            Delivery.status == PENDING,
        )
    ).one()
    waiting.ambiguous = waiting.ambiguous or delivery.ambiguous
    waiting.attempts = max(waiting.attempts, delivery.attempts)
    waiting.next_attempt_at = max(waiting.next_attempt_at, at)
    waiting.last_error = delivery.last_error
    finish(delivery, NOTHING_TO_DO, f"folded into delivery {waiting.id}")


def cancel_pending(session: Session, order_id: int, action: str, outcome: str) -> int:
    """Close the order's pending deliveries of ``action``; returns how many."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.order_id == order_id, Delivery.action == action)
        .where(Delivery.status == PENDING)
        .values(status=NOTHING_TO_DO, outcome=outcome, finished_at=utc_now())
    )
    return int(getattr(result, "rowcount", 0))


def ever_attempted(session: Session, order_id: int) -> bool:
    """Tell whether any delivery of the order has started a request."""
    return (
        session.scalars(
            select(Delivery.id).where(Delivery.order_id == order_id, Delivery.attempts > 0)
        ).first()
        is not None
    )


def end_leases(session: Session, claimed: list[ClaimedDelivery]) -> None:
    """End the leases of deliveries whose requests were stopped midway, so that the
    next claim takes them at once and marks them ambiguous."""
    past = utc_now() - timedelta(seconds=1)
    for item in claimed:
        session.execute(
            update(Delivery)
            .where(Delivery.id == item.id, Delivery.lease_owner == item.lease_owner)
            .where(Delivery.status == IN_FLIGHT)
            .values(lease_expires_at=past)
        )
