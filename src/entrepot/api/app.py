"""The FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from entrepot import __version__
from entrepot.api import dead_letters, orders, webhooks
from entrepot.runtime import Runtime


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="entrepot", version=__version__)
    app.state.runtime = runtime
    app.include_router(webhooks.router)
    app.include_router(orders.router)
    app.include_router(dead_letters.router)

    @app.get("/healthz", tags=["operations"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
