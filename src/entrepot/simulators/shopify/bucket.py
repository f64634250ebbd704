"""The REST Admin API's leaky bucket, one per app and shop."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

# Tolerance for float error when a level is compared with the capacity or rounded.
_EPSILON = 1e-9


class LeakyBucket:
    """Leaky bucket of ``capacity`` requests that drains ``leak_rate`` per second.

    Each admitted request adds 1 to the level, and the level drains continuously.
    A request is admitted only while the level stays at or under the capacity, so
    a burst of ``capacity`` requests passes and the next one is rejected. Use it
    from the event loop thread only, because it takes no lock.
    """

    def __init__(
        self, capacity: int, leak_rate: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = capacity
        self.leak_rate = leak_rate
        self._clock = clock
        self._level = 0.0
        self._drained_at = clock()

    @property
    def level(self) -> float:
        """Current fill, in requests."""
        self._drain()
        return self._level

    def try_add(self) -> bool:
        """Add one request and return True, or return False when it would overflow."""
        self._drain()
        if self._level + 1 > self.capacity + _EPSILON:
            return False

        self._level += 1
        return True

    def fill_to(self, level: float, hold_seconds: float = 0.0) -> None:
        """Set the level, as if other apps' requests had filled it.

        The level stays there for ``hold_seconds``, as if those apps kept sending at
        the leak rate, and then drains.
        """
        self._drain()
        self._level = min(float(self.capacity), max(0.0, level))
        self._drained_at = self._clock() + max(0.0, hold_seconds)

    def call_limit(self) -> str:
        """Return the ``X-Shopify-Shop-Api-Call-Limit`` value, such as ``"32/40"``.

        The level is rounded up, so a bucket that has not quite drained below full
        still reads as full.
        """
        used = math.ceil(self.level - _EPSILON)
        return f"{max(0, used)}/{self.capacity}"

    def _drain(self) -> None:
        now = self._clock()
        if now <= self._drained_at:
            # Still within a hold set by fill_to.
            return
        elapsed = now - self._drained_at
        self._level = max(0.0, self._level - elapsed * self.leak_rate)
        self._drained_at = now
