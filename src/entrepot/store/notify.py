"""Wake the workers of every process that shares a PostgreSQL store.

Triggers in the store (migrations 0004 and 0006) send a NOTIFY when a
transaction that wrote new work commits: a receipt, a delivery, a channel push,
an outbox event or an event delivery. `NotificationListener` LISTENs on its own
connection and calls the handlers registered for each channel, which set the
wake events of the workers in this process. A worker then claims at once
instead of at its next poll.

Notifications only shorten the wait. Polling stays the way work is found, so a
notification lost while the listener reconnects delays work by one poll interval
at most. SQLite has no NOTIFY, and there the workers only poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine

log = logging.getLogger(__name__)

# The channels the triggers of migrations 0004 and 0006 notify.
RECEIPTS = "entrepot_receipts"
DELIVERIES = "entrepot_deliveries"  # the payload is the delivery's target
PUSHES = "entrepot_pushes"
OUTBOX = "entrepot_outbox"
EVENT_DELIVERIES = "entrepot_event_deliveries"  # the payload is the subscriber
CHANNELS = (RECEIPTS, DELIVERIES, PUSHES, OUTBOX, EVENT_DELIVERIES)

RECONNECT_SECONDS = 1.0

# A handler takes the payload. It gets None once the listener has connected or
# reconnected, because work may have been written while no connection listened.
Handler = Callable[[str | None], None]


class NotificationListener:
    """Listens on the store's channels until stopped, reconnecting after errors.

    Handlers run in the event loop of `run`, so they may set asyncio events.
    """

    def __init__(self, engine: Engine, *, reconnect_seconds: float = RECONNECT_SECONDS) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(f"LISTEN needs PostgreSQL, not {engine.dialect.name}")
        self._connect_args = _connect_args(engine)
        self._reconnect_seconds = reconnect_seconds
        self._handlers: dict[str, list[Handler]] = {channel: [] for channel in CHANNELS}
        self.listening = asyncio.Event()

    def on(self, channel: str, handler: Handler) -> None:
        """Call ``handler`` for each notification on ``channel``."""
        if channel not in self._handlers:
            raise ValueError(f"unknown channel {channel!r}, expected one of {', '.join(CHANNELS)}")
        self._handlers[channel].append(handler)

    async def run(self, stopping: asyncio.Event) -> None:
        """Listen until ``stopping`` is set."""
        stop = asyncio.create_task(stopping.wait())
        try:
            while not stopping.is_set():
                listen = asyncio.create_task(self._listen())
                await asyncio.wait({listen, stop}, return_when=asyncio.FIRST_COMPLETED)
                self.listening.clear()
                if not listen.done():
                    listen.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await listen
                    break
                log.warning(
                    "Listening for store notifications failed: %s. Connecting again in "
                    "%.1f s, and the workers poll meanwhile.",
                    listen.exception(),
                    self._reconnect_seconds,
                )
                await asyncio.wait({stop}, timeout=self._reconnect_seconds)
        finally:
            stop.cancel()
        log.info("Stopped listening for store notifications.")

    async def _listen(self) -> None:
        connection = await psycopg.AsyncConnection.connect(autocommit=True, **self._connect_args)
        async with connection:
            for channel in CHANNELS:
                await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self.listening.set()
            log.info("Listening for store notifications on %s.", ", ".join(CHANNELS))
            for channel in CHANNELS:
                self._dispatch(channel, None)
            async for notification in connection.notifies():
                self._dispatch(notification.channel, notification.payload)
        raise ConnectionError("the server closed the connection")

    def _dispatch(self, channel: str, payload: str | None) -> None:
        for handler in self._handlers.get(channel, ()):
            try:
                handler(payload)
            except Exception:
                log.exception("A handler of store notifications on %s failed.", channel)


def _connect_args(engine: Engine) -> dict[str, Any]:
    """Return psycopg's connection arguments for the engine's URL, as SQLAlchemy
    derives them (host, port, database, user, password, query options)."""
    _args, kwargs = engine.dialect.create_connect_args(engine.url)
    # SQLAlchemy's adapters are set up for its own connections, not this one.
    kwargs.pop("context", None)
    return dict(kwargs)
