"""ASGI middleware that governs record requests like a NetSuite account.

Every request under /services/rest/ passes these checks in order, and the first that
fails decides the response: a maintenance window (503), the bearer token (401), an
injected throttle (429), the rate limit (429) and the concurrency limit (429). A
request that passes keeps a concurrency slot until its response is ready. With the
slot, it first waits out the latency and any injected slowness, then does its work.
After an injected timeout after commit, it waits again before the response is sent.
Every request is added to the request log.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import random
import re
import time

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from entrepot.simulators.erp.errors import (
    ErpError,
    concurrency_limit_exceeded,
    invalid_login,
    request_limit_exceeded,
    response_for,
    service_unavailable,
)
from entrepot.simulators.erp.jsonio import parse_json
from entrepot.simulators.erp.requestlog import RequestEntry
from entrepot.simulators.erp.state import SimState

logger = logging.getLogger(__name__)

GOVERNED_PATH_PREFIX = "/services/rest/"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})

# Status logged for a request whose client disconnected before its body arrived,
# the code nginx uses for "client closed request".
CLIENT_CLOSED_REQUEST = 499

_EXTERNAL_ID_IN_PATH = re.compile(r"^/services/rest/record/v1/[^/]+/eid:(.+)$")


class RecordGovernance:
    """Apply the account limits, latency and injected faults to record requests."""

    def __init__(self, app: ASGIApp, state: SimState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(GOVERNED_PATH_PREFIX):
            await self.app(scope, receive, send)
            return

        # The body is read before any delay because uvicorn drops the body of a request
        # whose client has disconnected, and the work must still happen.
        started_at = time.time()
        body = await _read_body(receive)
        if body is None:
            logger.info("client disconnected before sending the body of %s", scope["path"])
            self._log(scope, b"", started_at, CLIENT_CLOSED_REQUEST)
            return

        buffer = _ResponseBuffer()
        try:
            await self._govern(scope, _replay(body, receive), buffer)
            await buffer.flush(send)
        finally:
            self._log(scope, body, started_at, buffer.status or 500)

    async def _govern(self, scope: Scope, receive: Receive, buffer: _ResponseBuffer) -> None:
        rejection = self._admission_error(scope)
        if rejection is None and not self.state.gate.try_enter():
            rejection = concurrency_limit_exceeded()
        if rejection is not None:
            await response_for(rejection)(scope, receive, buffer.send)
            return

        # uvicorn 0.55 does not cancel a request task when its client disconnects, only
        # at shutdown once timeout_graceful_shutdown has passed. So the work still runs
        # after a delay that outlasts the client.
        try:
            await self._wait_before_work()
            await self.app(scope, receive, buffer.send)
            await self._wait_after_commit(scope)
        finally:
            self.state.gate.leave()

    def _admission_error(self, scope: Scope) -> ErpError | None:
        faults = self.state.faults
        outage = faults.outage()
        if outage is not None:
            return service_unavailable(outage.retry_after)
        if not self._is_authorized(scope):
            return invalid_login()

        throttle = faults.take_throttle()
        if throttle is not None:
            return request_limit_exceeded(throttle.retry_after)

        bucket = self.state.bucket
        if bucket is not None and not bucket.try_take():
            return request_limit_exceeded(bucket.retry_after_seconds())
        return None

    def _is_authorized(self, scope: Scope) -> bool:
        token = self.state.settings.token
        if token is None:
            return True

        scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode(), token.encode())

    async def _wait_before_work(self) -> None:
        settings = self.state.settings
        delay_ms = settings.latency_ms + random.uniform(0, settings.latency_jitter_ms)
        seconds = delay_ms / 1000

        slow = self.state.faults.take_slow()
        if slow is not None:
            seconds += slow.seconds
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def _wait_after_commit(self, scope: Scope) -> None:
        # Every write that got this far uses up the fault, whatever its status.
        if scope["method"] not in WRITE_METHODS:
            return

        fault = self.state.faults.take_timeout_after_commit()
        if fault is not None and fault.hang_seconds > 0:
            await asyncio.sleep(fault.hang_seconds)

    def _log(self, scope: Scope, body: bytes, started_at: float, status: int) -> None:
        entry = RequestEntry(
            started_at=started_at,
            finished_at=time.time(),
            method=scope["method"],
            path=scope["path"],
            status=status,
            external_id=_external_id(scope["path"], body),
        )
        self.state.requests.add(entry)


async def _read_body(receive: Receive) -> bytes | None:
    """Return the whole request body, or None if the client disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Return a receive callable that yields ``body`` once, then defers to ``receive``."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _external_id(path: str, body: bytes) -> str | None:
    """Return the external id in an eid: URL, or else the body's externalId, if any."""
    match = _EXTERNAL_ID_IN_PATH.match(path)
    if match:
        return match.group(1)
    if not body:
        return None

    try:
        payload = parse_json(body)
    except ValueError:
        return None
    external_id = payload.get("externalId") if isinstance(payload, dict) else None
    return external_id if isinstance(external_id, str) else None


class _ResponseBuffer:
    """Response messages kept back until they may be sent, and the status they carry."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.status: int | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        self.messages.append(message)

    async def flush(self, send: Send) -> None:
        for message in self.messages:
            await send(message)
