"""Sort NetSuite's error responses into the three failure kinds."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import simplejson

from entrepot.spokes.failures import PermanentFailure, RetryLater

RETRYABLE_STATUSES = frozenset({408, 500, 502, 503, 504})


def raise_for_failure(target: str, response: httpx.Response) -> None:
    """Raise the failure kind that a non-2xx response of the ERP amounts to."""
    if response.is_success:
        return
    status = response.status_code
    details = _error_details(response)
    reason = _reason(response, details)

    if status == 429:
        raise RetryLater(
            reason, throttled=True, retry_after=retry_after_seconds(response), status_code=status
        )
    if status in RETRYABLE_STATUSES:
        raise RetryLater(reason, retry_after=retry_after_seconds(response), status_code=status)
    if status in (401, 403):
        raise RetryLater(
            f"{reason}; check the token configured for target {target!r}", status_code=status
        )

    first = details[0] if details else {}
    raise PermanentFailure(
        reason,
        remedy=_remedy(first),
        error_code=first.get("o:errorCode"),
        field_path=first.get("o:errorPath"),
        status_code=status,
    )


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Read ``Retry-After`` as seconds or as an HTTP date; None if absent or invalid."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_details(response: httpx.Response) -> list[dict[str, Any]]:
    try:
        body = simplejson.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return []
    details = body.get("o:errorDetails") if isinstance(body, dict) else None
    return (
        [item for item in details if isinstance(item, dict)] if isinstance(details, list) else []
    )


def _reason(response: httpx.Response, details: list[dict[str, Any]]) -> str:
    head = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    parts = []
    for item in details:
        path = item.get("o:errorPath")
        code = item.get("o:errorCode")
        text = str(item.get("detail", "")).strip()
        parts.append(f"{path + ': ' if path else ''}{text}{f' [{code}]' if code else ''}")
    return f"{head}: {'; '.join(parts)}" if parts else head


def _remedy(detail: dict[str, Any]) -> str:
    code = detail.get("o:errorCode")
    path = str(detail.get("o:errorPath") or "")
    if code == "INVALID_KEY_OR_REF" and path.startswith("item.items"):
        return (
            "Create the item in the ERP, or correct the SKU on the channel, "
            "then retry this dead letter."
        )
    if code == "INVALID_KEY_OR_REF" and path == "currency":
        return "Enable the currency in the ERP, then retry this dead letter."
    if code == "INVALID_KEY_OR_REF" and path == "entity":
        return "Check the customer record in the ERP, then retry this dead letter."
    return "Correct the data the ERP names, then retry this dead letter."
