"""Routes of the salesOrder record."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from entrepot.simulators.erp import order_store
from entrepot.simulators.erp.errors import (
    ErrorCode,
    ErrorDetail,
    bad_request,
    duplicate_record,
    not_found,
)
from entrepot.simulators.erp.jsonio import DecimalJSONResponse
from entrepot.simulators.erp.records import (
    RECORD_API_PREFIX,
    parse_record_key,
    read_json_body,
    record_written,
    require_external_key,
)
from entrepot.simulators.erp.sales_orders import (
    SalesOrderDraft,
    order_to_record,
    parse_sales_order,
    parse_status_patch,
    referenced_keys,
)
from entrepot.simulators.erp.state import SimState, sim_state

logger = logging.getLogger(__name__)

RECORD_TYPE = "salesOrder"

router = APIRouter(prefix=f"{RECORD_API_PREFIX}/{RECORD_TYPE}")


@router.post("")
async def create_sales_order(request: Request) -> Response:
    """Create an order and return 204 with Location, or 400 DUP_RCRD if it exists."""
    state = sim_state(request)
    draft = await _validate(state, await read_json_body(request), url_external_id=None)

    try:
        order_id = await run_in_threadpool(order_store.insert_order, state.database, draft)
    except order_store.DuplicateExternalIdError:
        raise duplicate_record(draft.external_id) from None
    except order_store.CustomerNotFoundError:
        raise _customer_gone(draft) from None
    return record_written(request, RECORD_TYPE, order_id)


@router.put("/{key:path}")
async def upsert_sales_order(key: str, request: Request) -> Response:
    """Create the order ``eid:<externalId>``, or replace it and keep its internal id."""
    state = sim_state(request)
    external_id = require_external_key(key, RECORD_TYPE)
    draft = await _validate(state, await read_json_body(request), external_id)

    try:
        order_id = await run_in_threadpool(order_store.upsert_order, state.database, draft)
    except order_store.CustomerNotFoundError:
        raise _customer_gone(draft) from None
    return record_written(request, RECORD_TYPE, order_id)


@router.get("/{key:path}")
async def get_sales_order(key: str, request: Request) -> Response:
    database = sim_state(request).database
    record_key = parse_record_key(key, RECORD_TYPE)

    order = await run_in_threadpool(order_store.get_order, database, record_key)
    if order is None:
        raise not_found(RECORD_TYPE, key)
    return DecimalJSONResponse(order_to_record(order))


@router.patch("/{key:path}")
async def patch_sales_order(key: str, request: Request) -> Response:
    """Cancel the order when the body is ``{"orderStatus": {"id": "C"}}``."""
    database = sim_state(request).database
    record_key = parse_record_key(key, RECORD_TYPE)
    parse_status_patch(await read_json_body(request))

    order_id = await run_in_threadpool(order_store.cancel_order, database, record_key)
    if order_id is None:
        raise not_found(RECORD_TYPE, key)
    return record_written(request, RECORD_TYPE, order_id)


async def _validate(state: SimState, body: Any, url_external_id: str | None) -> SalesOrderDraft:
    customer_external_id, skus = referenced_keys(body)
    references = await run_in_threadpool(
        order_store.find_order_references, state.database, customer_external_id, skus
    )
    return parse_sales_order(body, url_external_id, references, state.settings.currencies)


def _customer_gone(draft: SalesOrderDraft) -> Exception:
    logger.warning(
        "customer %s of sales order %s was deleted during the write",
        draft.customer_external_id,
        draft.external_id,
    )
    detail = ErrorDetail(
        f"Invalid entity reference key '{draft.customer_external_id}': the customer was"
        " deleted while the order was being written.",
        ErrorCode.INVALID_KEY_OR_REF,
        "entity",
    )
    return bad_request([detail])
