"""Serve the HTTP API with uvicorn, with the workers in the same process."""

from __future__ import annotations

import asyncio

import uvicorn

from entrepot.api.app import create_app
from entrepot.runtime import Runtime


async def serve(runtime: Runtime, *, with_workers: bool = True) -> None:
    """Serve until the process gets SIGINT or SIGTERM, then stop the workers."""
    settings = runtime.settings
    config = uvicorn.Config(
        create_app(runtime),
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    stopping = asyncio.Event()
    workers = None
    if with_workers:
        runtime.build_workers()
        workers = asyncio.create_task(runtime.run_workers(stopping))
    try:
        await server.serve()
    finally:
        stopping.set()
        if workers is not None:
            await workers
