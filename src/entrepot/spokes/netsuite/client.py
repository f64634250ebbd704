"""The NetSuite ERP spoke, over REST web services with httpx.

Orders are written with the upsert operation (``PUT …/salesOrder/eid:<id>``), so
sending an order twice updates the one record instead of creating a second. After
an ambiguous failure the order is looked up first, and a record that already has
this version is not written again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any
from urllib.parse import quote

import httpx
import simplejson

from entrepot.canonical import SalesOrder
from entrepot.config import TargetSettings
from entrepot.spokes.failures import NothingToDo, PermanentFailure, RetryLater
from entrepot.spokes.netsuite.errors import raise_for_failure
from entrepot.spokes.netsuite.records import (
    VERSION_FIELD,
    customer_external_id,
    customer_record,
    sales_order_record,
)
from entrepot.spokes.protocols import RequestGate, SubmitResult

log = logging.getLogger(__name__)

RECORD_PATH = "/services/rest/record/v1"
CANCELLED_STATUS = "C"


class NetSuiteSpoke:
    """Posts canonical orders to one NetSuite account (or the ERP simulator)."""

    def __init__(self, name: str, settings: TargetSettings, gate: RequestGate) -> None:
        self.name = name
        self._gate = gate
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if settings.token is not None:
            headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
        self._timeout = settings.timeout_seconds
        self._guest_customer = settings.guest_customer
        self._client = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/") + RECORD_PATH,
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_seconds),
            limits=httpx.Limits(max_connections=settings.max_concurrency + 2),
            event_hooks={"request": [self._before_request]},
        )
        # External id -> digest of the customer record last written by this process,
        # and a lock per customer, so that orders of a new customer write it once.
        self._written_customers: dict[str, str] = {}
        self._customer_locks: dict[str, asyncio.Lock] = {}

    async def submit_order(self, order: SalesOrder, *, look_up_first: bool) -> SubmitResult:
        if order.customer is None and self._guest_customer is None:
            raise PermanentFailure(
                "the order has no customer, and a NetSuite sales order needs one (entity)",
                remedy=f"Set guest_customer for target {self.name!r} to the external id "
                "of the ERP customer that takes such orders, then retry this dead letter.",
                error_code="MISSING_CUSTOMER",
                field_path="customer",
            )
        await self._write_customer(order)
        record = sales_order_record(order, self._guest_customer)
        path = f"/salesOrder/eid:{quote(order.external_id, safe=':')}"
        if look_up_first:
            existing = await self._read(path)
            if existing is not None and existing.get(VERSION_FIELD) == record[VERSION_FIELD]:
                log.info(
                    "Order %s was already in %s from an earlier attempt.",
                    order.external_id,
                    self.name,
                )
                return SubmitResult(erp_id=str(existing["id"]), created=False)
        response = await self._request("PUT", path, record)
        return SubmitResult(erp_id=_record_id(response), created=True)

    async def cancel_order(self, order: SalesOrder) -> SubmitResult:
        path = f"/salesOrder/eid:{quote(order.external_id, safe=':')}"
        response = await self._request(
            "PATCH", path, {"orderStatus": {"id": CANCELLED_STATUS}}, missing_ok=True
        )
        if response.status_code == 404:
            raise NothingToDo(f"the order is not in {self.name}, so there is nothing to cancel")
        return SubmitResult(erp_id=_record_id(response), created=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _before_request(self, _request: httpx.Request) -> None:
        await self._gate()

    async def _write_customer(self, order: SalesOrder) -> None:
        external_id = customer_external_id(order)
        if external_id is None:
            return
        record = customer_record(order)
        digest = hashlib.sha256(simplejson.dumps(record, sort_keys=True).encode()).hexdigest()
        lock = self._customer_locks.setdefault(external_id, asyncio.Lock())
        async with lock:
            if self._written_customers.get(external_id) == digest:
                return
            await self._request("PUT", f"/customer/eid:{quote(external_id, safe=':')}", record)
            self._written_customers[external_id] = digest

    async def _read(self, path: str) -> dict[str, Any] | None:
        response = await self._request("GET", path, missing_ok=True)
        if response.status_code == 404:
            return None
        body = simplejson.loads(response.content, use_decimal=True)
        return body if isinstance(body, dict) else None

    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        missing_ok: bool = False,
    ) -> httpx.Response:
        content = simplejson.dumps(body, use_decimal=True) if body is not None else None
        try:
            response = await self._client.request(method, path, content=content)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise RetryLater(f"cannot connect to {self.name}: {exc!r}") from exc
        except httpx.TimeoutException as exc:
            raise RetryLater(
                f"{method} {path} to {self.name} timed out after {self._timeout} s",
                ambiguous=method != "GET",
            ) from exc
        except httpx.HTTPError as exc:
            raise RetryLater(
                f"{method} {path} to {self.name} failed: {exc!r}", ambiguous=method != "GET"
            ) from exc
        if not (missing_ok and response.status_code == 404):
            raise_for_failure(self.name, response)
        return response


def _record_id(response: httpx.Response) -> str:
    """Read the internal id from the ``Location`` header NetSuite sends on a write."""
    location: str = response.headers.get("location", "")
    record_id = location.rstrip("/").rsplit("/", 1)[-1]
    if not record_id:
        raise RetryLater(
            f"the ERP responded {response.status_code} without a Location header", ambiguous=True
        )
    return record_id
