"""ASGI middleware that admits Admin API requests the way Shopify does.

A request to ``[/shops/{domain}]/admin/api/{version}/...`` is matched to its shop
(404 if there is none) and counted. Then it must carry the shop's
``X-Shopify-Access-Token`` (401), fit in the shop's leaky bucket (429 with
Retry-After) and name the simulator's API version (404). Every response of a known
shop carries ``X-Shopify-Shop-Api-Call-Limit``; requests rejected with 401 or 429
do not add to the bucket.
"""

from __future__ import annotations

import hmac
import logging
import re

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from entrepot.simulators.shopify.errors import (
    ShopifyError,
    error_response,
    invalid_token,
    not_found,
    throttled,
)
from entrepot.simulators.shopify.shop import ShopState
from entrepot.simulators.shopify.state import SimState

logger = logging.getLogger(__name__)

ADMIN_PATH = re.compile(r"^(?P<prefix>/shops/(?P<shop>[^/]+))?/admin/api/(?P<version>[^/]+)/")
CALL_LIMIT_HEADER = "X-Shopify-Shop-Api-Call-Limit"
API_VERSION_HEADER = "X-Shopify-API-Version"
SHOP_SCOPE_KEY = "entrepot.shopify.shop"

_NUMERIC_SEGMENT = re.compile(r"/\d+(?=[/.])")


class AdminGate:
    """Resolve the shop of each Admin API request and apply its auth and rate limit."""

    def __init__(self, app: ASGIApp, state: SimState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = ADMIN_PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return

        shop = self.state.shop(match["shop"])
        if shop is None:
            await error_response(not_found())(scope, receive, send)
            return

        shop.stats.requests += 1
        rejection = self._admission_error(scope, shop, match["version"])
        headers = {CALL_LIMIT_HEADER: shop.bucket.call_limit()}
        shop.stats.max_level = max(shop.stats.max_level, shop.bucket.level)
        if rejection is not None:
            shop.stats.by_status[rejection.status] += 1
            response = error_response(rejection)
            response.headers.update(headers)
            await response(scope, receive, send)
            return

        headers[API_VERSION_HEADER] = self.state.settings.api_version
        if match["prefix"]:
            # Routes match the path after root_path, so one router serves every shop.
            scope = {**scope, "root_path": scope.get("root_path", "") + match["prefix"]}
        scope = {**scope, SHOP_SCOPE_KEY: shop}
        route = _route_name(scope["method"], scope["path"][match.end() :])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                shop.stats.by_status[message["status"]] += 1
                shop.stats.by_route[route] += 1
                MutableHeaders(scope=message).update(headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _admission_error(self, scope: Scope, shop: ShopState, version: str) -> ShopifyError | None:
        token = Headers(scope=scope).get("x-shopify-access-token", "")
        if not hmac.compare_digest(token.encode(), shop.settings.access_token.encode()):
            shop.stats.unauthorized += 1
            return invalid_token()
        if not shop.bucket.try_add():
            shop.stats.throttled += 1
            logger.debug(
                "throttled %s %s for shop %s", scope["method"], scope["path"], shop.domain
            )
            return throttled(shop.settings.leak_rate, shop.settings.retry_after)
        if version != self.state.settings.api_version:
            # NOTE: Shopify serves an unsupported version as its oldest supported one.
            # The simulator serves one version, so a mismatch is a client error here.
            return not_found()
        return None


def _route_name(method: str, path: str) -> str:
    """Name a route for the counters: ``GET orders/{id}.json`` and so on."""
    return f"{method} {_NUMERIC_SEGMENT.sub('/{id}', '/' + path)[1:]}"
