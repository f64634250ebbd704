"""A target's budget: request rate, concurrent requests, maintenance windows, a
pause after throttling, and a circuit breaker.

The rate limiter is aiolimiter's leaky bucket, small enough that requests leave
nearly evenly spaced; the circuit breaker is purgatory's. Both live in this
process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from aiolimiter import AsyncLimiter
from purgatory import AsyncCircuitBreakerFactory
from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker

from entrepot.config import TargetSettings
from entrepot.delivery.windows import MaintenanceSchedule
from entrepot.spokes.failures import NothingToDo, PermanentFailure, RetryLater
from entrepot.store.types import utc_now

log = logging.getLogger(__name__)

T = TypeVar("T")

# A request sent this long before a window opens could still arrive inside it.
WINDOW_LEAD_SECONDS = 0.5


class TargetClosedError(Exception):
    """Raised when the target takes no request now; ``until`` is when it may again, and
    ``why`` names what closed it: a maintenance window, a pause, or the open circuit."""

    def __init__(self, target: str, until: datetime, why: str = "its circuit is open") -> None:
        super().__init__(f"target {target!r} is closed until {until.isoformat()}: {why}")
        self.until = until
        self.why = why


class TargetBudget:
    """Limits one target's traffic to what the target allows.

    The limits hold within this process. NOTE: several worker processes each
    apply the whole rate and concurrency, so the configured values must then be
    divided among them.
    """

    def __init__(self, name: str, settings: TargetSettings) -> None:
        self.name = name
        self.slots = asyncio.Semaphore(settings.max_concurrency)
        self._limiter = _pacing_limiter(settings.requests_per_second)
        self._schedule = MaintenanceSchedule.parse(
            settings.maintenance_windows, settings.timezone, WINDOW_LEAD_SECONDS
        )
        self._paused_until: datetime | None = None
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=settings.circuit_failure_threshold,
            default_ttl=settings.circuit_reset_seconds,
            exclude=[
                TargetClosedError,
                PermanentFailure,
                NothingToDo,
                (RetryLater, lambda exc: bool(exc.throttled)),
            ],
        )
        self._breaker: AsyncCircuitBreaker | None = None

    async def start(self) -> None:
        self._breaker = await self._breakers.get_breaker(self.name)

    def closed_until(self, moment: datetime | None = None) -> datetime | None:
        """Return when requests may go again if the target is closed now, else None."""
        moment = moment or utc_now()
        reasons = [
            self._schedule.closed_until(moment),
            self._paused_until if self._paused_until and self._paused_until > moment else None,
            self._breaker_open_until(),
        ]
        closed = [until for until in reasons if until is not None]
        return max(closed) if closed else None

    def _closed_because(self) -> str:
        moment = utc_now()
        if self._schedule.closed_until(moment) is not None:
            return "a maintenance window"
        if self._paused_until and self._paused_until > moment:
            return "a pause after throttling"
        return "its circuit is open"

    def in_maintenance(self, moment: datetime | None = None) -> bool:
        return self._schedule.closed_until(moment or utc_now()) is not None

    def pause(self, seconds: float) -> None:
        """Stop sending for ``seconds``, because the target reported it is overloaded."""
        until = utc_now() + timedelta(seconds=seconds)
        if self._paused_until is None or until > self._paused_until:
            self._paused_until = until
            log.info("Target %s throttled us; pausing for %.1f s.", self.name, seconds)

    async def before_request(self) -> None:
        """Wait for the rate budget, then raise `TargetClosedError` if the target is
        closed; given to the spoke as its `RequestGate`."""
        await self._limiter.acquire()
        until = self.closed_until()
        if until is not None:
            raise TargetClosedError(self.name, until, self._closed_because())

    async def call(self, request: Callable[[], Awaitable[T]]) -> T:
        """Run ``request`` through the circuit breaker."""
        if self._breaker is None:
            await self.start()
        assert self._breaker is not None
        until = self._breaker_open_until()
        if until is not None:
            raise TargetClosedError(self.name, until)
        async with self._breaker:
            return await request()

    def _breaker_open_until(self) -> datetime | None:
        if self._breaker is None:
            return None
        context = self._breaker.context
        if context.state != "opened" or context.opened_at is None:
            return None
        reopens = context.opened_at + context.ttl
        if reopens <= time.time():
            return None
        return utc_now() + timedelta(seconds=reopens - time.time())


def _pacing_limiter(requests_per_second: float) -> AsyncLimiter:
    """Return a leaky bucket that holds 50 ms worth of requests, at least two, but
    never more than one second's worth.

    A bucket of one makes every request wait for the one before it, and each
    wait overshoots a little, which costs a few percent of the rate. A small burst
    absorbs that, yet stays below a target whose own bucket holds a second's
    worth, so no request is throttled for it.
    """
    burst = max(1, min(int(requests_per_second), max(2, int(requests_per_second / 20))))
    return AsyncLimiter(burst, burst / requests_per_second)
