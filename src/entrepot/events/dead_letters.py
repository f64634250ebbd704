"""Event dead letters: list, inspect, retry and discard.

The database bus writes its dead letters here directly, and the workers copy
those of the NATS bus here from its dead-letter stream. A dead letter is
``open`` until an operator retries it, which sends the event again to that
subscriber with its attempts at 0 (see `entrepot.events.resend`), or discards
it. Both record who acted and when. A retried event is delivered after the
later events of its subject that were handled meanwhile, so subscribers compare
``sourceversion`` before applying it.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from entrepot.events.resend import Resend
from entrepot.store.database import Database
from entrepot.store.tables import EventDeadLetter, EventDelivery, OutboxEvent
from entrepot.store.types import utc_now

log = logging.getLogger(__name__)

OPEN = "open"
RETRIED = "retried"
DISCARDED = "discarded"
STATUSES = (OPEN, RETRIED, DISCARDED)


class EventDeadLetterNotFoundError(LookupError):
    """Raised when no event dead letter has the id."""

    def __init__(self, dead_letter_id: int) -> None:
        super().__init__(f"event dead letter {dead_letter_id} not found")
        self.dead_letter_id = dead_letter_id


class EventDeadLetterClosedError(Exception):
    """Raised when the dead letter was already retried or discarded, or its event is
    no longer in the outbox."""

    def __init__(self, dead_letter_id: int, detail: str) -> None:
        super().__init__(f"event dead letter {dead_letter_id} {detail}")
        self.dead_letter_id = dead_letter_id


def list_event_dead_letters(
    session: Session,
    *,
    status: str | None = OPEN,
    subscriber: str | None = None,
    limit: int = 100,
) -> list[EventDeadLetter]:
    """Return the newest dead letters, of one status and subscriber when given."""
    query = select(EventDeadLetter).order_by(EventDeadLetter.id.desc()).limit(limit)
    if status is not None:
        query = query.where(EventDeadLetter.status == status)
    if subscriber is not None:
        query = query.where(EventDeadLetter.subscriber == subscriber)
    return list(session.scalars(query))


def retry_event_dead_letter(
    database: Database, dead_letter_id: int, by: str, resend: Resend
) -> EventDeadLetter:
    """Send the event again to the dead letter's subscriber with its attempts at 0,
    through ``resend``, and mark the dead letter retried by ``by``."""
    letter = database.write(lambda session: _retry(session, dead_letter_id, by, resend))
    log.info(
        "Event dead letter %d retried by %s: event %r goes to subscriber %s again.",
        dead_letter_id,
        by,
        letter.event_id,
        letter.subscriber,
    )
    return letter


def discard_event_dead_letter(database: Database, dead_letter_id: int, by: str) -> EventDeadLetter:
    """Mark the dead letter discarded by ``by``. Its event is not delivered again."""
    letter = database.write(lambda session: _discard(session, dead_letter_id, by))
    log.info("Event dead letter %d discarded by %s.", dead_letter_id, by)
    return letter


def _retry(session: Session, dead_letter_id: int, by: str, resend: Resend) -> EventDeadLetter:
    letter = _open_letter(session, dead_letter_id)
    event = session.scalars(
        select(OutboxEvent).where(OutboxEvent.event_id == letter.event_id)
    ).one_or_none()
    if event is None:
        raise EventDeadLetterClosedError(
            dead_letter_id, f"cannot be retried: event {letter.event_id} is not in the outbox"
        )
    resend(session, letter.subscriber, [event])
    _resolve(letter, RETRIED, by)
    return letter


def _discard(session: Session, dead_letter_id: int, by: str) -> EventDeadLetter:
    letter = _open_letter(session, dead_letter_id)
    _resolve(letter, DISCARDED, by)
    return letter


def event_dead_letter_view(letter: EventDeadLetter) -> dict[str, Any]:
    """Return the dead letter as JSON-ready values, without the event itself."""
    return {
        "id": letter.id,
        "subscriber": letter.subscriber,
        "event_id": letter.event_id,
        "type": letter.type,
        "subject": letter.subject,
        "correlation_id": letter.envelope.get("correlationid"),
        "reason": letter.reason,
        "attempts": letter.attempts,
        "status": letter.status,
        "created_at": letter.created_at.isoformat(),
        "resolved_at": letter.resolved_at.isoformat() if letter.resolved_at else None,
        "resolved_by": letter.resolved_by,
    }


def event_dead_letter_detail(session: Session, dead_letter_id: int) -> dict[str, Any] | None:
    """Return the dead letter with its event and its delivery's current state, or
    None when no dead letter has the id."""
    letter = session.get(EventDeadLetter, dead_letter_id)
    if letter is None:
        return None
    delivery = session.scalars(
        select(EventDelivery)
        .join(OutboxEvent, OutboxEvent.id == EventDelivery.outbox_id)
        .where(
            EventDelivery.subscriber == letter.subscriber,
            OutboxEvent.event_id == letter.event_id,
        )
    ).one_or_none()
    view = event_dead_letter_view(letter)
    view["event"] = letter.envelope
    view["delivery"] = None
    if delivery is not None:
        view["delivery"] = {
            "status": delivery.status,
            "attempts": delivery.attempts,
            "last_error": delivery.last_error,
        }
    return view


def _open_letter(session: Session, dead_letter_id: int) -> EventDeadLetter:
    letter = session.get(EventDeadLetter, dead_letter_id, with_for_update=True)
    if letter is None:
        raise EventDeadLetterNotFoundError(dead_letter_id)
    if letter.status != OPEN:
        raise EventDeadLetterClosedError(
            dead_letter_id, f"is already {letter.status} (by {letter.resolved_by})"
        )
    return letter


def _resolve(letter: EventDeadLetter, status: str, by: str) -> None:
    letter.status = status
    letter.resolved_at = utc_now()
    letter.resolved_by = by


def close_dead_letters(session: Session, subscriber: str, event_id: str, by: str) -> None:
    """Mark the open dead letters of the event to the subscriber retried by ``by``."""
    open_letters = session.scalars(
        select(EventDeadLetter).where(
            EventDeadLetter.subscriber == subscriber,
            EventDeadLetter.event_id == event_id,
            EventDeadLetter.status == OPEN,
        )
    )
    for letter in open_letters:
        _resolve(letter, RETRIED, by)
