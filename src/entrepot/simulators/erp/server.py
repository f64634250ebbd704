"""Run the ERP simulator as its own web service."""

from __future__ import annotations

from entrepot.simulators.erp.app import create_app
from entrepot.simulators.erp.settings import ErpSimSettings
from entrepot.simulators.serving import serve_app


def serve(settings: ErpSimSettings) -> None:
    """Serve the simulator with uvicorn until the process is stopped.

    Prints "ERP simulator listening on http://HOST:PORT" to stdout once the socket
    listens. With port 0, PORT is the port the system chose. The simulator keeps its own
    log of record requests at /_sim/requests, so uvicorn's access log is off.
    """
    serve_app(create_app(settings), settings.host, settings.port, "ERP simulator")
