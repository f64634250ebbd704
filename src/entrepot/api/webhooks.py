"""``POST /webhooks/{channel}``: verify, store durably, respond at once.

Processing happens after the response, in the intake worker. Shopify gives up on
a webhook after 5 seconds and retries it, so the response waits only for the
commit of the raw body. A request that fails on its headers is rejected before its
body is read, and a body larger than ``[server] max_body_bytes`` gets 413.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from entrepot.runtime import Runtime
from entrepot.spokes.protocols import WebhookRejected

log = logging.getLogger(__name__)

router = APIRouter(tags=["webhooks"])

STORE_DOWN_RETRY_AFTER_SECONDS = 5


@runtime_checkable
class HeaderCheckingSpoke(Protocol):
    """A channel spoke that can reject a request on its headers, before the body
    is read."""

    def check_headers(self, headers: Mapping[str, str]) -> None:
        """Raise `WebhookRejected` if the headers alone fail verification."""
        ...


class BodyTooLargeError(Exception):
    """Raised when a request body is larger than ``[server] max_body_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


@router.post("/webhooks/{channel}")
async def receive_webhook(channel: str, request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    spoke = runtime.channels.get(channel)
    if spoke is None:
        return JSONResponse({"error": f"unknown channel {channel!r}"}, status_code=404)

    headers = {name.lower(): value for name, value in request.headers.items()}
    try:
        if isinstance(spoke, HeaderCheckingSpoke):
            spoke.check_headers(headers)
        body = await read_body(request, runtime.settings.server.max_body_bytes)
        envelope = spoke.verify(headers, body)
    except WebhookRejected as exc:
        log.warning("Webhook to /webhooks/%s rejected: %s", channel, exc.reason)
        return JSONResponse({"error": exc.reason}, status_code=exc.status_code)
    except BodyTooLargeError as exc:
        log.warning("Webhook to /webhooks/%s rejected: %s.", channel, exc)
        return JSONResponse({"error": str(exc)}, status_code=413)

    try:
        stored = await runtime.receipts.store(envelope, body)
    except SQLAlchemyError as exc:
        # Nothing was stored: tell the channel to send it again, which Shopify does.
        log.error(
            "Storing a %s webhook failed, so it was rejected with 503: %s",
            channel,
            type(exc).__name__,
        )
        return JSONResponse(
            {"error": "the store is unavailable and nothing was stored; send it again"},
            status_code=503,
            headers={"Retry-After": str(STORE_DOWN_RETRY_AFTER_SECONDS)},
        )
    runtime.notify_receipt()
    if stored.duplicate:
        log.info(
            "Duplicate %s webhook %r ignored (topic %s).",
            channel,
            envelope.webhook_id or envelope.event_id,
            envelope.topic,
        )
    return JSONResponse(
        {"correlation_id": stored.correlation_id, "duplicate": stored.duplicate},
        headers={"X-Correlation-Id": stored.correlation_id},
    )


async def read_body(request: Request, limit: int) -> bytes:
    """Read the request body, raising `BodyTooLargeError` once it passes ``limit``
    bytes. A Content-Length over the limit raises before anything is read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLargeError(limit)
    return bytes(body)
