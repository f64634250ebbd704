"""Serve a simulator's app with uvicorn, saying where it listens once it does."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI


def serve_app(app: FastAPI, host: str, port: int, name: str) -> None:
    """Serve ``app`` until the process is stopped.

    Prints "<name> listening on http://HOST:PORT" to stdout once the socket listens.
    With port 0, PORT is the port the system chose. uvicorn's access log is off.
    """
    config = uvicorn.Config(app, host=host, port=port, access_log=False)
    server = uvicorn.Server(config)

    # Listening before the line is printed lets a client connect as soon as it reads
    # the line. Its connection waits in the backlog until uvicorn starts accepting.
    listener = config.bind_socket()
    listener.listen(config.backlog)
    bound_host, bound_port = listener.getsockname()[:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"{name} listening on http://{url_host}:{bound_port}", flush=True)
    server.run(sockets=[listener])
