"""Access to the operations API: a bearer token when one is configured.

Webhooks are not covered: their HMAC signature proves who sent them.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import HTTPException, Request

log = logging.getLogger(__name__)


def require_operator(request: Request) -> None:
    """Reject a request without the configured ``[api] token`` with 401."""
    token = request.app.state.runtime.settings.api.token
    if token is None:
        return
    expected = token.get_secret_value().encode()
    sent = _bearer_token(request.headers.get("authorization", "")).encode()
    # An empty token never matches, even when the configured token is empty.
    if not sent or not hmac.compare_digest(sent, expected):
        log.warning("Operations request to %s rejected: missing or wrong token.", request.url.path)
        raise HTTPException(
            status_code=401,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _bearer_token(authorization: str) -> str:
    """Return the token of a ``Bearer`` Authorization header, or "" for another
    scheme. HTTP authentication schemes are case-insensitive, so ``bearer`` matches."""
    parts = authorization.split(maxsplit=1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return ""
    return parts[1].strip()
