"""The order lifecycle: states, the transitions allowed between them, and history.

An illegal transition is refused: the state stays as it was, and the refusal is
written to the order's history with ``refused`` set, so nothing is silently lost.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from sqlalchemy.orm import Session

from entrepot.store.tables import Order, OrderHistory
from entrepot.store.types import utc_now

log = logging.getLogger(__name__)


class OrderState(StrEnum):
    """The lifecycle state of an order.

    ``rejected`` means its data was refused, by validation or by the ERP.
    ``dead_lettered`` means delivery gave up after its attempts ran out.
    ``credit_hold`` means the ERP holds the customer's credit, so the order waits
    unposted until the hold is lifted. ``partially_shipped``, ``shipped`` and
    ``invoiced`` follow the ERP's shipments and invoices of an accepted order;
    ``invoiced`` means shipped in full and invoiced.
    """

    RECEIVED = "received"
    VALIDATED = "validated"
    CREDIT_HOLD = "credit_hold"
    ACCEPTED = "accepted"
    PARTIALLY_SHIPPED = "partially_shipped"
    SHIPPED = "shipped"
    INVOICED = "invoiced"
    REJECTED = "rejected"
    DEAD_LETTERED = "dead_lettered"
    CANCELLED = "cancelled"


# States that follow the ERP's shipments and invoices.
ERP_PROGRESS = frozenset({OrderState.PARTIALLY_SHIPPED, OrderState.SHIPPED, OrderState.INVOICED})
_DELIVERY_OUTCOMES = frozenset(
    {
        OrderState.ACCEPTED,
        OrderState.CREDIT_HOLD,
        OrderState.REJECTED,
        OrderState.DEAD_LETTERED,
        OrderState.CANCELLED,
    }
)

ALLOWED_TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    OrderState.RECEIVED: frozenset(
        {OrderState.VALIDATED, OrderState.REJECTED, OrderState.CANCELLED}
    ),
    OrderState.VALIDATED: _DELIVERY_OUTCOMES - {OrderState.VALIDATED},
    OrderState.CREDIT_HOLD: _DELIVERY_OUTCOMES | {OrderState.VALIDATED},
    OrderState.ACCEPTED: _DELIVERY_OUTCOMES - {OrderState.CREDIT_HOLD} | ERP_PROGRESS,
    OrderState.PARTIALLY_SHIPPED: ERP_PROGRESS | {OrderState.CANCELLED},
    OrderState.SHIPPED: frozenset({OrderState.INVOICED}),
    OrderState.INVOICED: frozenset(),
    OrderState.REJECTED: frozenset(
        {
            OrderState.VALIDATED,
            OrderState.ACCEPTED,
            OrderState.CREDIT_HOLD,
            OrderState.CANCELLED,
            OrderState.REJECTED,
        }
    ),
    OrderState.DEAD_LETTERED: frozenset(
        {
            OrderState.VALIDATED,
            OrderState.ACCEPTED,
            OrderState.CREDIT_HOLD,
            OrderState.CANCELLED,
            OrderState.REJECTED,
        }
    ),
    OrderState.CANCELLED: frozenset(),
}

# The event each state change writes to the outbox.
STATE_EVENTS: dict[OrderState, str] = {
    OrderState.VALIDATED: "order.validated",
    OrderState.ACCEPTED: "order.accepted",
    OrderState.REJECTED: "order.rejected",
    OrderState.CANCELLED: "order.cancelled",
}

# States in which the ERP has the order and is working on it.
IN_ERP = frozenset({OrderState.ACCEPTED}) | ERP_PROGRESS


def is_allowed(current: OrderState, new: OrderState) -> bool:
    return new in ALLOWED_TRANSITIONS[current]


def transition(
    session: Session,
    order: Order,
    new_state: OrderState,
    event: str,
    *,
    detail: str | None = None,
    correlation_id: str | None = None,
) -> bool:
    """Move ``order`` to ``new_state`` and record the step; return False if refused."""
    current = OrderState(order.state)
    allowed = is_allowed(current, new_state)
    record(
        session,
        order,
        event if allowed else f"refused: {event}",
        to_state=new_state if allowed else current,
        detail=detail if allowed else _refusal_detail(current, new_state, detail),
        correlation_id=correlation_id,
        refused=not allowed,
    )
    if not allowed:
        log.warning(
            "Order %r cannot go from %s to %s; the transition was refused and recorded.",
            order.correlation_id,
            current,
            new_state,
        )
        return False

    order.state = new_state
    order.updated_at = utc_now()
    event_type = STATE_EVENTS.get(new_state)
    if event_type is not None and (current != new_state or new_state == OrderState.ACCEPTED):
        # Imported here: the outbox builds its events from the order table.
        from entrepot.events.outbox import emit_for_order

        emit_for_order(session, order, event_type, correlation_id=correlation_id, detail=detail)
    return True


def record(
    session: Session,
    order: Order,
    event: str,
    *,
    to_state: OrderState | None = None,
    detail: str | None = None,
    correlation_id: str | None = None,
    refused: bool = False,
) -> None:
    """Append a step to the order's history without changing its state."""
    session.add(
        OrderHistory(
            order_id=order.id,
            from_state=order.state,
            to_state=to_state or order.state,
            event=event,
            detail=detail,
            correlation_id=correlation_id or order.correlation_id,
            refused=refused,
        )
    )


def _refusal_detail(current: OrderState, new: OrderState, detail: str | None) -> str:
    reason = f"{current} cannot become {new}"
    return f"{reason}: {detail}" if detail else reason
