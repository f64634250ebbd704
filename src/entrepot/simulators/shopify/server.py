"""Run the Shopify simulator as its own web service, or in a thread of this process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from entrepot.simulators.serving import serve_app
from entrepot.simulators.shopify.app import create_app
from entrepot.simulators.shopify.settings import ShopifySimSettings


def serve(settings: ShopifySimSettings) -> None:
    """Serve the simulator with uvicorn until the process is stopped.

    Prints "Shopify simulator listening on http://HOST:PORT" to stdout once the socket
    listens. With port 0, PORT is the port the system chose.
    """
    serve_app(create_app(settings), settings.host, settings.port, "Shopify simulator")


@contextmanager
def running_in_thread(
    settings: ShopifySimSettings | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    startup_timeout: float = 10.0,
) -> Iterator[tuple[str, FastAPI]]:
    """Serve a new simulator on a free 127.0.0.1 port in a daemon thread.

    Yields the base URL and the app, whose ``state.sim`` contains the shops. The server
    stops when the block exits. Raises RuntimeError if it does not start within
    ``startup_timeout`` seconds.
    """
    # asyncio turns Nagle's algorithm off only on sockets whose proto is IPPROTO_TCP.
    # With it on, each response waits about 40 ms for the client's delayed ACK.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    app = create_app(settings, clock=clock)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(
                    f"the Shopify simulator did not start within {startup_timeout} s"
                )
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
