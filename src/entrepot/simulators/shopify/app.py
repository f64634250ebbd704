"""The Shopify Admin API simulator's FastAPI application."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from entrepot.simulators.shopify import admin_routes, control_routes
from entrepot.simulators.shopify.errors import (
    ShopifyError,
    error_response,
    missing_parameter,
    not_found,
)
from entrepot.simulators.shopify.gate import ADMIN_PATH, AdminGate
from entrepot.simulators.shopify.settings import ShopifySimSettings
from entrepot.simulators.shopify.state import SimState


def create_app(
    settings: ShopifySimSettings | None = None, *, clock: Callable[[], float] = time.monotonic
) -> FastAPI:
    """Build the simulator app with empty shops.

    ``clock`` is the monotonic time in seconds that the leaky buckets drain by; tests
    pass a clock they move by hand.
    """
    state = SimState(settings or ShopifySimSettings(), clock)
    app = FastAPI(
        title="entrepot Shopify simulator",
        summary="Shopify REST Admin API stand-in for tests and demos.",
    )
    app.state.sim = state
    app.include_router(admin_routes.router)
    app.include_router(control_routes.router)
    app.add_exception_handler(ShopifyError, _handle_shopify_error)
    app.add_exception_handler(HTTPException, _handle_http_error)
    app.add_middleware(AdminGate, state=state)
    return app


async def _handle_shopify_error(request: Request, error: Exception) -> Response:
    if not isinstance(error, ShopifyError):
        raise error
    return error_response(error)


async def _handle_http_error(request: Request, error: Exception) -> Response:
    """Send routing errors of Admin API paths as Shopify error bodies."""
    if not isinstance(error, HTTPException):
        raise error
    if not ADMIN_PATH.match(request.url.path):
        return await http_exception_handler(request, error)
    if error.status_code == 404:
        return error_response(not_found())
    if error.status_code == 405:
        return error_response(ShopifyError(405, "Method Not Allowed"))
    return error_response(missing_parameter("request"))
