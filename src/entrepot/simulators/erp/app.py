"""The ERP simulator's FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from entrepot.simulators.erp import admin_routes, customer_routes, order_routes
from entrepot.simulators.erp.errors import (
    ErpError,
    ErrorCode,
    ErrorDetail,
    error_response,
    response_for,
)
from entrepot.simulators.erp.governance import GOVERNED_PATH_PREFIX, RecordGovernance
from entrepot.simulators.erp.settings import ErpSimSettings
from entrepot.simulators.erp.state import SimState


def create_app(settings: ErpSimSettings) -> FastAPI:
    """Build the simulator app, creating its SQLite file in ``settings.data_dir`` if needed."""
    state = SimState.from_settings(settings)
    app = FastAPI(
        title="entrepot ERP simulator",
        summary="NetSuite-style REST record service for tests and benchmarks.",
    )
    app.state.sim = state

    app.include_router(customer_routes.router)
    app.include_router(order_routes.router)
    app.include_router(admin_routes.router)

    app.add_exception_handler(ErpError, _handle_erp_error)
    app.add_exception_handler(HTTPException, _handle_http_error)
    app.add_middleware(RecordGovernance, state=state)
    return app


async def _handle_erp_error(request: Request, error: Exception) -> Response:
    if not isinstance(error, ErpError):
        raise error
    return response_for(error)


async def _handle_http_error(request: Request, error: Exception) -> Response:
    """Send routing errors under /services/rest/ as NetSuite error bodies.

    NOTE: the error codes here are a guess. NetSuite's codes for an unknown record
    type or a method a record does not support are not modeled.
    """
    if not isinstance(error, HTTPException):
        raise error
    if not request.url.path.startswith(GOVERNED_PATH_PREFIX):
        return await http_exception_handler(request, error)

    code = ErrorCode.NONEXISTENT_ID if error.status_code == 404 else ErrorCode.USER_ERROR
    detail = ErrorDetail(f"{request.method} {request.url.path} failed: {error.detail}.", code)
    return error_response(error.status_code, [detail], error.headers)
