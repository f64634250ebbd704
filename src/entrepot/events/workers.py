"""The event workers of one process: the outbox relay, the webhook subscribers and,
on NATS, the keeper of the dead letters.

Every process that runs workers runs them, on the bus that ``[events] bus_url``
names. Several processes may do so at once: the relays publish the same events
again harmlessly, and the subscribers share the deliveries under leases (on the
database bus) or through one durable consumer each (on NATS).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from entrepot.config import EventSettings
from entrepot.events.bus import EventBus
from entrepot.events.database_bus import DatabaseBus
from entrepot.events.relay import OutboxRelay
from entrepot.events.webhooks import WebhookSubscriber
from entrepot.spokes.failures import DeliveryFailure
from entrepot.store.database import Database

log = logging.getLogger(__name__)

# Seconds between attempts to connect to the bus, and to restart a crashed subscriber.
RESTART_DELAY_SECONDS = 5.0
# Seconds the calls in flight get to finish after a stop.
STOP_GRACE_SECONDS = 10.0


def open_bus(
    settings: EventSettings, database: Database, *, owner: str, poll_interval: float
) -> EventBus:
    """Build the bus that ``settings.bus_url`` names, not yet connected."""
    if not settings.bus_url:
        return DatabaseBus(database, owner=owner, poll_interval=poll_interval)
    try:
        from entrepot.events.nats_bus import NatsBus
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            f"[events] bus_url {settings.bus_url!r} needs the NATS bus, which cannot be "
            f"imported ({exc}); install nats-py, or leave bus_url empty"
        ) from exc
    return NatsBus(settings.bus_url)


class EventWorkers:
    """The outbox relay, one bus subscriber per configured webhook subscriber, and on
    NATS the dead-letter keeper."""

    def __init__(
        self, settings: EventSettings, database: Database, *, owner: str, poll_interval: float
    ) -> None:
        self.bus = open_bus(settings, database, owner=owner, poll_interval=poll_interval)
        self._database = database
        self.relay = OutboxRelay(database, self.bus, poll_interval=settings.relay_interval_seconds)
        self.subscribers = [
            WebhookSubscriber(name, subscriber)
            for name, subscriber in settings.subscribers.items()
        ]

    def wake_relay(self) -> None:
        """Make the relay look for new events now instead of at its next poll."""
        self.relay.wake.set()

    def wake_subscribers(self) -> None:
        """Make the subscribers of the database bus claim now. NATS delivers on its own."""
        if isinstance(self.bus, DatabaseBus):
            self.bus.wake()

    async def run(self, stopping: asyncio.Event) -> None:
        """Run until ``stopping`` is set, then close the bus and the subscribers' clients."""
        try:
            if not await self._connect(stopping):
                return
            # Registered before the relay starts, so that the database bus fans the
            # first events out to every subscriber as well.
            if isinstance(self.bus, DatabaseBus):
                for subscriber in self.subscribers:
                    await self.bus.register(subscriber.subscription)
            runs = [self.relay.run(stopping)]
            runs += [self._supervise(subscriber, stopping) for subscriber in self.subscribers]
            if not isinstance(self.bus, DatabaseBus):
                runs.append(self._keep_dead_letters(stopping))
            await self._run_until_grace(runs, stopping)
        finally:
            for subscriber in self.subscribers:
                await subscriber.aclose()
            await self.bus.close()

    async def _run_until_grace(
        self, runs: list[Coroutine[Any, Any, None]], stopping: asyncio.Event
    ) -> None:
        """Run ``runs`` until they end. Once ``stopping`` is set they get
        ``STOP_GRACE_SECONDS`` to finish the calls in flight, then are cancelled: an
        event whose call was cut off is delivered again later."""
        tasks = [asyncio.create_task(run) for run in runs]
        try:
            await stopping.wait()
            _done, late = await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)
            if late:
                log.warning(
                    "%d event workers still busy %.0f s after the stop; cutting them off.",
                    len(late),
                    STOP_GRACE_SECONDS,
                )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _connect(self, stopping: asyncio.Event) -> bool:
        """Connect to the bus, trying again until it answers; False if stopped first."""
        while not stopping.is_set():
            try:
                await self.bus.connect()
            except DeliveryFailure as failure:
                log.warning(
                    "Connecting to the event bus failed: %s; trying again in %.0f s.",
                    failure.reason,
                    RESTART_DELAY_SECONDS,
                )
                await _sleep_unless_stopped(stopping, RESTART_DELAY_SECONDS)
                continue
            return True
        return False

    async def _supervise(self, subscriber: WebhookSubscriber, stopping: asyncio.Event) -> None:
        """Run one subscriber, restarting it after a crash, such as a lost database."""
        while not stopping.is_set():
            try:
                await self.bus.run_subscriber(subscriber.subscription, subscriber, stopping.is_set)
            except Exception:
                log.exception(
                    "Subscriber %s stopped unexpectedly; restarting it in %.0f s.",
                    subscriber.name,
                    RESTART_DELAY_SECONDS,
                )
                await _sleep_unless_stopped(stopping, RESTART_DELAY_SECONDS)

    async def _keep_dead_letters(self, stopping: asyncio.Event) -> None:
        """Copy the NATS bus's dead letters into the store, restarting after a crash."""
        from entrepot.events.nats_bus import NatsBus
        from entrepot.events.nats_dead_letters import NatsDeadLetterKeeper

        assert isinstance(self.bus, NatsBus)
        keeper = NatsDeadLetterKeeper(self.bus, self._database)
        while not stopping.is_set():
            try:
                await keeper.run(stopping.is_set)
            except Exception:
                log.exception(
                    "Dead-letter keeper stopped unexpectedly; restarting it in %.0f s.",
                    RESTART_DELAY_SECONDS,
                )
                await _sleep_unless_stopped(stopping, RESTART_DELAY_SECONDS)


async def _sleep_unless_stopped(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
