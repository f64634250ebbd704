"""Admin API under /_sim: fault injection, item catalog, inspection and reset.

NetSuite has no such API. These routes need no token and pass no account limits.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from entrepot.simulators.erp import catalog, customer_store, order_store
from entrepot.simulators.erp.catalog import CatalogItem
from entrepot.simulators.erp.customers import customer_to_json
from entrepot.simulators.erp.faults import FaultSpec
from entrepot.simulators.erp.jsonio import DecimalJSONResponse
from entrepot.simulators.erp.sales_orders import order_to_summary
from entrepot.simulators.erp.state import sim_state

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/_sim")


class CatalogItems(BaseModel):
    """Body of POST /_sim/items."""

    model_config = ConfigDict(extra="forbid")

    items: list[CatalogItem]


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/faults")
async def add_fault(spec: Annotated[FaultSpec, Body()], request: Request) -> dict[str, Any]:
    """Activate a fault and return every active fault."""
    faults = sim_state(request).faults
    faults.add(spec)
    logger.info("ERP simulator fault added: %s", spec.model_dump())
    return {"faults": faults.describe()}


@router.get("/faults")
async def list_faults(request: Request) -> dict[str, Any]:
    return {"faults": sim_state(request).faults.describe()}


@router.delete("/faults")
async def clear_faults(request: Request) -> dict[str, Any]:
    faults = sim_state(request).faults
    faults.clear()
    logger.info("ERP simulator faults cleared")
    return {"faults": faults.describe()}


@router.post("/items")
async def add_items(body: CatalogItems, request: Request) -> dict[str, Any]:
    """Add items to the catalog, or rename known ones, and return the whole catalog."""
    database = sim_state(request).database
    await run_in_threadpool(catalog.add_items, database, body.items)
    return await list_items(request)


@router.get("/items")
async def list_items(request: Request) -> dict[str, Any]:
    items = await run_in_threadpool(catalog.list_items, sim_state(request).database)
    return {"items": [item.model_dump() for item in items]}


@router.get("/orders")
async def list_orders(request: Request) -> Response:
    orders = await run_in_threadpool(order_store.list_orders, sim_state(request).database)
    return DecimalJSONResponse({"orders": [order_to_summary(order) for order in orders]})


@router.get("/customers")
async def list_customers(request: Request) -> Response:
    database = sim_state(request).database
    customers = await run_in_threadpool(customer_store.list_customers, database)
    return DecimalJSONResponse({"customers": [customer_to_json(entry) for entry in customers]})


@router.get("/stats")
async def stats(request: Request) -> dict[str, Any]:
    """Return the record request counts and the current and maximum requests in flight."""
    state = sim_state(request)
    return {
        **state.requests.counts(),
        "max_in_flight": state.gate.max_in_flight,
        "in_flight": state.gate.in_flight,
    }


@router.get("/requests")
async def list_requests(request: Request) -> dict[str, Any]:
    """Return the request log, oldest first. Times are Unix timestamps in seconds."""
    return {"requests": sim_state(request).requests.entries()}


@router.post("/reset")
async def reset(request: Request) -> dict[str, str]:
    """Delete every record, item, fault, log entry and counter, and keep the schema."""
    state = sim_state(request)
    await run_in_threadpool(state.database.clear)
    state.reset_memory()
    logger.info("ERP simulator reset")
    return {"status": "reset"}
