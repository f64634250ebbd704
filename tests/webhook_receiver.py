"""A webhook subscriber of entrepot's events for the tests: an HTTP server on a
loopback port, in a thread, that checks each request's signature the way a real
subscriber would and records what it accepted."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from entrepot.events.webhooks import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)

RECEIVER_SECRET = "subscriber-secret"


@dataclass(frozen=True)
class Response:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """One request with a valid signature, as the receiver got it."""

    event: dict[str, Any]
    event_id_header: str
    content_type: str
    arrived: float


# Given a request's event and how many times that event came before, returns the response.
Script = Callable[[dict[str, Any], int], Response]


class WebhookReceiver:
    """Accepts events signed with ``secret`` and answers as ``script`` says, after
    ``delay`` seconds. ``unique_events`` drops repeats by event id, as the
    subscribers of entrepot must."""

    def __init__(self, secret: str = RECEIVER_SECRET, *, delay: float = 0.0) -> None:
        self.secret = secret
        self.delay = delay
        self.script: Script = lambda _event, _seen: Response()
        self.requests: list[Request] = []
        self.bad_signatures = 0
        self.peak_in_flight = 0
        self._accepted: dict[str, dict[str, Any]] = {}
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/events"

    def unique_events(self) -> list[dict[str, Any]]:
        """Return the events accepted with a 2xx response, once each, in arrival order."""
        with self._lock:
            return list(self._accepted.values())

    def arrivals(self, event_id: str) -> list[float]:
        """Return when each request carrying ``event_id`` arrived, in monotonic seconds."""
        with self._lock:
            return [r.arrived for r in self.requests if r.event["id"] == event_id]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                response = receiver._receive(body, self.headers)
                # A client that timed out has gone by the time a slow response is written.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(response.status)
                    for name, value in response.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(response.body)))
                    self.end_headers()
                    self.wfile.write(response.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def _receive(self, body: bytes, headers: Any) -> Response:
        valid = verify_signature(
            self.secret,
            headers.get(TIMESTAMP_HEADER, ""),
            body,
            headers.get(SIGNATURE_HEADER, ""),
        )
        if not valid:
            with self._lock:
                self.bad_signatures += 1
            return Response(401, b"bad signature")
        event = json.loads(body)
        with self._lock:
            seen = sum(1 for request in self.requests if request.event["id"] == event["id"])
            self.requests.append(
                Request(
                    event,
                    headers.get(EVENT_ID_HEADER, ""),
                    headers.get("Content-Type", ""),
                    time.monotonic(),
                )
            )
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            time.sleep(self.delay)
            response = self.script(event, seen)
        finally:
            with self._lock:
                self._in_flight -= 1
        if 200 <= response.status < 300:
            with self._lock:
                self._accepted.setdefault(event["id"], event)
        return response

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def running_receiver(
    secret: str = RECEIVER_SECRET, *, delay: float = 0.0
) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret, delay=delay)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
