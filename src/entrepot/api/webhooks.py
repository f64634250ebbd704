"""``POST /webhooks/{channel}``: verify, store durably, respond at once.

Processing happens after the response, in the intake worker. Shopify gives up on
a webhook after 5 seconds and retries it, so the response waits only for the
commit of the raw body.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from entrepot.runtime import Runtime
from entrepot.spokes.protocols import WebhookRejected

log = logging.getLogger(__name__)

router = APIRouter(tags=["webhooks"])


@router.post("/webhooks/{channel}")
async def receive_webhook(channel: str, request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    spoke = runtime.channels.get(channel)
    if spoke is None:
        return JSONResponse({"error": f"unknown channel {channel!r}"}, status_code=404)

    body = await request.body()
    headers = {name.lower(): value for name, value in request.headers.items()}
    try:
        envelope = spoke.verify(headers, body)
    except WebhookRejected as exc:
        log.warning("Webhook to /webhooks/%s rejected: %s", channel, exc.reason)
        return JSONResponse({"error": exc.reason}, status_code=exc.status_code)

    stored = await runtime.receipts.store(envelope, body)
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
