"""Apply one version of a channel order to the stored order, in the caller's transaction.

A version is newer when its ``updated_at`` is later than the one applied. Shopify
reports ``updated_at`` to the second, so a version with the same time but other
content is taken as the newer one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from entrepot.canonical import SalesOrder
from entrepot.events.envelope import ORDER_RECEIVED
from entrepot.events.outbox import emit_for_order
from entrepot.hub.lifecycle import OrderState, record, transition
from entrepot.store import deliveries
from entrepot.store.customers import upsert_order_customer
from entrepot.store.inserts import insert_if_absent
from entrepot.store.tables import Order, Receipt
from entrepot.store.types import utc_now

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Staleness:
    """The reason a version is not applied; ``None`` in its place means it is."""

    reason: str


def order_row(
    session: Session, receipt: Receipt, channel_order_id: str, order_number: str | None
) -> tuple[Order, bool]:
    """Return the stored order for the channel's id, inserting it if new, locked.

    Returns whether it was inserted. The unique key decides, so two receipts of a new
    order racing each other insert it once.
    """
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


def staleness(row: Order, order: SalesOrder, *, replay: bool) -> Staleness | None:
    """Return why ``order`` should not be applied over ``row``, or None to apply it.

    ``replay`` is set when an operator retries a dead letter.
    """
    applied = row.source_updated_at
    if applied is None:
        return None
    if order.source_updated_at < applied:
        return Staleness(
            f"version {order.source_updated_at.isoformat()} is older than {applied.isoformat()}"
        )
    # An operator's replay applies the same version again; a repeat does not.
    same = order.source_updated_at == applied and row.canonical == order.model_dump(mode="json")
    if same and not replay:
        return Staleness(f"version {applied.isoformat()} is already applied")
    return None


def store_version(session: Session, row: Order, order: SalesOrder, receipt: Receipt) -> None:
    """Write the version onto the order with its customer, addresses and differences."""
    if row.source_updated_at == order.source_updated_at and not receipt.replay:
        # NOTE: two versions of the same second cannot be ordered from their content;
        # the one received last wins.
        record(
            session,
            row,
            "same-second version applied",
            detail="its content differs from the version applied before",
            correlation_id=receipt.correlation_id,
        )
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
    _record_differences(session, row, order, receipt)


def _record_differences(session: Session, row: Order, order: SalesOrder, receipt: Receipt) -> None:
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
        log.info(
            "Order %s (%r) has a reconciliation difference (%s).",
            row.order_number,
            row.correlation_id,
            detail,
        )


def queue_upsert(
    session: Session, row: Order, target: str, receipt: Receipt, order: SalesOrder
) -> str:
    """Validate the order if it was not, and queue it for ``target``."""
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


def cancel(session: Session, row: Order, target: str, receipt: Receipt, order: SalesOrder) -> str:
    """Cancel the order, and queue the cancellation if the ERP may have the order."""
    transition(
        session,
        row,
        OrderState.CANCELLED,
        "cancelled by channel",
        detail=order.cancel_reason,
        correlation_id=receipt.correlation_id,
    )
    return queue_cancel(session, row, target, receipt)


def queue_cancel(session: Session, row: Order, target: str, receipt: Receipt) -> str:
    """Queue a cancellation for ``target``, unless the order never left entrepot."""
    if row.erp_id is None and not deliveries.ever_attempted(session, row.id):
        deliveries.cancel_pending(
            session, row.id, "upsert", "order cancelled before it was posted"
        )
        return "cancelled before it reached the ERP"
    deliveries.cancel_pending(session, row.id, "upsert", "superseded by the cancellation")
    deliveries.enqueue(session, target, row.id, "cancel", receipt.correlation_id)
    return f"cancellation queued for {target}"


def mark_rejected(session: Session, order: Order, receipt: Receipt, reason: str) -> None:
    """Record that a version of the order was refused, and reject the order if no
    valid version was applied before."""
    if order.state in (OrderState.RECEIVED, OrderState.REJECTED, OrderState.DEAD_LETTERED):
        if order.state == OrderState.RECEIVED:
            record(session, order, "received", correlation_id=receipt.correlation_id)
            emit_for_order(session, order, ORDER_RECEIVED, correlation_id=receipt.correlation_id)
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
