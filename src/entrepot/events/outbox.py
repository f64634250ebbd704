"""The transactional outbox: events are written in the transaction of their change.

A state change and the event it causes commit together or not at all, so a crash
between the change and the bus cannot lose the event: the relay finds it
unpublished and publishes it. Events of one subject are numbered in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from entrepot.events.envelope import Event, order_subject
from entrepot.store.tables import Order, OutboxEvent
from entrepot.store.types import utc_now


def append(session: Session, event: Event) -> OutboxEvent:
    """Add ``event`` to the outbox in the session's transaction."""
    last = session.scalar(
        select(func.max(OutboxEvent.subject_seq)).where(OutboxEvent.subject == event.subject)
    )
    row = OutboxEvent(
        event_id=event.id,
        subject=event.subject,
        subject_seq=(last or 0) + 1,
        type=event.type,
        correlation_id=event.correlationid,
        envelope=event.model_dump(mode="json", exclude_none=True),
        created_at=utc_now(),
    )
    session.add(row)
    session.flush()
    return row


def order_event(
    order: Order,
    event_type: str,
    *,
    correlation_id: str | None = None,
    detail: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Event:
    """Build an event about ``order`` whose data is the order as stored now."""
    data: dict[str, Any] = {
        "channel": order.channel,
        "account": order.account,
        "channel_order_id": order.channel_order_id,
        "order_number": order.order_number,
        "state": order.state,
        "target": order.target,
        "erp_id": order.erp_id,
        "detail": detail,
        "order": order.canonical,
        "total": ((order.canonical or {}).get("totals") or {}).get("total"),
        **(extra or {}),
    }
    version = order.source_updated_at.isoformat() if order.source_updated_at else None
    return Event(
        type=event_type,
        subject=order_subject(order.channel, order.account, order.channel_order_id),
        data=data,
        correlationid=correlation_id or order.correlation_id,
        causationid=order.correlation_id,
        sourceversion=version,
    )


def emit_for_order(
    session: Session,
    order: Order,
    event_type: str,
    *,
    correlation_id: str | None = None,
    detail: str | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write an event about ``order`` to the outbox in the session's transaction."""
    append(
        session,
        order_event(order, event_type, correlation_id=correlation_id, detail=detail, extra=extra),
    )


def unpublished(session: Session, limit: int) -> list[OutboxEvent]:
    """Return the oldest events not yet handed to the bus."""
    return list(
        session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.published_at.is_(None))
            .order_by(OutboxEvent.id)
            .limit(limit)
        )
    )


def mark_published(session: Session, ids: Sequence[int]) -> None:
    session.execute(
        update(OutboxEvent).where(OutboxEvent.id.in_(list(ids))).values(published_at=utc_now())
    )
