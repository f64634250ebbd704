"""Retry delays: exponential backoff with jitter, computed by tenacity.

The delivery queue lives in the database, so a retry is a time stored on the
delivery rather than a sleep in a loop. tenacity's wait strategy gives the delay.
"""

from __future__ import annotations

import tenacity


class Backoff:
    """Delay before attempt n + 1: ``initial`` × 2^(n-1) plus up to ``initial`` of
    random jitter, never more than ``maximum`` seconds."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.maximum = maximum
        self._wait = tenacity.wait_exponential_jitter(
            multiplier=initial, max=maximum, exp_base=2, jitter=initial
        )
        self._retrying = tenacity.Retrying()

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Return seconds to wait after ``attempts`` failed attempts.

        A ``Retry-After`` from the target is honoured when it requests a longer wait.
        """
        state = tenacity.RetryCallState(self._retrying, fn=None, args=(), kwargs={})
        state.attempt_number = max(1, attempts)
        delay = float(self._wait(state))
        return max(delay, retry_after or 0.0)
