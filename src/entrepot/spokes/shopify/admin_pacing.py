"""Pacing of requests to one shop's REST Admin API leaky bucket.

Shopify's bucket has room for ``bucket_size`` requests (40 on standard plans) and
drains ``leak_rate`` per second (2). A request that would overflow it gets a 429.
An AsyncLimiter keeps this client's own requests within that rate. The bucket
may also hold requests that this client did not send, so every response's
``X-Shopify-Shop-Api-Call-Limit`` ("32/40") updates an estimate of the shop's
level, and requests wait while that estimate says the bucket is nearly full.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable

from aiolimiter import AsyncLimiter

_CALL_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_call_limit(value: str | None) -> tuple[int, int] | None:
    """Parse ``"32/40"`` into (32, 40), or return None for a missing or bad value."""
    match = _CALL_LIMIT.match(value or "")
    if match is None or int(match[2]) < 1:
        return None
    return int(match[1]), int(match[2])


class BucketPacer:
    """Admission of requests to one shop's bucket, shared by concurrent callers.

    ``headroom`` requests of the bucket are left free for other apps. Until the
    first response reports the shop's level, only one request is in flight, so a
    bucket that other traffic has already filled costs at most one 429. Use one
    pacer from one event loop.
    """

    def __init__(
        self,
        bucket_size: int = 40,
        leak_rate: float = 2.0,
        *,
        headroom: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if bucket_size < 2:
            raise ValueError(f"bucket_size must be at least 2, got {bucket_size}")
        if leak_rate <= 0:
            raise ValueError(f"leak_rate must be positive, got {leak_rate}")
        self.leak_rate = leak_rate
        self.capacity = bucket_size
        self.headroom = max(1, bucket_size // 10) if headroom is None else headroom
        if not 0 <= self.headroom < bucket_size:
            raise ValueError(f"headroom must be from 0 to {bucket_size - 1}, got {headroom}")
        burst = bucket_size - self.headroom
        self._limiter = AsyncLimiter(burst, burst / leak_rate)
        self._clock = clock

        # The shop's level as last reported, drained since at leak_rate. It is a lower
        # bound of the real level, because the level cannot drain faster than that.
        self._reported_level: float | None = None
        self._reported_at = 0.0
        self._in_flight = 0
        self._paused_until = 0.0
        self._changed = asyncio.Event()

    @property
    def in_flight(self) -> int:
        """Requests admitted whose responses have not arrived."""
        return self._in_flight

    def estimated_level(self) -> float | None:
        """Return the shop's level now as estimated from the last report, or None before
        any report."""
        if self._reported_level is None:
            return None
        elapsed = self._clock() - self._reported_at
        return max(0.0, self._reported_level - elapsed * self.leak_rate)

    async def acquire(self) -> None:
        """Wait until one more request fits in the shop's bucket, and count it.

        Every acquire must be followed by exactly one `release`.
        """
        while True:
            changed = self._changed
            wait = self._wait_seconds()
            if wait <= 0:
                break
            # A response may report room before the computed wait has passed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=wait)
        self._in_flight += 1
        try:
            await self._limiter.acquire()
        except BaseException:
            self._release_slot()
            raise

    def release(self, call_limit: str | None = None, *, retry_after: float | None = None) -> None:
        """Count a request's response, with its call limit header and, for a 429, the
        Retry-After wait in seconds. Call with no arguments after a transport error."""
        now = self._clock()
        reported = parse_call_limit(call_limit)
        if reported is not None:
            used, capacity = reported
            self.capacity = capacity
            self.headroom = min(self.headroom, capacity - 1)
            self._report(max(self.estimated_level() or 0.0, float(used)), now)
        if retry_after is not None:
            # A 429 means the bucket was full, whatever level the header reports.
            self._report(max(self.estimated_level() or 0.0, float(self.capacity)), now)
            self._paused_until = max(self._paused_until, now + retry_after)
        self._release_slot()

    def _report(self, level: float, now: float) -> None:
        self._reported_level = level
        self._reported_at = now

    def _release_slot(self) -> None:
        self._in_flight -= 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _wait_seconds(self) -> float:
        """Seconds to wait before the next request may go; 0 or less means now."""
        now = self._clock()
        if now < self._paused_until:
            return self._paused_until - now
        level = self.estimated_level()
        if level is None:
            # Nothing is known of the shop yet: probe with one request at a time.
            return 0.0 if self._in_flight == 0 else 0.05
        limit = self.capacity - self.headroom
        excess = level + self._in_flight + 1 - limit
        return excess / self.leak_rate
