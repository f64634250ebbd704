"""Map failed REST Admin API responses and transport errors to delivery failures.

Shopify's error bodies are ``{"errors": ...}``, where the value is a string, a
list of strings, or an object of field names to a message or list of messages.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from entrepot.spokes.failures import DeliveryFailure, PermanentFailure, RetryLater

# Remedy shown to operators for each permanent status.
_REMEDIES = {
    400: "Fix the request parameters named in the message.",
    401: "Check the shop's Admin API access token; the app may have been uninstalled.",
    402: "The shop is frozen until its bill is paid; retry the delivery afterwards.",
    403: "Grant the app the access scope named in the message, then retry.",
    404: "Check the id; the record may have been deleted or belong to another shop.",
    406: "Check the request method and Accept header.",
    422: "Fix the data named in the message, then retry.",
}

# Besides 5xx, statuses that mean the shop cannot take the request now: 408
# (request timeout) and 423 (shop locked).
_RETRY_LATER_STATUSES = frozenset({408, 423})


def error_text(response: httpx.Response) -> tuple[str, str | None]:
    """Return the message of a Shopify error body and the first field it names."""
    try:
        payload = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        payload = None
    errors: Any = None
    if isinstance(payload, dict):
        errors = payload.get("errors", payload.get("error"))
    if errors is None:
        text = response.text.strip()[:200]
        return text or response.reason_phrase or f"HTTP {response.status_code}", None
    return _flatten(errors)


def _flatten(errors: Any) -> tuple[str, str | None]:
    if isinstance(errors, str):
        return errors, None
    if isinstance(errors, list):
        return "; ".join(str(item) for item in errors), None
    if isinstance(errors, dict):
        parts = []
        for field, messages in errors.items():
            if isinstance(messages, list):
                messages = ", ".join(str(message) for message in messages)
            parts.append(f"{field}: {messages}")
        first = next(iter(errors), None)
        return "; ".join(parts), None if first is None else str(first)
    return str(errors), None


def failure_for_response(
    response: httpx.Response, action: str, *, idempotent: bool
) -> DeliveryFailure:
    """Build the failure for a response that is neither a success nor a 429.

    ``action`` names the request for operators, such as "GET orders/1001.json".
    A 5xx of a request that is not idempotent is ambiguous, because Shopify may
    have committed it before failing.
    """
    status = response.status_code
    message, field = error_text(response)
    reason = f"Shopify {action} failed with {status}: {message}"
    if status >= 500 or status in _RETRY_LATER_STATUSES:
        return RetryLater(
            reason,
            retry_after=retry_after_seconds(response),
            ambiguous=status >= 500 and not idempotent,
            status_code=status,
        )
    remedy = _REMEDIES.get(status, "Check the request; Shopify rejected it.")
    if 300 <= status < 400:
        target = response.headers.get("location", "an unknown location")
        reason = f"Shopify {action} was redirected with {status} to {target}"
        remedy = "Use the shop's myshopify.com domain as the base URL."
    return PermanentFailure(reason, remedy=remedy, field_path=field, status_code=status)


def failure_for_transport_error(
    error: httpx.TransportError, action: str, *, idempotent: bool
) -> RetryLater:
    """Build the failure for a request that got no response.

    It is ambiguous when the request was not idempotent and may have reached
    Shopify: every error except a failed or timed-out connect, or a wait for a
    free connection of the pool.
    """
    never_sent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    kind = "timed out" if isinstance(error, httpx.TimeoutException) else "failed"
    detail = str(error) or type(error).__name__
    return RetryLater(
        f"Shopify {action} {kind}: {detail}",
        ambiguous=not idempotent and not never_sent,
    )


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Read Retry-After as seconds ("2.0"), or None if it is absent or not a number."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
