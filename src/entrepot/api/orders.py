"""``/api/orders``: where an order is, by correlation id or channel order id."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from entrepot.hub import tracking
from entrepot.hub.lifecycle import OrderState
from entrepot.runtime import Runtime

router = APIRouter(prefix="/api", tags=["operations"])


@router.get("/orders")
def list_orders(
    request: Request,
    state: Annotated[OrderState | None, Query(description="Only orders in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict[str, Any]]:
    runtime: Runtime = request.app.state.runtime
    with runtime.database.read() as session:
        orders = tracking.list_orders(session, state=state, limit=limit)
        return [tracking.order_summary(order) for order in orders]


@router.get("/orders/{key}")
def show_order(key: str, request: Request) -> dict[str, Any]:
    """Show an order by its correlation id, a receipt's correlation id, the channel's
    order id or the order number."""
    runtime: Runtime = request.app.state.runtime
    with runtime.database.read() as session:
        try:
            view = tracking.look_up(session, key)
        except tracking.AmbiguousOrderKeyError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
    if view is None:
        raise HTTPException(status_code=404, detail=f"no order or receipt found for {key!r}")
    return view


@router.get("/summary")
def show_summary(request: Request) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    with runtime.database.read() as session:
        return tracking.summary(session)
