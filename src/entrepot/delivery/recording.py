"""Record a delivery attempt's outcome on the delivery, the order and its history."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.orm import Session

from entrepot.delivery.backoff import Backoff
from entrepot.delivery.outcomes import Outcome, Sent, Waiting
from entrepot.hub.lifecycle import ERP_PROGRESS, OrderState, record, transition
from entrepot.spokes.failures import NothingToDo, OnHold, PermanentFailure, RetryLater
from entrepot.store import deliveries
from entrepot.store.dead_letters import add_dead_letter, resolve_for_order
from entrepot.store.deliveries import ClaimedDelivery
from entrepot.store.tables import Delivery, Order
from entrepot.store.types import utc_now

log = logging.getLogger(__name__)


class OutcomeRecorder:
    """Writes what happened to a delivery. Runs inside one write transaction."""

    def __init__(self, target: str, max_attempts: int, backoff: Backoff) -> None:
        self.target = target
        self.max_attempts = max_attempts
        self.backoff = backoff

    def record(self, session: Session, claimed: ClaimedDelivery, outcome: Outcome) -> float | None:
        """Record ``outcome``; returns the pause in seconds the target asked for, if any."""
        delivery = deliveries.owned(session, claimed)
        if delivery is None:
            log.warning(
                "Delivery %d was taken over by another worker; this outcome is not recorded: %s",
                claimed.id,
                outcome,
            )
            return None
        order = session.get(Order, claimed.order_id, with_for_update=True)
        assert order is not None

        if isinstance(outcome, Sent):
            self._sent(session, delivery, order, outcome)
        elif isinstance(outcome, Waiting):
            # Keep the delivery's place in the queue for when the target opens.
            deliveries.reschedule(
                session,
                delivery,
                delivery.next_attempt_at,
                error=None,
                ambiguous=False,
                count_attempt=False,
            )
        elif isinstance(outcome.failure, OnHold):
            self._hold(session, delivery, order, outcome.failure)
        elif isinstance(outcome.failure, RetryLater):
            return self._retry(session, delivery, order, outcome.failure)
        elif isinstance(outcome.failure, PermanentFailure):
            self._reject(session, delivery, order, outcome.failure)
        elif isinstance(outcome.failure, NothingToDo):
            deliveries.finish(delivery, deliveries.NOTHING_TO_DO, outcome.failure.reason)
            record(
                session,
                order,
                f"nothing to do for {self.target}",
                detail=outcome.failure.reason,
                correlation_id=delivery.correlation_id,
            )
        return None

    def _sent(self, session: Session, delivery: Delivery, order: Order, outcome: Sent) -> None:
        result = outcome.result
        had_error = order.last_error is not None
        order.erp_id = result.erp_id
        order.last_error = None
        if delivery.action == "cancel":
            deliveries.finish(delivery, deliveries.DONE, f"cancelled in {self.target}")
            record(
                session,
                order,
                f"cancelled in {self.target}",
                detail=result.erp_id,
                correlation_id=delivery.correlation_id,
            )
            log.info("Order %s cancelled in %s.", _name(order), self.target)
            return

        for note in result.notes:
            record(
                session,
                order,
                f"note from {self.target}",
                detail=note,
                correlation_id=delivery.correlation_id,
            )
        how = "created" if result.created else "found already there"
        deliveries.finish(delivery, deliveries.DONE, f"accepted as {result.erp_id} ({how})")
        if had_error:
            # Only an order that failed before can have dead letters to close.
            self._resolve_superseded(session, order, delivery)
        event = f"accepted by {self.target}"
        detail = f"ERP id {result.erp_id}, {how}, attempt {delivery.attempts}"
        if order.state == OrderState.CANCELLED or order.state in ERP_PROGRESS:
            record(session, order, event, detail=detail, correlation_id=delivery.correlation_id)
        else:
            transition(
                session,
                order,
                OrderState.ACCEPTED,
                event,
                detail=detail,
                correlation_id=delivery.correlation_id,
            )
        log.info(
            "Order %s posted to %s as %s (%s).",
            _name(order),
            self.target,
            result.erp_id,
            how,
        )

    def _retry(
        self, session: Session, delivery: Delivery, order: Order, failure: RetryLater
    ) -> float | None:
        if failure.throttled:
            pause = self._throttle_pause(failure)
            deliveries.reschedule(
                session,
                delivery,
                utc_now() + timedelta(seconds=pause),
                error=failure.reason,
                ambiguous=failure.ambiguous,
                count_attempt=False,
            )
            return pause
        if delivery.attempts >= self.max_attempts:
            self._give_up(session, delivery, order, failure)
            return None

        delay = self.backoff.delay(delivery.attempts, failure.retry_after)
        deliveries.reschedule(
            session,
            delivery,
            utc_now() + timedelta(seconds=delay),
            error=failure.reason,
            ambiguous=failure.ambiguous,
            count_attempt=True,
        )
        log.info(
            "Retrying delivery %d of order %s to %s in %.1f s (attempt %d of %d failed: %s).",
            delivery.id,
            _name(order),
            self.target,
            delay,
            delivery.attempts,
            self.max_attempts,
            failure.reason,
        )
        return None

    def _hold(self, session: Session, delivery: Delivery, order: Order, failure: OnHold) -> None:
        """Keep the order unposted until the target lifts the hold; the check uses
        up no attempt."""
        delay = failure.retry_after or self.backoff.maximum
        deliveries.reschedule(
            session,
            delivery,
            utc_now() + timedelta(seconds=delay),
            error=failure.reason,
            ambiguous=failure.ambiguous,
            count_attempt=False,
        )
        already_held = order.state == OrderState.CREDIT_HOLD and order.last_error == failure.reason
        order.last_error = failure.reason
        if already_held:
            return
        transition(
            session,
            order,
            OrderState.CREDIT_HOLD,
            f"held by {self.target}",
            detail=failure.reason,
            correlation_id=delivery.correlation_id,
        )
        log.warning(
            "Order %s held by %s: %s; checking again in %.0f s.",
            _name(order),
            self.target,
            failure.reason,
            delay,
        )

    def _resolve_superseded(self, session: Session, order: Order, delivery: Delivery) -> None:
        """Close the order's open dead letters for this target: the ERP now has a
        version at least as new as the one each of them holds."""
        closed = resolve_for_order(
            session, order.id, self.target, by=f"entrepot: delivery {delivery.id} succeeded"
        )
        if closed:
            record(
                session,
                order,
                "dead letters resolved",
                detail=f"{closed} closed",
                correlation_id=delivery.correlation_id,
            )

    def _throttle_pause(self, failure: RetryLater) -> float:
        asked = failure.retry_after or self.backoff.delay(1)
        if asked > self.backoff.maximum:
            # A target that asks for a day's pause would stop every order for a day;
            # waiting no longer than the longest backoff keeps the queue moving.
            log.warning(
                "Target %s asked to wait %.1f s; waiting %.1f s, the longest backoff.",
                self.target,
                asked,
                self.backoff.maximum,
            )
            return self.backoff.maximum
        return asked

    def _give_up(
        self, session: Session, delivery: Delivery, order: Order, failure: RetryLater
    ) -> None:
        reason = f"{delivery.attempts} attempts failed; the last one: {failure.reason}"
        deliveries.finish(delivery, deliveries.DEAD, reason)
        self._dead_letter(
            session,
            delivery,
            order,
            "attempts_exhausted",
            reason,
            remedy=f"Check that {self.target} is reachable and accepts requests, "
            "then retry this dead letter.",
            error_code=str(failure.status_code) if failure.status_code else None,
        )
        if order.state != OrderState.CANCELLED:
            transition(
                session,
                order,
                OrderState.DEAD_LETTERED,
                "dead-lettered",
                detail=reason,
                correlation_id=delivery.correlation_id,
            )
        log.error("Order %s dead-lettered for %s: %s", _name(order), self.target, reason)

    def _reject(
        self, session: Session, delivery: Delivery, order: Order, failure: PermanentFailure
    ) -> None:
        delivery.last_error = failure.reason
        deliveries.finish(delivery, deliveries.DEAD, failure.reason)
        self._dead_letter(
            session,
            delivery,
            order,
            "permanent",
            failure.reason,
            remedy=failure.remedy,
            error_code=failure.error_code,
        )
        order.last_error = failure.reason
        if order.state != OrderState.CANCELLED:
            transition(
                session,
                order,
                OrderState.REJECTED,
                f"rejected by {self.target}",
                detail=failure.reason,
                correlation_id=delivery.correlation_id,
            )
        log.warning("Order %s rejected by %s: %s", _name(order), self.target, failure.reason)

    def _dead_letter(
        self,
        session: Session,
        delivery: Delivery,
        order: Order,
        kind: str,
        reason: str,
        *,
        remedy: str | None,
        error_code: str | None,
    ) -> None:
        order.last_error = reason
        add_dead_letter(
            session,
            correlation_id=delivery.correlation_id,
            stage="delivery",
            kind=kind,
            receipt_id=_applied_receipt(order),
            target=self.target,
            order_id=order.id,
            delivery_id=delivery.id,
            reason=reason,
            remedy=remedy,
            error_code=error_code,
        )


def _applied_receipt(order: Order) -> int:
    # Every order that has a delivery was stored from a receipt.
    assert order.receipt_id is not None, f"order {order.id} has a delivery but no receipt"
    return order.receipt_id


def _name(order: Order) -> str:
    """Name an order in a log line by its number and its correlation id."""
    return f"{order.order_number or order.channel_order_id} ({order.correlation_id})"
