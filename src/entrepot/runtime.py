"""The running hub: store, spokes and workers, in one process or spread over several.

`entrepot run` serves HTTP and runs the workers in one process; `entrepot worker`
runs the workers alone. Any number of worker processes may share one store:
leases in the database decide who works on what. On PostgreSQL, notifications
from the store wake the workers of every process as soon as there is new work.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from entrepot.config import Settings
from entrepot.delivery.budget import TargetBudget
from entrepot.delivery.pushes import ChannelPushWorker
from entrepot.delivery.worker import TargetWorker
from entrepot.events.workers import EventWorkers
from entrepot.hub.intake import IntakeProcessor
from entrepot.hub.intake_worker import IntakeWorker
from entrepot.hub.pulls import OrderPuller, OrderRereader, admin_clients
from entrepot.hub.readback import ReadBackWorker
from entrepot.spokes.protocols import ChannelSpoke, ErpSpoke, load_channel_spokes, load_erp_spoke
from entrepot.spokes.shopify.admin import ShopifyAdminClient
from entrepot.store import notify
from entrepot.store.database import Database
from entrepot.store.migrate import upgrade_to_head
from entrepot.store.receipt_writer import ReceiptWriter

log = logging.getLogger(__name__)


class Runtime:
    """Everything one entrepot process runs, built from the settings."""

    def __init__(self, settings: Settings, *, migrate: bool = True) -> None:
        self.settings = settings
        self.database = Database(settings.store.database_url())
        if migrate:
            upgrade_to_head(self.database)
        self.receipts = ReceiptWriter(self.database)
        self.channels: dict[str, ChannelSpoke] = load_channel_spokes(settings)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._erp_spokes: dict[str, ErpSpoke] = {}
        self.targets: dict[str, TargetWorker] = {}
        self.readers: dict[str, ReadBackWorker] = {}
        self.pushes: ChannelPushWorker | None = None
        self.puller: OrderPuller | None = None
        self.intake: IntakeWorker | None = None
        self.events: EventWorkers | None = None
        self._admin_clients: dict[str, ShopifyAdminClient] = {}
        # Register handlers with `listener.on` before `run_workers` starts it.
        self.listener: notify.NotificationListener | None = None
        if self.database.is_postgresql:
            self.listener = notify.NotificationListener(self.database.engine)
            self.listener.on(notify.RECEIPTS, lambda _payload: self.notify_receipt())
            self.listener.on(notify.DELIVERIES, self._notify_targets)
            self.listener.on(notify.PUSHES, lambda _payload: self.notify_pushes())
            self.listener.on(notify.OUTBOX, lambda _payload: self._notify_relay())
            self.listener.on(notify.EVENT_DELIVERIES, lambda _payload: self._notify_subscribers())

    def notify_receipt(self) -> None:
        """Wake the intake worker of this process, if it runs here."""
        if self.intake is not None:
            self.intake.wake.set()

    def notify_target(self, target: str) -> None:
        worker = self.targets.get(target)
        if worker is not None:
            worker.wake.set()
        # Intake queues deliveries in the transaction that writes the order's events.
        if self.events is not None:
            self.events.wake_relay()

    def _notify_relay(self) -> None:
        if self.events is not None:
            self.events.wake_relay()

    def _notify_subscribers(self) -> None:
        if self.events is not None:
            self.events.wake_subscribers()

    def _notify_targets(self, target: str | None) -> None:
        """Wake the worker of ``target``, or of every target when None."""
        for name in self.targets if target is None else [target]:
            self.notify_target(name)

    def build_workers(self) -> None:
        workers = self.settings.workers
        processor = IntakeProcessor(self.database, self.channels, self.settings.routing)
        clients = admin_clients(self.settings.shopify)
        self._admin_clients = clients
        if clients:
            self.puller = OrderPuller(
                self.database, clients, self.settings.shopify, on_stored=self.notify_receipt
            )
        self.intake = IntakeWorker(
            self.database,
            processor,
            owner=self.owner,
            lease_seconds=workers.lease_seconds,
            poll_interval=workers.poll_interval_seconds,
            batch_size=workers.intake_batch_size,
            on_queued=self.notify_target,
            rereader=OrderRereader(self.database, clients) if clients else None,
        )
        for name, target in self.settings.targets.items():
            budget = TargetBudget(name, target)
            spoke = load_erp_spoke(name, target, budget.before_request, self.database)
            self._erp_spokes[name] = spoke
            self.targets[name] = TargetWorker(
                name,
                target,
                spoke,
                budget,
                self.database,
                owner=self.owner,
                lease_seconds=workers.lease_seconds,
                poll_interval=workers.poll_interval_seconds,
            )
            reader = self._reader(name, spoke)
            if reader is not None:
                self.readers[name] = reader
        self.pushes = self._push_worker(clients)
        self.events = EventWorkers(
            self.settings.events,
            self.database,
            owner=self.owner,
            poll_interval=workers.poll_interval_seconds,
        )

    def _reader(self, name: str, spoke: ErpSpoke) -> ReadBackWorker | None:
        """Build the read-back worker of a target whose spoke can be read back."""
        from entrepot.spokes.tryton.readback import TrytonReadBack
        from entrepot.spokes.tryton.spoke import TrytonSpoke

        if not isinstance(spoke, TrytonSpoke):
            return None
        tryton = self.settings.targets[name].tryton
        return ReadBackWorker(
            name,
            TrytonReadBack(spoke.rpc, tryton.warehouse_code),
            self.database,
            self.settings.shopify,
            interval=tryton.poll_interval_seconds,
            overlap=tryton.poll_overlap_seconds,
            on_pushed=self.notify_pushes,
        )

    def _push_worker(self, clients: dict[str, ShopifyAdminClient]) -> ChannelPushWorker | None:
        if not clients:
            return None
        workers = self.settings.workers
        return ChannelPushWorker(
            self.database,
            self.settings.shopify,
            clients,
            owner=self.owner,
            lease_seconds=workers.lease_seconds,
            poll_interval=workers.poll_interval_seconds,
        )

    def notify_pushes(self) -> None:
        if self.pushes is not None:
            self.pushes.wake.set()

    async def run_workers(self, stopping: asyncio.Event) -> None:
        """Run every worker until ``stopping`` is set, then close the spokes."""
        if self.intake is None:
            self.build_workers()
        assert self.intake is not None
        runs = [self.intake.run(stopping)] + [w.run(stopping) for w in self.targets.values()]
        runs += [reader.run(stopping) for reader in self.readers.values()]
        if self.pushes is not None:
            runs.append(self.pushes.run(stopping))
        if self.puller is not None:
            runs.append(self.puller.run(stopping))
        if self.listener is not None:
            runs.append(self.listener.run(stopping))
        if self.events is not None:
            runs.append(self.events.run(stopping))
        try:
            await asyncio.gather(*runs)
        finally:
            for spoke in self._erp_spokes.values():
                await spoke.aclose()
            for client in self._admin_clients.values():
                await client.aclose()

    def close(self) -> None:
        """Commit the waiting receipts and release the store; safe to call twice."""
        self.receipts.close()
        self.database.dispose()


async def run_workers_until_signal(runtime: Runtime) -> None:
    """Run only the workers until SIGINT or SIGTERM."""
    import signal

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    log.info("Workers running as %s.", runtime.owner)
    await runtime.run_workers(stopping)
