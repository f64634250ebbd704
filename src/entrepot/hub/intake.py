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
from entrepot.hub.lifecycle import OrderState, record, transition
from entrepot.hub.routing import route
from entrepot.observability.logging import correlation_scope
from entrepot.spokes.protocols import ChannelMessage, ChannelSpoke, OrderReference
from entrepot.store import deliveries
from entrepot.store.customers import upsert_order_customer
from entrepot.store.database import Database
from entrepot.store.dead_letters import add_dead_letter
from entrepot.store.inserts import insert_if_absent
from entrepot.store.receipts import finish_receipt
from entrepot.store.tables import Order, Receipt
from entrepot.store.types import utc_now

log = logging.getLogger(__name__)

INTAKE_REMEDY = (
    "Correct the named fields in the channel, or fix the mapping, "
    "then retry this dead letter to replay the original message."
)


@dataclass(frozen=True)
class IntakeResult:
    """The end of one receipt's processing. ``queued_target`` names a target with new
    work."""

    status: str
    outcome: str
    queued_target: str | None = None


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
        """Process one claimed receipt. Bad input becomes a recorded rejection, not an
        exception."""
        with correlation_scope(receipt.correlation_id):
            spoke = self._channels.get(receipt.channel)
            if spoke is None:
                error = InvalidInputError.single(
                    "channel", f"no channel spoke named {receipt.channel!r}"
                )
                return self._reject(receipt, error, None)
            try:
                message = spoke.interpret(receipt.topic, receipt.account, receipt.body)
            except InvalidInputError as exc:
                return self._reject(receipt, exc, spoke.order_reference(receipt.body))
            except Exception as exc:
                # A bug in a mapping must cost one message, not the worker.
                log.exception("Mapping receipt %r failed unexpectedly.", receipt.correlation_id)
                error = InvalidInputError.single("", f"mapping failed: {exc!r}")
                return self._reject(receipt, error, spoke.order_reference(receipt.body))
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
        row, created = _order_row(session, receipt, order.channel_order_id, order.order_number)
        if created:
            record(session, row, "received", correlation_id=receipt.correlation_id)
        if row.state == OrderState.CANCELLED:
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
            return _finish(
                session, receipt, "ignored", "nothing to do: order already cancelled", row
            )
        stale = _stale_reason(row, order, replay=receipt.replay)
        if stale is not None:
            record(
                session,
                row,
                "older version ignored",
                detail=stale,
                correlation_id=receipt.correlation_id,
            )
            return _finish(session, receipt, "ignored", f"nothing to do: {stale}", row)

        _store_version(session, row, order, receipt)
        target = route(order, self._routing)
        row.target = target
        if order.cancelled_at is not None:
            outcome = _cancel(session, row, target, receipt, order)
        else:
            outcome = _queue_upsert(session, row, target, receipt, order)
        result = _finish(session, receipt, "processed", outcome, row)
        return IntakeResult(result.status, result.outcome, queued_target=target)

    def _reject(
        self, receipt: Receipt, error: InvalidInputError, reference: OrderReference | None
    ) -> IntakeResult:
        log.warning("Receipt %r rejected: %s", receipt.correlation_id, error)

        def work(session: Session) -> IntakeResult:
            order = None
            if reference is not None:
                order, _ = _order_row(session, receipt, reference.order_id, reference.order_number)
                _mark_rejected(session, order, receipt, str(error))
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


def _order_row(
    session: Session, receipt: Receipt, channel_order_id: str, order_number: str | None
) -> tuple[Order, bool]:
    key = {
        "channel": receipt.channel,
        "account": receipt.account,
        "channel_order_id": channel_order_id,
    }
    now = utc_now()
    created = insert_if_absent(
        session,
        Order.__table__,  # type: ignore[arg-type]
        {
            **key,
            "correlation_id": receipt.correlation_id,
            "state": OrderState.RECEIVED.value,
            "order_number": order_number,
            "created_at": now,
            "updated_at": now,
        },
        list(key),
    )
    row = session.scalars(select(Order).filter_by(**key).with_for_update()).one()
    return row, created


def _stale_reason(row: Order, order: SalesOrder, *, replay: bool) -> str | None:
    applied = row.source_updated_at
    if applied is None:
        return None
    if order.source_updated_at < applied:
        return f"version {order.source_updated_at.isoformat()} is older than {applied.isoformat()}"
    if order.source_updated_at == applied and not replay:
        return f"version {applied.isoformat()} is already applied"
    return None


def _store_version(session: Session, row: Order, order: SalesOrder, receipt: Receipt) -> None:
    link = upsert_order_customer(session, order)
    row.canonical = order.model_dump(mode="json")
    row.source_updated_at = order.source_updated_at
    row.order_number = order.order_number
    row.total = order.total.amount
    row.currency = order.currency
    row.receipt_id = receipt.id
    row.customer_id = link.customer_id
    row.shipping_address_id = link.shipping_address_id
    row.billing_address_id = link.billing_address_id
    row.updated_at = utc_now()
    for difference in order.reconciliation:
        detail = (
            f"{difference.field}: channel {difference.channel_value}, derived "
            f"{difference.derived_value}, difference {difference.difference}"
        )
        record(
            session,
            row,
            "reconciliation difference",
            detail=detail,
            correlation_id=receipt.correlation_id,
        )
        log.info("Order %r has a reconciliation difference (%s).", row.correlation_id, detail)


def _queue_upsert(
    session: Session, row: Order, target: str, receipt: Receipt, order: SalesOrder
) -> str:
    state = OrderState(row.state)
    if state in (OrderState.RECEIVED, OrderState.REJECTED, OrderState.DEAD_LETTERED):
        transition(
            session, row, OrderState.VALIDATED, "validated", correlation_id=receipt.correlation_id
        )
    else:
        record(
            session,
            row,
            "new version",
            detail=order.source_updated_at.isoformat(),
            correlation_id=receipt.correlation_id,
        )
    queued = deliveries.enqueue(session, target, row.id, "upsert", receipt.correlation_id)
    return f"queued for {target}" if queued else f"folded into the delivery waiting for {target}"


def _cancel(session: Session, row: Order, target: str, receipt: Receipt, order: SalesOrder) -> str:
    transition(
        session,
        row,
        OrderState.CANCELLED,
        "cancelled by channel",
        detail=order.cancel_reason,
        correlation_id=receipt.correlation_id,
    )
    if row.erp_id is None and not deliveries.ever_attempted(session, row.id):
        deliveries.cancel_pending(
            session, row.id, "upsert", "order cancelled before it was posted"
        )
        return "cancelled before it reached the ERP"
    deliveries.cancel_pending(session, row.id, "upsert", "superseded by the cancellation")
    deliveries.enqueue(session, target, row.id, "cancel", receipt.correlation_id)
    return f"cancellation queued for {target}"


def _mark_rejected(session: Session, order: Order, receipt: Receipt, reason: str) -> None:
    if order.state in (OrderState.RECEIVED, OrderState.REJECTED, OrderState.DEAD_LETTERED):
        if order.state == OrderState.RECEIVED:
            record(session, order, "received", correlation_id=receipt.correlation_id)
        transition(
            session,
            order,
            OrderState.REJECTED,
            "rejected",
            detail=reason,
            correlation_id=receipt.correlation_id,
        )
    else:
        # The order as applied before stays valid; only this version is refused.
        record(
            session,
            order,
            "version rejected",
            detail=reason,
            correlation_id=receipt.correlation_id,
        )
    order.last_error = reason


def _record_refund(session: Session, receipt: Receipt, message: ChannelMessage) -> IntakeResult:
    order = session.scalars(
        select(Order).filter_by(
            channel=receipt.channel,
            account=receipt.account,
            channel_order_id=message.channel_order_id,
        )
    ).first()
    if order is None:
        return _finish(session, receipt, "ignored", "nothing to do: refund of an unknown order")
    # NOTE: refunds are recorded on the order only; the canonical model has no
    # return authorization yet, so nothing is sent to the ERP.
    record(
        session,
        order,
        "refund recorded",
        detail=message.note,
        correlation_id=receipt.correlation_id,
    )
    return _finish(session, receipt, "processed", "refund recorded, not sent to the ERP", order)


def _finish(
    session: Session,
    receipt: Receipt,
    status: str,
    outcome: str,
    order: Order | None = None,
    *,
    error: str | None = None,
) -> IntakeResult:
    stored = session.get(Receipt, receipt.id)
    assert stored is not None
    finish_receipt(
        session, stored, status, outcome=outcome, error=error, order_id=order.id if order else None
    )
    return IntakeResult(status, outcome)
