"""Receipts: store a webhook durably, claim it for processing, record the outcome."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from entrepot.spokes.protocols import WebhookEnvelope
from entrepot.store.database import Database
from entrepot.store.inserts import insert_returning_id
from entrepot.store.tables import Receipt
from entrepot.store.types import utc_now


@dataclass(frozen=True)
class StoredReceipt:
    """The result of storing a webhook. For a duplicate, the ids are the original's."""

    receipt_id: int
    correlation_id: str
    duplicate: bool


def store_receipt(database: Database, envelope: WebhookEnvelope, body: bytes) -> StoredReceipt:
    """Store the raw body and headers in one committed transaction."""
    return database.write(lambda session: add_receipt(session, envelope, body))


def add_receipt(session: Session, envelope: WebhookEnvelope, body: bytes) -> StoredReceipt:
    """Insert a receipt in the session's transaction.

    A repeated delivery (same webhook id) or a repeated event (same event id for the
    same topic) violates a unique key, so the insert does nothing. The repeat is then
    counted on the receipt it repeats, and nothing else is stored.
    """
    correlation_id = str(uuid.uuid4())
    values = {
        "correlation_id": correlation_id,
        "channel": envelope.channel,
        "account": envelope.account,
        "topic": envelope.topic,
        "webhook_id": envelope.webhook_id,
        "event_id": envelope.event_id,
        "headers": dict(envelope.headers),
        "body": body,
        "received_at": utc_now(),
        "duplicate_count": 0,
        "status": "received",
        "attempts": 0,
        "replay": False,
    }
    inserted = insert_returning_id(session, Receipt.__table__, values)  # type: ignore[arg-type]
    if inserted is None:
        return _count_duplicate(session, envelope)
    return StoredReceipt(inserted, correlation_id, duplicate=False)


def _count_duplicate(session: Session, envelope: WebhookEnvelope) -> StoredReceipt:
    same_delivery = and_(
        Receipt.webhook_id.is_not(None), Receipt.webhook_id == envelope.webhook_id
    )
    same_event = and_(
        Receipt.event_id.is_not(None),
        Receipt.event_id == envelope.event_id,
        Receipt.topic == envelope.topic,
    )
    original = session.scalars(
        select(Receipt)
        .where(Receipt.channel == envelope.channel, Receipt.account == envelope.account)
        .where(or_(same_delivery, same_event))
        .order_by(Receipt.id)
        .limit(1)
    ).one()
    original.duplicate_count += 1
    return StoredReceipt(original.id, original.correlation_id, duplicate=True)


def claim_receipts(
    session: Session, owner: str, lease_seconds: float, limit: int
) -> list[Receipt]:
    """Take up to ``limit`` receipts to process, oldest first.

    A receipt is free when it is waiting, or when it is processing under a lease
    that ran out because its worker died. One UPDATE claims them, so two workers
    never take the same receipt.
    """
    now = utc_now()
    free = (
        select(Receipt.id)
        .where(
            or_(
                Receipt.status == "received",
                and_(Receipt.status == "processing", Receipt.lease_expires_at < now),
            )
        )
        .order_by(Receipt.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed = session.scalars(
        update(Receipt)
        .where(Receipt.id.in_(free.scalar_subquery()))
        .values(
            status="processing",
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Receipt.attempts + 1,
        )
        .returning(Receipt)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted(claimed, key=lambda receipt: receipt.id)


def finish_receipt(
    session: Session,
    receipt: Receipt,
    status: str,
    *,
    outcome: str | None = None,
    error: str | None = None,
    order_id: int | None = None,
) -> None:
    """Record how processing ended and release the lease."""
    receipt.status = status
    receipt.outcome = outcome
    receipt.error = error
    receipt.replay = False
    receipt.lease_owner = None
    receipt.lease_expires_at = None
    receipt.processed_at = utc_now()
    if order_id is not None:
        receipt.order_id = order_id


def request_replay(session: Session, receipt_id: int) -> None:
    """Queue a receipt to be processed again, applying it even at the same version."""
    session.execute(
        update(Receipt)
        .where(Receipt.id == receipt_id)
        .values(status="received", replay=True, lease_owner=None, lease_expires_at=None)
    )


def renew_receipt_leases(
    session: Session, receipt_ids: list[int], owner: str, lease_seconds: float
) -> int:
    """Extend the leases of receipts that ``owner`` still processes; returns how many."""
    result = session.execute(
        update(Receipt)
        .where(Receipt.id.in_(receipt_ids), Receipt.lease_owner == owner)
        .where(Receipt.status == "processing")
        .values(lease_expires_at=utc_now() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))
