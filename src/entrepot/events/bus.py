"""The contract of an event bus, the same for every backend.

A bus carries events from the outbox relay to subscribers. Delivery is at least
once: a subscriber may see an event again (after a crash, a redelivery, a replay),
and its inbox makes the second time have no effect. Events of one subject arrive
in the order they were published; events of different subjects may interleave.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from entrepot.events.envelope import Event

# The maximum wait before an event is delivered again, whatever delay a failure
# requests (a subscriber's Retry-After, for example).
MAX_REDELIVER_DELAY_SECONDS = 3600.0

Handler = Callable[[Event], Awaitable[None]]
"""Handles one event. Raising `RetryLater` redelivers it after a delay; raising
`PermanentFailure`, or failing ``max_deliveries`` times, sends it to the dead
letters. Either way the events of other subjects keep flowing."""


@dataclass(frozen=True)
class Subscription:
    """A durable subscriber: its name, the event types it wants, and its limits.

    ``ack_wait_seconds`` is the time one handler call may take, counted from its
    start. ``max_concurrency`` is the most handler calls at a time in one process
    (None: no limit). Events in hand that wait for a free call keep their lease.
    """

    name: str
    types: frozenset[str]
    max_deliveries: int = 5
    redeliver_after_seconds: float = 1.0
    ack_wait_seconds: float = 30.0
    max_concurrency: int | None = None


class EventBus(Protocol):
    async def connect(self) -> None:
        """Open connections and create the streams or tables the bus needs."""
        ...

    async def publish(self, events: Sequence[Event]) -> None:
        """Publish ``events`` in order. Publishing an event id again is a no-op, so a
        relay that crashed after publishing and before recording it may publish it
        again."""
        ...

    async def run_subscriber(
        self, subscription: Subscription, handler: Handler, stopping: Callable[[], bool]
    ) -> None:
        """Deliver the subscription's events to ``handler`` until ``stopping()``."""
        ...

    async def close(self) -> None: ...
