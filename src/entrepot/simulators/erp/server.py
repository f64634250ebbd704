"""Run the ERP simulator as its own web service."""

from __future__ import annotations

import uvicorn

from entrepot.simulators.erp.app import create_app
from entrepot.simulators.erp.settings import ErpSimSettings


def serve(settings: ErpSimSettings) -> None:
    """Serve the simulator with uvicorn until the process is stopped.

    Prints "ERP simulator listening on http://HOST:PORT" to stdout once the socket
    listens. With port 0, PORT is the port the system chose. The simulator keeps its own
    log of record requests at /_sim/requests, so uvicorn's access log is off.
    """
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, access_log=False)
    server = uvicorn.Server(config)

    # Listening before the line is printed lets a client connect as soon as it reads
    # the line. Its connection waits in the backlog until uvicorn starts accepting.
    listener = config.bind_socket()
    listener.listen(config.backlog)
    host, port = listener.getsockname()[:2]
    url_host = f"[{host}]" if ":" in host else host
    print(f"ERP simulator listening on http://{url_host}:{port}", flush=True)
    server.run(sockets=[listener])
