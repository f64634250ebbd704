"""Turn stored receipts into orders: map, validate, route and queue the delivery.

Each receipt is applied in one transaction together with its order, customer,
history and delivery, so a crash leaves either all of it or none of it. An
unfinished receipt is processed again once its lease runs out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from entrepot.canonical import InvalidInputError, SalesOrder
from entrepot.config import RoutingSettings
from entrepot.events.envelope import ORDER_RECEIVED, RETURN_RECEIVED
from entrepot.events.outbox import emit_for_order
from entrepot.hub import versions
from entrepot.hub.lifecycle import OrderState, record, transition
from entrepot.hub.routing import route
from entrepot.observability.logging import correlation_scope
from entrepot.spokes.protocols import ChannelMessage, ChannelSpoke, OrderReference
from entrepot.store.database import Database
from entrepot.store.dead_letters import add_dead_letter
from entrepot.store.receipts import finish_receipt
from entrepot.store.tables import Order, Receipt

log = logging.getLogger(__name__)

INTAKE_REMEDY = (
    "Correct the named fields in the channel, or fix the mapping, "
    "then retry this dead letter to replay the original message."
)
FAILURE_REMEDY = (
    "Processing this message raised an unexpected error, which is a bug in entrepot "
    "or in a spoke. Report it with the logged traceback; once it is fixed, retry this "
    "dead letter to replay the original message."
)


@dataclass(frozen=True)
class IntakeResult:
    """The end of one receipt's processing. ``queued_target`` names a target with new
    work."""

    status: str
    outcome: str
    queued_target: str | None = None


class LeaseLostError(Exception):
    """Raised when another worker took over a receipt, so this outcome must not count."""


class IntakeProcessor:
    """Applies receipts to orders. Safe to run in several threads and processes."""

    def __init__(
        self,
        database: Database,
        channels: Mapping[str, ChannelSpoke],
        routing: RoutingSettings,
    ) -> None:
        self._database = database
        self._channels = channels
        self._routing = routing

    def process(self, receipt: Receipt) -> IntakeResult:
        """Process one claimed receipt and record its outcome.

        Bad input becomes a recorded rejection. Any other error becomes a recorded
        failure with a dead letter, written in a transaction of its own, so the
        receipt does not stay processing. Raises only when that write fails too;
        the receipt's lease then runs out and the receipt is processed again.
        """
        with correlation_scope(receipt.correlation_id):
            try:
                return self._process(receipt)
            except LeaseLostError:
                return _taken_over(receipt)
            except Exception as exc:
                log.exception("Processing receipt %r failed unexpectedly.", receipt.correlation_id)
                return self._record_failure(receipt, exc)

    def supersede(self, receipt: Receipt, channel_order_id: str, outcome: str) -> IntakeResult:
        """Finish a receipt that another receipt of the same order takes the place of,
        linking it to the order if the order is stored already."""

        def finish(session: Session) -> IntakeResult:
            order = session.scalars(
                select(Order).filter_by(
                    channel=receipt.channel,
                    account=receipt.account,
                    channel_order_id=channel_order_id,
                )
            ).first()
            return _finish(session, receipt, "ignored", outcome, order)

        with correlation_scope(receipt.correlation_id):
            try:
                return self._database.write(finish)
            except LeaseLostError:
                return IntakeResult("lost", "taken over by another worker")

    def _process(self, receipt: Receipt) -> IntakeResult:
        spoke = self._channels.get(receipt.channel)
        if spoke is None:
            error = InvalidInputError.single(
                "channel", f"no channel spoke named {receipt.channel!r}"
            )
            return self._reject(receipt, error, None)
        try:
            message = spoke.interpret(receipt.topic, receipt.account, receipt.body)
        except InvalidInputError as exc:
            return self._reject(receipt, exc, _order_reference(spoke, receipt))
        except Exception as exc:
            # A bug in a mapping must cost one message, not the worker.
            log.exception("Mapping receipt %r failed unexpectedly.", receipt.correlation_id)
            error = InvalidInputError.single("", f"mapping failed: {exc!r}")
            return self._reject(receipt, error, _order_reference(spoke, receipt))
        return self._apply_message(receipt, message)

    def _apply_message(self, receipt: Receipt, message: ChannelMessage) -> IntakeResult:
        if message.kind == "ignored":
            outcome = f"nothing to do: {message.note}"
            return self._database.write(lambda s: _finish(s, receipt, "ignored", outcome))
        if message.kind == "refund":
            return self._database.write(lambda s: _record_refund(s, receipt, message))
        assert message.order is not None
        order = message.order
        return self._database.write(lambda s: self._apply_order(s, receipt, order))

    def _apply_order(self, session: Session, receipt: Receipt, order: SalesOrder) -> IntakeResult:
        row, created = versions.order_row(
            session, receipt, order.channel_order_id, order.order_number
        )
        if created:
            record(session, row, "received", correlation_id=receipt.correlation_id)
        if row.state == OrderState.CANCELLED:
            return self._apply_to_cancelled(session, row, receipt, order)
        stale = versions.staleness(row, order, replay=receipt.replay)
        if stale is not None:
            record(
                session,
                row,
                "older version ignored",
                detail=stale.reason,
                correlation_id=receipt.correlation_id,
            )
            return _finish(session, receipt, "ignored", f"nothing to do: {stale.reason}", row)

        versions.store_version(session, row, order, receipt)
        if created:
            emit_for_order(session, row, ORDER_RECEIVED, correlation_id=receipt.correlation_id)
        target = route(order, self._routing)
        row.target = target
        if order.cancelled_at is not None:
            outcome = versions.cancel(session, row, target, receipt, order)
        else:
            outcome = versions.queue_upsert(session, row, target, receipt, order)
        result = _finish(session, receipt, "processed", outcome, row)
        return IntakeResult(result.status, result.outcome, queued_target=target)

    def _apply_to_cancelled(
        self, session: Session, row: Order, receipt: Receipt, order: SalesOrder
    ) -> IntakeResult:
        if order.cancelled_at is None:
            # Only a change that is not itself a cancellation is an illegal step.
            transition(
                session,
                row,
                OrderState.VALIDATED,
                "new version",
                detail="the order was already cancelled",
                correlation_id=receipt.correlation_id,
            )
        elif receipt.replay:
            # An operator retries a cancellation that did not reach the ERP.
            target = row.target or route(order, self._routing)
            outcome = versions.queue_cancel(session, row, target, receipt)
            result = _finish(session, receipt, "processed", outcome, row)
            return IntakeResult(result.status, result.outcome, queued_target=target)
        return _finish(session, receipt, "ignored", "nothing to do: order already cancelled", row)

    def _reject(
        self, receipt: Receipt, error: InvalidInputError, reference: OrderReference | None
    ) -> IntakeResult:
        log.warning("Receipt %r rejected: %s", receipt.correlation_id, error)

        def work(session: Session) -> IntakeResult:
            order = _rejected_order(session, receipt, reference, str(error))
            add_dead_letter(
                session,
                correlation_id=receipt.correlation_id,
                stage="intake",
                kind="permanent",
                receipt_id=receipt.id,
                order_id=order.id if order else None,
                reason=str(error),
                remedy=INTAKE_REMEDY,
                error_code="invalid_input",
            )
            return _finish(session, receipt, "failed", "rejected", order, error=str(error))

        return self._database.write(work)

    def _record_failure(self, receipt: Receipt, exc: Exception) -> IntakeResult:
        """Finish the receipt as failed, with a dead letter, after an unexpected error.

        The order is left alone, because the error may come from the very rows that
        marking it would write.
        """
        reason = f"processing failed: {exc!r}"

        def work(session: Session) -> IntakeResult:
            add_dead_letter(
                session,
                correlation_id=receipt.correlation_id,
                stage="intake",
                kind="permanent",
                receipt_id=receipt.id,
                reason=reason,
                remedy=FAILURE_REMEDY,
                error_code="internal_error",
            )
            return _finish(session, receipt, "failed", "processing failed", error=reason)

        try:
            return self._database.write(work)
        except LeaseLostError:
            return _taken_over(receipt)


def _taken_over(receipt: Receipt) -> IntakeResult:
    log.warning(
        "Receipt %r was taken over by another worker; this worker's outcome was rolled back.",
        receipt.correlation_id,
    )
    return IntakeResult("lost", "taken over by another worker")


def _order_reference(spoke: ChannelSpoke, receipt: Receipt) -> OrderReference | None:
    """Read the order's reference for a rejection; a spoke that fails to read it
    costs the link to the order, not the rejection."""
    try:
        return spoke.order_reference(receipt.topic, receipt.body)
    except Exception:
        log.exception("Reading the order reference of receipt %r failed.", receipt.correlation_id)
        return None


def _rejected_order(
    session: Session, receipt: Receipt, reference: OrderReference | None, reason: str
) -> Order | None:
    """Mark the order that a rejected message names, if it names one."""
    if reference is None:
        return None
    if not reference.carries_order:
        order = _find_order(session, receipt, reference.order_id)
        if order is not None:
            record(
                session,
                order,
                f"{receipt.topic} rejected",
                detail=reason,
                correlation_id=receipt.correlation_id,
            )
        return order
    order, _ = versions.order_row(session, receipt, reference.order_id, reference.order_number)
    versions.mark_rejected(session, order, receipt, reason)
    return order


def _record_refund(session: Session, receipt: Receipt, message: ChannelMessage) -> IntakeResult:
    assert message.channel_order_id is not None
    # A refund may arrive before its order; the order is then kept as received until
    # the order itself arrives, with the refund in its history.
    order, created = versions.order_row(session, receipt, message.channel_order_id, None)
    if created:
        record(
            session,
            order,
            "received",
            detail="from a refund that came before the order",
            correlation_id=receipt.correlation_id,
        )
    # NOTE: refunds are recorded on the order only; the canonical model has no
    # return authorization yet, so nothing is sent to the ERP.
    record(
        session,
        order,
        "refund recorded",
        detail=message.note,
        correlation_id=receipt.correlation_id,
    )
    emit_for_order(
        session,
        order,
        RETURN_RECEIVED,
        correlation_id=receipt.correlation_id,
        detail=message.note,
        extra={"receipt_id": receipt.id},
    )
    return _finish(session, receipt, "processed", "refund recorded, not sent to the ERP", order)


def _find_order(session: Session, receipt: Receipt, channel_order_id: str) -> Order | None:
    return session.scalars(
        select(Order).filter_by(
            channel=receipt.channel, account=receipt.account, channel_order_id=channel_order_id
        )
    ).first()


def _finish(
    session: Session,
    receipt: Receipt,
    status: str,
    outcome: str,
    order: Order | None = None,
    *,
    error: str | None = None,
) -> IntakeResult:
    stored = session.get(Receipt, receipt.id, with_for_update=True)
    assert stored is not None
    if stored.status != "processing" or stored.lease_owner != receipt.lease_owner:
        # Raising rolls back everything this transaction wrote for the receipt.
        raise LeaseLostError(receipt.correlation_id)
    finish_receipt(
        session, stored, status, outcome=outcome, error=error, order_id=order.id if order else None
    )
    return IntakeResult(status, outcome)
