"""Dead letters: messages that wait for an operator, and what the operator did."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from entrepot.store.tables import DeadLetter
from entrepot.store.types import utc_now

OPEN = "open"
RETRIED = "retried"
DISCARDED = "discarded"
RESOLVED = "resolved"  # closed by entrepot once a later delivery succeeded
STATUSES = (OPEN, RETRIED, DISCARDED, RESOLVED)


class DeadLetterNotFoundError(LookupError):
    """Raised when no dead letter has the given id."""


class DeadLetterClosedError(ValueError):
    """Raised when a dead letter was already retried or discarded."""


def add_dead_letter(
    session: Session,
    *,
    correlation_id: str,
    stage: str,
    kind: str,
    receipt_id: int,
    reason: str,
    remedy: str | None = None,
    target: str | None = None,
    order_id: int | None = None,
    delivery_id: int | None = None,
    error_code: str | None = None,
) -> DeadLetter:
    """Store a dead letter. ``stage`` is intake or delivery; ``kind`` is permanent
    (the data was refused) or attempts_exhausted (every attempt failed)."""
    dead_letter = DeadLetter(
        correlation_id=correlation_id,
        stage=stage,
        kind=kind,
        target=target,
        receipt_id=receipt_id,
        order_id=order_id,
        delivery_id=delivery_id,
        reason=reason,
        remedy=remedy,
        error_code=error_code,
    )
    session.add(dead_letter)
    session.flush()
    return dead_letter


def get_open(session: Session, dead_letter_id: int) -> DeadLetter:
    """Load an open dead letter for an operator's action, locking it."""
    dead_letter = session.get(DeadLetter, dead_letter_id, with_for_update=True)
    if dead_letter is None:
        raise DeadLetterNotFoundError(f"dead letter {dead_letter_id} not found")
    if dead_letter.status != OPEN:
        raise DeadLetterClosedError(
            f"dead letter {dead_letter_id} was already {dead_letter.status} "
            f"by {dead_letter.resolved_by or 'an unknown operator'}"
        )
    return dead_letter


def resolve(dead_letter: DeadLetter, status: str, by: str) -> None:
    dead_letter.status = status
    dead_letter.resolved_by = by
    dead_letter.resolved_at = utc_now()


def list_dead_letters(
    session: Session, *, status: str | None = OPEN, limit: int = 100
) -> list[DeadLetter]:
    query = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
    if status is not None:
        query = query.where(DeadLetter.status == status)
    return list(session.scalars(query))


def resolve_for_order(session: Session, order_id: int, target: str, *, by: str) -> int:
    """Close the open delivery dead letters of an order for ``target``; returns how
    many. Dead letters of intake stay open: a rejected version may be newer than the
    one that reached the ERP."""
    result = session.execute(
        update(DeadLetter)
        .where(DeadLetter.order_id == order_id, DeadLetter.status == OPEN)
        .where(DeadLetter.target == target, DeadLetter.stage == "delivery")
        .values(status=RESOLVED, resolved_by=by, resolved_at=utc_now())
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))
