"""What pollers read back from targets: their cursors, the events, the stock."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from entrepot.store.inserts import insert_if_absent
from entrepot.store.tables import ErpEvent, InventoryPosition, PollCursor
from entrepot.store.types import utc_now


def cursor(session: Session, source: str) -> str | None:
    """Return how far ``source`` was read, or None before its first poll."""
    row = session.get(PollCursor, source)
    return row.position if row is not None else None


def save_cursor(session: Session, source: str, position: str) -> None:
    row = session.get(PollCursor, source, with_for_update=True)
    if row is None:
        session.add(PollCursor(source=source, position=position, updated_at=utc_now()))
    else:
        row.position = position
        row.updated_at = utc_now()


def record_event(
    session: Session,
    target: str,
    kind: str,
    erp_key: str,
    order_id: int | None,
    payload: dict[str, Any],
) -> bool:
    """Keep an event read back from ``target``; return False if it was kept before."""
    return insert_if_absent(
        session,
        ErpEvent.__table__,  # type: ignore[arg-type]
        {
            "target": target,
            "kind": kind,
            "erp_key": erp_key,
            "order_id": order_id,
            "payload": payload,
            "created_at": utc_now(),
        },
        ["target", "kind", "erp_key"],
    )


def events_of_order(session: Session, order_id: int) -> list[ErpEvent]:
    return list(
        session.scalars(
            select(ErpEvent).where(ErpEvent.order_id == order_id).order_by(ErpEvent.id)
        )
    )


def update_position(
    session: Session,
    target: str,
    sku: str,
    location: str,
    on_hand: Decimal,
    forecast: Decimal,
) -> bool:
    """Store an inventory position; return whether it differs from the one stored."""
    row = session.scalars(
        select(InventoryPosition)
        .where(
            InventoryPosition.target == target,
            InventoryPosition.sku == sku,
            InventoryPosition.location == location,
        )
        .with_for_update()
    ).first()
    now = utc_now()
    if row is None:
        inserted = insert_if_absent(
            session,
            InventoryPosition.__table__,  # type: ignore[arg-type]
            {
                "target": target,
                "sku": sku,
                "location": location,
                "on_hand": on_hand,
                "forecast": forecast,
                "observed_at": now,
            },
            ["target", "sku", "location"],
        )
        if inserted:
            return True
        return update_position(session, target, sku, location, on_hand, forecast)
    changed = (row.on_hand, row.forecast) != (on_hand, forecast)
    row.on_hand, row.forecast, row.observed_at = on_hand, forecast, now
    return changed
