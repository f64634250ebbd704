"""The Shopify channel spoke: verified webhooks in, canonical messages out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from entrepot.canonical import InvalidInputError
from entrepot.config import Settings
from entrepot.spokes.protocols import (
    ChannelMessage,
    OrderReference,
    WebhookEnvelope,
    WebhookRejected,
)
from entrepot.spokes.shopify.mapping import map_order, parse_order_body
from entrepot.spokes.shopify.webhooks import (
    HMAC_HEADER,
    SHOP_HEADER,
    TOPIC_HEADER,
    verify_webhook,
)

ORDER_TOPICS = frozenset({"orders/create", "orders/updated", "orders/cancelled"})
REFUND_TOPIC = "refunds/create"


class ShopifyChannel:
    """Verifies Shopify webhooks with the configured secrets and maps their bodies."""

    def __init__(self, settings: Settings) -> None:
        self._shopify = settings.shopify

    def check_headers(self, headers: Mapping[str, str]) -> None:
        """Raise `WebhookRejected` for a request that `verify` would reject on its
        headers alone, with the same reason and status, so its body is not read.

        ``headers`` must have lower-case names.
        """
        shop = headers.get(SHOP_HEADER, "").strip().lower()
        if not shop:
            raise WebhookRejected("missing X-Shopify-Shop-Domain header")
        if not headers.get(HMAC_HEADER, "").strip():
            raise WebhookRejected("missing X-Shopify-Hmac-Sha256 header")
        if not self._shopify.secrets_for(shop):
            raise WebhookRejected(f"no webhook secret is configured for shop {shop!r}")
        if not headers.get(TOPIC_HEADER, "").strip():
            raise WebhookRejected("missing X-Shopify-Topic header", status_code=400)

    def verify(self, headers: Mapping[str, str], body: bytes) -> WebhookEnvelope:
        return verify_webhook(headers, body, self._shopify.secrets_for)

    def interpret(self, topic: str, account: str, body: bytes) -> ChannelMessage:
        if topic in ORDER_TOPICS:
            order = map_order(parse_order_body(body), shop_domain=account)
            return ChannelMessage("order", order.channel_order_id, order=order)
        if topic == REFUND_TOPIC:
            return _interpret_refund(parse_order_body(body))
        reference = self.order_reference(topic, body)
        order_id = reference.order_id if reference else None
        return ChannelMessage("ignored", order_id, note=f"topic {topic} not handled")

    def order_reference(self, topic: str, body: bytes) -> OrderReference | None:
        """Return the order's id and number, or None for a body without readable ones.

        Never raises, because intake calls it while it handles a failure.
        """
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            # ValueError covers invalid JSON and invalid UTF-8 alike.
            return None
        if isinstance(payload, dict) and isinstance(payload.get("order"), dict):
            payload = payload["order"]
        if not isinstance(payload, dict):
            return None
        if topic == REFUND_TOPIC:
            return _reference(payload.get("order_id"), None, carries_order=False)
        name = payload.get("name")
        return _reference(payload.get("id"), name if isinstance(name, str) else None)


def _reference(
    order_id: object, order_number: str | None, *, carries_order: bool = True
) -> OrderReference | None:
    if isinstance(order_id, bool) or not isinstance(order_id, int | str) or order_id == "":
        return None
    return OrderReference(str(order_id), order_number, carries_order=carries_order)


def _interpret_refund(payload: Mapping[str, Any]) -> ChannelMessage:
    order_id = payload.get("order_id")
    if not isinstance(order_id, int | str) or order_id == "":
        raise InvalidInputError.single("order_id", "missing")
    refunded = _refunded_amount(payload.get("transactions"))
    lines = payload.get("refund_line_items")
    line_count = len(lines) if isinstance(lines, list) else 0
    note = f"refund {payload.get('id')} of {refunded} over {line_count} line(s)"
    return ChannelMessage("refund", str(order_id), note=note)


def _refunded_amount(transactions: object) -> str:
    total = Decimal("0")
    currency = ""
    for index, transaction in enumerate(transactions if isinstance(transactions, list) else []):
        if not isinstance(transaction, dict) or transaction.get("kind") != "refund":
            continue
        if transaction.get("status") not in (None, "success"):
            continue
        try:
            total += Decimal(str(transaction.get("amount", "0")))
        except InvalidOperation as exc:
            raise InvalidInputError.single(
                f"transactions[{index}].amount", "not a decimal amount"
            ) from exc
        currency = str(transaction.get("currency") or currency)
    return f"{total} {currency}".strip()


def create_channel(settings: Settings) -> ShopifyChannel:
    return ShopifyChannel(settings)
