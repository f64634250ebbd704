"""Tryton's JSON-RPC over httpx: one session per client, logged in again when it expires.

Every call is one HTTP request and one transaction in Tryton. Decimals, dates and
datetimes travel as Tryton's ``{"__class__": ...}`` objects both ways. A failed
request raises `RetryLater` when Tryton could not take it (down, throttled, a
concurrent write) and `TrytonError` when Tryton refused it; the spoke decides
what a refusal means.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx

from entrepot.spokes.failures import RetryLater

log = logging.getLogger(__name__)

# Methods that change nothing, so a timeout on them is not ambiguous.
READ_ONLY_METHODS = frozenset(
    {"search", "search_read", "read", "search_count", "get_preferences", "fields_get"}
)


class TrytonError(Exception):
    """Raised when Tryton refuses a call. ``kind`` is Tryton's name for the error
    (``UserError``, ``UserWarning``, or the text of another exception)."""

    def __init__(self, kind: str, message: str, description: str = "") -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message
        self.description = description

    @property
    def is_user_error(self) -> bool:
        """Tell whether Tryton refused the data itself (a validation or a rule)."""
        return self.kind in {"UserError", "UserWarning"}


def encode(value: Any) -> Any:
    """Turn Decimal, date and datetime into Tryton's JSON objects (a ``default`` hook)."""
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {
            "__class__": "datetime",
            "year": value.year,
            "month": value.month,
            "day": value.day,
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, dt.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    raise TypeError(f"cannot send {type(value).__name__} to Tryton")


def decode(obj: dict[str, Any]) -> Any:
    """Turn Tryton's JSON objects back into Python values (an ``object_hook``)."""
    kind = obj.get("__class__")
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "datetime":
        fields = ("year", "month", "day", "hour", "minute", "second", "microsecond")
        return dt.datetime(*(obj.get(name, 0) for name in fields))
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if kind == "bytes":
        return base64.b64decode(obj["base64"])
    return obj


class TrytonRpc:
    """A JSON-RPC client of one Tryton database.

    ``gate`` is awaited before each request, so that every request, a login
    included, stays within the target's budget.
    """

    def __init__(
        self,
        base_url: str,
        database: str,
        username: str,
        password: str,
        *,
        timeout: float = 30.0,
        max_connections: int = 4,
        gate: Callable[[], Awaitable[None]] | None = None,
        target: str = "tryton",
    ) -> None:
        self.target = target
        self._database = database
        self._username = username
        self._password = password
        self._timeout = timeout
        self._gate = gate
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_connections + 1),
        )
        self._authorization: str | None = None
        self._context: dict[str, Any] | None = None
        self._login_lock = asyncio.Lock()
        self._next_id = 0

    @property
    def context(self) -> dict[str, Any]:
        """The user's preferences, sent as the context of every model call."""
        return dict(self._context or {})

    async def model(self, model: str, method: str, *args: Any, **context: Any) -> Any:
        """Call ``model.<model>.<method>`` with ``args`` and the user's context,
        to which ``context`` adds keys."""
        await self._ensure_session()
        params = [*args, {**(self._context or {}), **context}]
        name = f"model.{model}.{method}"
        try:
            return await self._call(name, params, read_only=method in READ_ONLY_METHODS)
        except _SessionExpiredError:
            log.info("Tryton session for %s expired; logging in again.", self.target)
            await self._login(expired=self._authorization)
            return await self._call(name, params, read_only=method in READ_ONLY_METHODS)

    async def server_version(self) -> str:
        """Return the server's version, such as ``"8.2"``; needs no session."""
        return str(await self._call("common.server.version", [], read_only=True, database=False))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _ensure_session(self) -> None:
        if self._authorization is None:
            await self._login(expired=None)

    async def _login(self, *, expired: str | None) -> None:
        async with self._login_lock:
            if self._authorization is not None and self._authorization != expired:
                return  # another task logged in meanwhile
            self._authorization = None
            result = await self._call(
                "common.db.login",
                [self._username, {"password": self._password}, "en"],
                read_only=True,
            )
            user_id, session = result[0], result[1]
            token = f"{self._username}:{user_id}:{session}".encode()
            self._authorization = "Session " + base64.b64encode(token).decode()
            self._context = await self._call(
                "model.res.user.get_preferences", [True, {}], read_only=True
            )
            log.info("Logged in to Tryton database %s for %s.", self._database, self.target)

    async def _call(
        self, method: str, params: list[Any], *, read_only: bool, database: bool = True
    ) -> Any:
        if self._gate is not None:
            await self._gate()
        self._next_id += 1
        body = json.dumps(
            {"id": self._next_id, "method": method, "params": params}, default=encode
        )
        path = f"/{self._database}/rpc/" if database else "/rpc/"
        headers = {"Content-Type": "application/json"}
        if self._authorization is not None and method != "common.db.login":
            headers["Authorization"] = self._authorization
        response = await self._send(method, path, body, headers, read_only=read_only)
        return self._result(method, response)

    async def _send(
        self, method: str, path: str, body: str, headers: dict[str, str], *, read_only: bool
    ) -> httpx.Response:
        try:
            return await self._client.post(path, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise RetryLater(f"cannot connect to {self.target}: {exc!r}") from exc
        except httpx.TimeoutException as exc:
            raise RetryLater(
                f"{method} on {self.target} timed out after {self._timeout} s",
                ambiguous=not read_only,
            ) from exc
        except httpx.HTTPError as exc:
            raise RetryLater(
                f"{method} on {self.target} failed: {exc!r}", ambiguous=not read_only
            ) from exc

    def _result(self, method: str, response: httpx.Response) -> Any:
        status = response.status_code
        if status == 401 and method != "common.db.login" and self._authorization is not None:
            raise _SessionExpiredError
        if status == 429 or status == 503:
            retry_after = _seconds(response.headers.get("retry-after"))
            raise RetryLater(
                f"{self.target} responded with HTTP {status} to {method}",
                retry_after=retry_after,
                throttled=status == 429,
                status_code=status,
            )
        if status >= 500:
            raise RetryLater(
                f"{self.target} responded with HTTP {status} to {method}",
                ambiguous=True,
                status_code=status,
            )
        if status != 200:
            raise RetryLater(
                f"{self.target} responded with HTTP {status} to {method}: {response.text[:200]!r}",
                status_code=status,
            )
        reply = json.loads(response.content, object_hook=decode)
        if "error" in reply and reply["error"] is not None:
            raise _error(reply["error"])
        return reply.get("result")


class _SessionExpiredError(Exception):
    """Raised when Tryton responds 401 to a call with a session, so the client logs in again."""


def _error(error: Any) -> Exception:
    if not isinstance(error, list) or not error:
        return TrytonError(str(error), "")
    kind = str(error[0])
    details = error[1] if len(error) > 1 else []
    if kind == "ConcurrencyException":
        return RetryLater(f"Tryton reported a concurrent change: {details!r}")
    if kind in {"UserError", "UserWarning"} and isinstance(details, list) and details:
        # A UserWarning carries its name first, then the message.
        texts = details[1:] if kind == "UserWarning" else details
        message = str(texts[0]) if texts else ""
        description = str(texts[1]) if len(texts) > 1 and texts[1] else ""
        return TrytonError(kind, message, description)
    return TrytonError(kind, str(details) if details else "")


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
