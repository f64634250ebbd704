"""The outbox relay: hands the events written to the outbox to the bus, in order.

An event is marked published only after the bus has taken it. A relay that dies
between the two publishes the event again when it starts, and the bus drops the
second copy by its id, so no event is lost and none is handled twice.
"""

from __future__ import annotations

import asyncio
import logging

from entrepot.events.bus import EventBus
from entrepot.events.envelope import Event
from entrepot.events.outbox import mark_published, unpublished
from entrepot.spokes.failures import DeliveryFailure
from entrepot.store.database import Database
from entrepot.wakeups import wait_for_work

log = logging.getLogger(__name__)

BATCH = 200
GATHER_SECONDS = 0.02
# During a run of failed publishes, one warning for every this many failures.
FAILURES_PER_WARNING = 100


class OutboxRelay:
    """Publishes unpublished outbox events until stopped."""

    def __init__(self, database: Database, bus: EventBus, *, poll_interval: float) -> None:
        self.wake = asyncio.Event()
        self._database = database
        self._bus = bus
        self._poll_interval = poll_interval

    async def run(self, stopping: asyncio.Event) -> None:
        log.info("Outbox relay started.")
        failures = 0
        while not stopping.is_set():
            try:
                published = await self.relay_once()
            except DeliveryFailure as failure:
                failures += 1
                _log_failure(failures, failure.reason)
                published = 0
            except Exception:
                failures += 1
                log.exception("Publishing events failed unexpectedly; trying again.")
                published = 0
            else:
                if failures:
                    log.info("Publishing events again after %d failed attempts.", failures)
                failures = 0
            if published < BATCH:
                await wait_for_work(self.wake, stopping, self._poll_interval)
                # A wake comes with each commit that writes events; waiting a moment
                # lets the commits close behind it join the same batch.
                await asyncio.sleep(GATHER_SECONDS)
        log.info("Outbox relay stopped.")

    async def relay_once(self) -> int:
        """Publish one batch of unpublished events; return how many."""
        rows = await asyncio.to_thread(self._unpublished)
        if not rows:
            return 0
        events = [Event.model_validate(envelope) for _, envelope in rows]
        await self._bus.publish(events)
        ids = [row_id for row_id, _ in rows]
        await asyncio.to_thread(self._database.write, lambda session: mark_published(session, ids))
        log.debug("Published %d events.", len(ids))
        return len(ids)

    def _unpublished(self) -> list[tuple[int, dict[str, object]]]:
        with self._database.read() as session:
            return [(row.id, row.envelope) for row in unpublished(session, BATCH)]


def _log_failure(failures: int, reason: str) -> None:
    """Log a failed publish: the first of a run of failures, then every hundredth,
    as a warning, so that an outage of the bus does not flood the log."""
    if failures == 1 or failures % FAILURES_PER_WARNING == 0:
        log.warning(
            "Publishing events failed (%d times in a row): %s; trying again.", failures, reason
        )
    else:
        log.debug("Publishing events failed again: %s", reason)
