"""Routes of the customer record."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from entrepot.simulators.erp import customer_store
from entrepot.simulators.erp.customers import customer_to_json, parse_customer
from entrepot.simulators.erp.errors import not_found
from entrepot.simulators.erp.jsonio import DecimalJSONResponse
from entrepot.simulators.erp.records import (
    RECORD_API_PREFIX,
    parse_record_key,
    read_json_body,
    record_written,
    require_external_key,
)
from entrepot.simulators.erp.state import sim_state

RECORD_TYPE = "customer"

router = APIRouter(prefix=f"{RECORD_API_PREFIX}/{RECORD_TYPE}")


@router.put("/{key:path}")
async def upsert_customer(key: str, request: Request) -> Response:
    """Create or update the customer ``eid:<externalId>`` and return 204 with Location."""
    database = sim_state(request).database
    external_id = require_external_key(key, RECORD_TYPE)
    draft = parse_customer(external_id, await read_json_body(request))

    customer_id = await run_in_threadpool(customer_store.upsert_customer, database, draft)
    return record_written(request, RECORD_TYPE, customer_id)


@router.get("/{key:path}")
async def get_customer(key: str, request: Request) -> Response:
    database = sim_state(request).database
    record_key = parse_record_key(key, RECORD_TYPE)

    customer = await run_in_threadpool(customer_store.get_customer, database, record_key)
    if customer is None:
        raise not_found(RECORD_TYPE, key)
    return DecimalJSONResponse(customer_to_json(customer))
