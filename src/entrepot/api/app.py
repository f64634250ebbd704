"""The FastAPI application."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import Depends, FastAPI

from entrepot import __version__
from entrepot.api import dead_letters, event_dead_letters, orders, webhooks
from entrepot.api.access import require_operator
from entrepot.runtime import Runtime


def create_app(runtime: Runtime, *, run_workers: bool = False) -> FastAPI:
    """Build the app. With ``run_workers``, its lifespan starts the workers and,
    at shutdown, stops them and commits what is waiting before the process exits."""
    app = FastAPI(title="entrepot", version=__version__, lifespan=_lifespan(runtime, run_workers))
    app.state.runtime = runtime
    app.include_router(webhooks.router)
    operator = [Depends(require_operator)]
    app.include_router(orders.router, dependencies=operator)
    app.include_router(dead_letters.router, dependencies=operator)
    app.include_router(event_dead_letters.router, dependencies=operator)

    @app.get("/healthz", tags=["operations"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _lifespan(
    runtime: Runtime, run_workers: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stopping = asyncio.Event()
        workers = None
        if run_workers:
            runtime.build_workers()
            workers = asyncio.create_task(runtime.run_workers(stopping))
        try:
            yield
        finally:
            # uvicorn runs this before it exits on SIGTERM, so in-flight deliveries
            # end and are recorded instead of waiting out their leases.
            stopping.set()
            if workers is not None:
                await workers
            runtime.receipts.close()

    return lifespan
