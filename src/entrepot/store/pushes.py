"""Channel pushes: the durable queue of changes to send back to channels, with leases.

An inventory level waiting to be sent is replaced by a newer one for the same item
and location, so a burst of stock changes sends the latest quantity once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, text, update
from sqlalchemy.orm import Session

from entrepot.store.inserts import insert_if_absent
from entrepot.store.tables import ChannelPush
from entrepot.store.types import utc_now

PENDING = "pending"
IN_FLIGHT = "in_flight"
DONE = "done"
DEAD = "dead"

FULFILLMENT = "fulfillment"
INVENTORY = "inventory"


@dataclass(frozen=True)
class ClaimedPush:
    """A push taken by one worker; ``attempts`` counts this attempt."""

    id: int
    channel: str
    account: str
    kind: str
    key: str
    payload: dict[str, Any]
    order_id: int | None
    correlation_id: str | None
    attempts: int
    lease_owner: str


def enqueue_push(
    session: Session,
    channel: str,
    account: str,
    kind: str,
    key: str,
    payload: dict[str, Any],
    *,
    order_id: int | None = None,
    correlation_id: str | None = None,
) -> bool:
    """Queue a push, or put ``payload`` on the one still pending for the same key.

    Returns whether a new push was queued.
    """
    now = utc_now()
    values = {
        "channel": channel,
        "account": account,
        "kind": kind,
        "key": key,
        "payload": payload,
        "order_id": order_id,
        "correlation_id": correlation_id,
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }
    inserted = insert_if_absent(
        session,
        ChannelPush.__table__,  # type: ignore[arg-type]
        values,
        ["channel", "account", "kind", "key"],
        conflict_where=text("status = 'pending'"),
    )
    if not inserted:
        session.execute(
            update(ChannelPush)
            .where(ChannelPush.channel == channel, ChannelPush.account == account)
            .where(ChannelPush.kind == kind, ChannelPush.key == key)
            .where(ChannelPush.status == PENDING)
            .values(payload=payload, updated_at=now)
        )
    return inserted


def claim_pushes(
    session: Session, owner: str, lease_seconds: float, limit: int
) -> list[ClaimedPush]:
    """Take up to ``limit`` due pushes, those of dead workers first."""
    now = utc_now()
    free = or_(
        and_(ChannelPush.status == IN_FLIGHT, ChannelPush.lease_expires_at < now),
        and_(ChannelPush.status == PENDING, ChannelPush.next_attempt_at <= now),
    )
    rows = session.scalars(
        select(ChannelPush)
        .where(free)
        .order_by(ChannelPush.next_attempt_at, ChannelPush.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    claimed = []
    for row in rows:
        row.status = IN_FLIGHT
        row.lease_owner = owner
        row.lease_expires_at = now + timedelta(seconds=lease_seconds)
        row.attempts += 1
        row.updated_at = now
        claimed.append(
            ClaimedPush(
                id=row.id,
                channel=row.channel,
                account=row.account,
                kind=row.kind,
                key=row.key,
                payload=dict(row.payload),
                order_id=row.order_id,
                correlation_id=row.correlation_id,
                attempts=row.attempts,
                lease_owner=owner,
            )
        )
    return claimed


def owned_push(session: Session, claimed: ClaimedPush) -> ChannelPush | None:
    row = session.get(ChannelPush, claimed.id, with_for_update=True)
    if row is None or row.lease_owner != claimed.lease_owner or row.status != IN_FLIGHT:
        return None
    return row


def finish_push(row: ChannelPush, status: str, outcome: str) -> None:
    now = utc_now()
    row.status = status
    row.outcome = outcome
    row.lease_owner = None
    row.lease_expires_at = None
    row.finished_at = now
    row.updated_at = now


def reschedule_push(
    session: Session, row: ChannelPush, at: datetime, error: str, *, count_attempt: bool
) -> None:
    """Put the push back until ``at``; a newer pending push of the same key wins."""
    if not count_attempt:
        row.attempts -= 1
    row.last_error = error
    row.lease_owner = None
    row.lease_expires_at = None
    row.next_attempt_at = at
    row.updated_at = utc_now()
    newer = _pending_of_same_key(session, row)
    if newer is not None:
        finish_push(row, DONE, f"superseded by push {newer}")
        return
    row.status = PENDING


class PushNotRetryableError(Exception):
    """Raised for a push that does not exist or has not failed."""


def list_pushes(session: Session, *, status: str | None, limit: int = 100) -> list[ChannelPush]:
    """Return the newest pushes, of ``status`` when given."""
    query = select(ChannelPush).order_by(ChannelPush.id.desc()).limit(limit)
    if status is not None:
        query = query.where(ChannelPush.status == status)
    return list(session.scalars(query))


def retry_push(session: Session, push_id: int, by: str) -> None:
    """Send a push that failed for good once more, from its first attempt.

    A newer push of the same key waiting already makes this one unneeded; it is then
    closed as superseded.
    """
    row = session.get(ChannelPush, push_id, with_for_update=True)
    if row is None or row.status != DEAD:
        state = "not found" if row is None else f"is {row.status}, not dead"
        raise PushNotRetryableError(f"push {push_id} {state}")
    now = utc_now()
    row.attempts = 0
    row.next_attempt_at = now
    row.updated_at = now
    row.finished_at = None
    row.outcome = f"retried by {by}"
    waiting = _pending_of_same_key(session, row)
    if waiting is not None:
        finish_push(row, DONE, f"superseded by push {waiting}; retry by {by} not needed")
        return
    row.status = PENDING


def _pending_of_same_key(session: Session, row: ChannelPush) -> int | None:
    """Return the id of another pending push of the row's channel, account, kind and key."""
    found: int | None = session.scalars(
        select(ChannelPush.id).where(
            ChannelPush.channel == row.channel,
            ChannelPush.account == row.account,
            ChannelPush.kind == row.kind,
            ChannelPush.key == row.key,
            ChannelPush.status == PENDING,
            ChannelPush.id != row.id,
        )
    ).first()
    return found
