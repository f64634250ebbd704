"""The running hub: store, spokes and workers, in one process or spread over several.

`entrepot run` serves HTTP and runs the workers in one process; `entrepot worker`
runs the workers alone. Any number of worker processes may share one store:
leases in the database decide who works on what.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from entrepot.config import Settings
from entrepot.delivery.budget import TargetBudget
from entrepot.delivery.worker import TargetWorker
from entrepot.hub.intake import IntakeProcessor
from entrepot.hub.intake_worker import IntakeWorker
from entrepot.spokes.protocols import ChannelSpoke, ErpSpoke, load_channel_spokes, load_erp_spoke
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
        self.intake: IntakeWorker | None = None

    def notify_receipt(self) -> None:
        """Wake the intake worker of this process, if it runs here."""
        if self.intake is not None:
            self.intake.wake.set()

    def notify_target(self, target: str) -> None:
        worker = self.targets.get(target)
        if worker is not None:
            worker.wake.set()

    def build_workers(self) -> None:
        workers = self.settings.workers
        processor = IntakeProcessor(self.database, self.channels, self.settings.routing)
        self.intake = IntakeWorker(
            self.database,
            processor,
            owner=self.owner,
            lease_seconds=workers.lease_seconds,
            poll_interval=workers.poll_interval_seconds,
            batch_size=workers.intake_batch_size,
            on_queued=self.notify_target,
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

    async def run_workers(self, stopping: asyncio.Event) -> None:
        """Run every worker until ``stopping`` is set, then close the spokes."""
        if self.intake is None:
            self.build_workers()
        assert self.intake is not None
        runs = [self.intake.run(stopping)] + [w.run(stopping) for w in self.targets.values()]
        try:
            await asyncio.gather(*runs)
        finally:
            for spoke in self._erp_spokes.values():
                await spoke.aclose()

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
