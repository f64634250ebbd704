"""Shopify REST Admin API error responses: ``{"errors": ...}`` with a status code.

Shopify puts a string, a list of strings or an object of field names to messages
under ``errors``, depending on the endpoint and the kind of error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"
NOT_FOUND = "Not Found"
MISSING_PARAMETER = "Required parameter missing or invalid"

ErrorsValue = str | list[str] | dict[str, Any]


class ShopifyError(Exception):
    """Error that an Admin API route returns as Shopify's ``{"errors": ...}`` body."""

    def __init__(
        self, status: int, errors: ErrorsValue, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status}: {errors}")
        self.status = status
        self.errors = errors
        self.headers = dict(headers or {})


def render(payload: Any) -> bytes:
    """Serialize ``payload`` as compact JSON, the way Shopify sends its bodies."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Build a JSON response with ``payload`` rendered by `render`."""
    return Response(
        render(payload),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json; charset=utf-8",
    )


def error_response(error: ShopifyError) -> Response:
    """Build the HTTP response for a raised ShopifyError."""
    return json_response({"errors": error.errors}, error.status, error.headers)


def not_found() -> ShopifyError:
    """Build the 404 Shopify sends for an unknown resource or URL."""
    return ShopifyError(404, NOT_FOUND)


def missing_parameter(name: str) -> ShopifyError:
    """Build the 400 Shopify sends when a required parameter is missing or invalid."""
    return ShopifyError(400, {name: MISSING_PARAMETER})


def unprocessable(*messages: str) -> ShopifyError:
    """Build a 422 whose body lists ``messages``."""
    return ShopifyError(422, list(messages))


def invalid_token() -> ShopifyError:
    """Build the 401 for a request without the app's X-Shopify-Access-Token."""
    return ShopifyError(401, INVALID_TOKEN)


def throttled(leak_rate: float, retry_after: float) -> ShopifyError:
    """Build the 429 for a request that would overflow the shop's bucket."""
    message = (
        f"Exceeded {leak_rate:g} calls per second for api client. "
        "Reduce request rates to resume uninterrupted service."
    )
    return ShopifyError(429, message, {"Retry-After": f"{retry_after:.1f}"})
