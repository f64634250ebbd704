"""Operators' actions on dead letters: retry (replay the original input) and discard."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from entrepot.hub.lifecycle import record
from entrepot.store.database import Database
from entrepot.store.dead_letters import DISCARDED, RETRIED, get_open, resolve
from entrepot.store.receipts import request_replay
from entrepot.store.tables import DeadLetter, Order

log = logging.getLogger(__name__)


def retry_dead_letter(database: Database, dead_letter_id: int, by: str) -> DeadLetter:
    """Replay the dead letter's original receipt through the current mapping.

    The receipt is applied again even if the order already carries its version,
    and a new delivery is queued from it. If it fails again, a new dead letter is
    written.
    """

    def work(session: Session) -> DeadLetter:
        dead_letter = get_open(session, dead_letter_id)
        request_replay(session, dead_letter.receipt_id)
        resolve(dead_letter, RETRIED, by)
        _note_on_order(session, dead_letter, f"dead letter {dead_letter.id} retried by {by}")
        return dead_letter

    dead_letter = database.write(work)
    log.info("Dead letter %d retried by %s.", dead_letter_id, by)
    return dead_letter


def discard_dead_letter(database: Database, dead_letter_id: int, by: str) -> DeadLetter:
    """Close the dead letter without replaying it; the order keeps its state."""

    def work(session: Session) -> DeadLetter:
        dead_letter = get_open(session, dead_letter_id)
        resolve(dead_letter, DISCARDED, by)
        _note_on_order(session, dead_letter, f"dead letter {dead_letter.id} discarded by {by}")
        return dead_letter

    dead_letter = database.write(work)
    log.info("Dead letter %d discarded by %s.", dead_letter_id, by)
    return dead_letter


def _note_on_order(session: Session, dead_letter: DeadLetter, event: str) -> None:
    if dead_letter.order_id is None:
        return
    order = session.get(Order, dead_letter.order_id)
    if order is not None:
        record(session, order, event, correlation_id=dead_letter.correlation_id)
