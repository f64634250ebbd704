"""Verify Shopify webhook requests and read their delivery headers.

Shopify signs each webhook with ``X-Shopify-Hmac-Sha256``: the base64 HMAC-SHA256
of the raw request body, keyed with the app's client secret. After a secret is
rotated, Shopify may sign with the old one for up to an hour, so every secret
configured for the shop is tried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import datetime

from entrepot.spokes.protocols import WebhookEnvelope, WebhookRejected

CHANNEL = "shopify"

HMAC_HEADER = "x-shopify-hmac-sha256"
SHOP_HEADER = "x-shopify-shop-domain"
TOPIC_HEADER = "x-shopify-topic"
WEBHOOK_ID_HEADER = "x-shopify-webhook-id"
EVENT_ID_HEADER = "x-shopify-event-id"
TRIGGERED_AT_HEADER = "x-shopify-triggered-at"

# Delivery headers worth keeping with the body; nothing else of the request is stored.
KEPT_HEADERS = (
    TOPIC_HEADER,
    SHOP_HEADER,
    WEBHOOK_ID_HEADER,
    EVENT_ID_HEADER,
    TRIGGERED_AT_HEADER,
    "x-shopify-api-version",
    "x-shopify-name",
    "content-type",
)


def sign(body: bytes, secret: str) -> str:
    """Return the ``X-Shopify-Hmac-Sha256`` value Shopify would send for ``body``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secrets_for: Callable[[str], list[str]],
) -> WebhookEnvelope:
    """Check the signature of a webhook request and return its envelope.

    ``headers`` must have lower-case names. Raises `WebhookRejected` when the shop
    header or the signature is missing, no secret is configured for the shop, no
    configured secret produces the signature, or the topic header is missing.
    """
    shop = headers.get(SHOP_HEADER, "").strip().lower()
    if not shop:
        raise WebhookRejected("missing X-Shopify-Shop-Domain header")
    signature = headers.get(HMAC_HEADER, "").strip()
    if not signature:
        raise WebhookRejected("missing X-Shopify-Hmac-Sha256 header")

    secrets = secrets_for(shop)
    if not secrets:
        raise WebhookRejected(f"no webhook secret is configured for shop {shop!r}")
    if not any(_signature_matches(body, secret, signature) for secret in secrets):
        raise WebhookRejected("invalid X-Shopify-Hmac-Sha256 signature")
    topic = headers.get(TOPIC_HEADER, "").strip().lower()
    if not topic:
        # Without its topic a body cannot be read, and the 400 makes Shopify retry.
        raise WebhookRejected("missing X-Shopify-Topic header", status_code=400)

    return WebhookEnvelope(
        channel=CHANNEL,
        account=shop,
        topic=topic,
        webhook_id=headers.get(WEBHOOK_ID_HEADER) or None,
        event_id=headers.get(EVENT_ID_HEADER) or None,
        triggered_at=_parse_time(headers.get(TRIGGERED_AT_HEADER)),
        headers={name: headers[name] for name in KEPT_HEADERS if name in headers},
    )


def _signature_matches(body: bytes, secret: str, signature: str) -> bool:
    expected = sign(body, secret).encode()
    # compare_digest takes the same time wherever the first differing byte is.
    return hmac.compare_digest(expected, signature.encode())


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
