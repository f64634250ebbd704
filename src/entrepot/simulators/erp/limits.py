"""Account governance: the concurrency limit and the request rate limit."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class ConcurrencyGate:
    """Count of record requests in flight, with the limit NetSuite enforces per account.

    Like NetSuite, the gate rejects a request over the limit at once and never queues
    it. Use it from the event loop thread only, because it takes no lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.max_in_flight = 0

    def try_enter(self) -> bool:
        """Take a slot and return True, or return False when all slots are taken."""
        if self.in_flight >= self.limit:
            return False

        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return True

    def leave(self) -> None:
        """Release a slot taken by ``try_enter``."""
        self.in_flight -= 1

    def reset_max(self) -> None:
        """Restart the maximum from the requests in flight now."""
        self.max_in_flight = self.in_flight


class TokenBucket:
    """Token bucket that admits ``rate`` requests per second on average.

    The bucket has room for max(1, rate) tokens and starts full, so a burst of that
    size passes at once. Use it from the event loop thread only.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._clock = clock
        self._tokens = self.capacity
        self._refilled_at = clock()

    def try_take(self) -> bool:
        """Take one token and return True, or return False when the bucket is empty."""
        self._refill()
        if self._tokens < 1:
            return False

        self._tokens -= 1
        return True

    def retry_after_seconds(self) -> int:
        """Return the whole seconds, at least 1, until the next token is available."""
        self._refill()
        missing = max(0.0, 1 - self._tokens)
        return max(1, math.ceil(missing / self.rate))

    def fill(self) -> None:
        """Refill the bucket to capacity."""
        self._tokens = self.capacity
        self._refilled_at = self._clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._refilled_at
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._refilled_at = now
