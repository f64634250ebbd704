"""Views of orders, receipts and their history, to tell where each order is.

Every figure here is read from stored state, so it survives restarts.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from entrepot.store.tables import DeadLetter, Delivery, Order, OrderHistory, Receipt


class AmbiguousOrderKeyError(LookupError):
    """Raised when a channel order id matches orders of several shops."""

    def __init__(self, key: str, matches: list[Order]) -> None:
        accounts = ", ".join(f"{order.channel}:{order.account}" for order in matches)
        super().__init__(
            f"{key!r} names orders of several accounts ({accounts}); "
            "use the correlation id instead"
        )
        self.matches = matches


def find_order(session: Session, key: str) -> Order | None:
    """Find an order by correlation id (its own or a receipt's) or by channel order id.

    The channel order id may be the channel's key ("450789469") or the number shown
    to people ("#1001").
    """
    order = session.scalars(select(Order).where(Order.correlation_id == key)).first()
    if order is not None:
        return order
    receipt = session.scalars(select(Receipt).where(Receipt.correlation_id == key)).first()
    if receipt is not None and receipt.order_id is not None:
        return session.get(Order, receipt.order_id)

    matches = list(
        session.scalars(
            select(Order).where(or_(Order.channel_order_id == key, Order.order_number == key))
        )
    )
    if len(matches) > 1:
        raise AmbiguousOrderKeyError(key, matches)
    return matches[0] if matches else None


def find_receipt(session: Session, correlation_id: str) -> Receipt | None:
    return session.scalars(select(Receipt).where(Receipt.correlation_id == correlation_id)).first()


def look_up(session: Session, key: str) -> dict[str, Any] | None:
    """Describe the order that ``key`` names, or the receipt if it has no order.

    Raises `AmbiguousOrderKeyError` when a channel order id names several orders.
    """
    order = find_order(session, key)
    if order is not None:
        return order_view(session, order)
    receipt = find_receipt(session, key)
    if receipt is not None:
        return {"receipt": receipt_view(receipt), "order": None}
    return None


def dead_letter_detail(session: Session, dead_letter_id: int) -> dict[str, Any] | None:
    """Describe a dead letter with the original input as the channel sent it."""
    dead_letter = session.get(DeadLetter, dead_letter_id)
    if dead_letter is None:
        return None
    view = dead_letter_view(dead_letter)
    receipt = session.get(Receipt, dead_letter.receipt_id)
    if receipt is not None:
        view["receipt"] = receipt_view(receipt)
        view["original_body"] = receipt.body.decode("utf-8", errors="replace")
        view["original_headers"] = receipt.headers
    return view


def order_view(session: Session, order: Order) -> dict[str, Any]:
    """Describe an order: state, totals, attempts, errors, history and messages."""
    deliveries = list(
        session.scalars(
            select(Delivery).where(Delivery.order_id == order.id).order_by(Delivery.id)
        )
    )
    canonical = order.canonical or {}
    return {
        **order_summary(order),
        "channel": order.channel,
        "target": order.target,
        "source_updated_at": _iso(order.source_updated_at),
        "attempts": sum(delivery.attempts for delivery in deliveries),
        "reconciliation": canonical.get("reconciliation", []),
        "deliveries": [_delivery_view(delivery) for delivery in deliveries],
        "dead_letters": [dead_letter_view(d) for d in _dead_letters_of(session, order.id)],
        "history": [_history_view(step) for step in _history_of(session, order.id)],
        "receipts": [receipt_view(r) for r in _receipts_of(session, order.id)],
        "created_at": _iso(order.created_at),
        "updated_at": _iso(order.updated_at),
    }


def order_summary(order: Order) -> dict[str, Any]:
    """Describe an order in one line's worth of fields, for lists."""
    return {
        "correlation_id": order.correlation_id,
        "channel_order_id": order.channel_order_id,
        "order_number": order.order_number,
        "account": order.account,
        "state": order.state,
        "total": str(order.total) if order.total is not None else None,
        "currency": order.currency,
        "erp_id": order.erp_id,
        "last_error": order.last_error,
    }


def receipt_view(receipt: Receipt) -> dict[str, Any]:
    return {
        "correlation_id": receipt.correlation_id,
        "channel": receipt.channel,
        "account": receipt.account,
        "topic": receipt.topic,
        "webhook_id": receipt.webhook_id,
        "event_id": receipt.event_id,
        "status": receipt.status,
        "outcome": receipt.outcome,
        "error": receipt.error,
        "duplicates": receipt.duplicate_count,
        "attempts": receipt.attempts,
        "received_at": _iso(receipt.received_at),
        "processed_at": _iso(receipt.processed_at),
    }


def dead_letter_view(dead_letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": dead_letter.id,
        "correlation_id": dead_letter.correlation_id,
        "stage": dead_letter.stage,
        "kind": dead_letter.kind,
        "target": dead_letter.target,
        "order_id": dead_letter.order_id,
        "receipt_id": dead_letter.receipt_id,
        "reason": dead_letter.reason,
        "remedy": dead_letter.remedy,
        "error_code": dead_letter.error_code,
        "status": dead_letter.status,
        "created_at": _iso(dead_letter.created_at),
        "resolved_at": _iso(dead_letter.resolved_at),
        "resolved_by": dead_letter.resolved_by,
    }


def list_orders(session: Session, *, state: str | None = None, limit: int = 50) -> list[Order]:
    query = select(Order).order_by(Order.id.desc()).limit(limit)
    if state is not None:
        query = query.where(Order.state == state)
    return list(session.scalars(query))


def summary(session: Session) -> dict[str, Any]:
    """Count orders by state and the work still waiting, from stored state."""
    states = dict(session.execute(select(Order.state, func.count()).group_by(Order.state)).all())
    receipts = dict(
        session.execute(select(Receipt.status, func.count()).group_by(Receipt.status)).all()
    )
    open_deliveries = session.scalar(
        select(func.count()).where(Delivery.status.in_(("pending", "in_flight")))
    )
    return {
        "orders": {str(state): int(count) for state, count in states.items()},
        "receipts": {str(status): int(count) for status, count in receipts.items()},
        "duplicates_ignored": int(session.scalar(select(func.sum(Receipt.duplicate_count))) or 0),
        "open_deliveries": int(open_deliveries or 0),
        "open_dead_letters": int(
            session.scalar(select(func.count()).where(DeadLetter.status == "open")) or 0
        ),
    }


def _dead_letters_of(session: Session, order_id: int) -> list[DeadLetter]:
    return list(
        session.scalars(
            select(DeadLetter).where(DeadLetter.order_id == order_id).order_by(DeadLetter.id)
        )
    )


def _history_of(session: Session, order_id: int) -> list[OrderHistory]:
    return list(
        session.scalars(
            select(OrderHistory).where(OrderHistory.order_id == order_id).order_by(OrderHistory.id)
        )
    )


def _receipts_of(session: Session, order_id: int) -> list[Receipt]:
    return list(
        session.scalars(select(Receipt).where(Receipt.order_id == order_id).order_by(Receipt.id))
    )


def _delivery_view(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "target": delivery.target,
        "action": delivery.action,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": _iso(delivery.next_attempt_at),
        "last_error": delivery.last_error,
        "outcome": delivery.outcome,
    }


def _history_view(step: OrderHistory) -> dict[str, Any]:
    return {
        "at": _iso(step.at),
        "event": step.event,
        "from_state": step.from_state,
        "to_state": step.to_state,
        "detail": step.detail,
        "correlation_id": step.correlation_id,
        "refused": step.refused,
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
