"""Idempotent subscribers: an inbox of handled events, and the newest version applied.

`apply_once` runs a subscriber's effect on the store in one transaction with its
inbox entry, so a redelivered event finds the entry and does nothing. An event
older (by its ``sourceversion``) than the newest one applied to its subject is
recorded as stale and skipped, never applied over newer state.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from sqlalchemy.orm import Session

from entrepot.events.envelope import Event
from entrepot.store.inserts import insert_if_absent
from entrepot.store.tables import InboxEntry, SubjectPosition
from entrepot.store.types import utc_now


class InboxOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"


def apply_once(
    session: Session, subscriber: str, event: Event, effect: Callable[[Session], None]
) -> InboxOutcome:
    """Apply ``effect`` for ``event`` unless the subscriber had it, or newer, before."""
    stale = _is_stale(session, subscriber, event)
    inserted = insert_if_absent(
        session,
        InboxEntry.__table__,  # type: ignore[arg-type]
        {
            "subscriber": subscriber,
            "event_id": event.id,
            "subject": event.subject,
            "outcome": InboxOutcome.STALE if stale else InboxOutcome.APPLIED,
            "processed_at": utc_now(),
        },
        ["subscriber", "event_id"],
    )
    if not inserted:
        return InboxOutcome.DUPLICATE
    if stale:
        return InboxOutcome.STALE
    effect(session)
    _advance(session, subscriber, event)
    return InboxOutcome.APPLIED


def _is_stale(session: Session, subscriber: str, event: Event) -> bool:
    if event.sourceversion is None:
        return False
    position = session.get(SubjectPosition, (subscriber, event.subject), with_for_update=True)
    if position is None:
        return False
    return _version_key(event.sourceversion) < _version_key(position.source_version)


def _advance(session: Session, subscriber: str, event: Event) -> None:
    if event.sourceversion is None:
        return
    position = session.get(SubjectPosition, (subscriber, event.subject), with_for_update=True)
    if position is None:
        session.add(
            SubjectPosition(
                subscriber=subscriber,
                subject=event.subject,
                source_version=event.sourceversion,
                applied_at=utc_now(),
            )
        )
    elif _version_key(event.sourceversion) >= _version_key(position.source_version):
        position.source_version = event.sourceversion
        position.applied_at = utc_now()


def _version_key(version: str) -> tuple[int, float | str]:
    """Order versions as times when they are ISO 8601 times, else as text."""
    try:
        moment = datetime.fromisoformat(version)
    except ValueError:
        return (1, version)
    if moment.tzinfo is None:
        return (1, version)
    return (0, moment.timestamp())
