"""The intake worker: claims stored receipts and hands them to the processor."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from entrepot.hub.intake import IntakeProcessor
from entrepot.hub.pulls import OrderRereader
from entrepot.store.database import Database
from entrepot.store.receipts import claim_receipts, renew_receipt_leases
from entrepot.store.tables import Receipt
from entrepot.wakeups import wait_for_work

log = logging.getLogger(__name__)


class IntakeWorker:
    """Processes receipts as they arrive; ``wake`` is set when one is stored."""

    def __init__(
        self,
        database: Database,
        processor: IntakeProcessor,
        *,
        owner: str,
        lease_seconds: float,
        poll_interval: float,
        batch_size: int,
        on_queued: Callable[[str], None],
        rereader: OrderRereader | None = None,
    ) -> None:
        self.wake = asyncio.Event()
        self._database = database
        self._processor = processor
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._on_queued = on_queued
        self._rereader = rereader

    async def run(self, stopping: asyncio.Event) -> None:
        log.info("Intake worker started.")
        while not stopping.is_set():
            try:
                worked = await self._process_batch()
            except Exception:
                # The store failed even after its retries. The claimed receipts keep
                # their leases, which run out, so nothing is lost by waiting.
                log.exception("Intake failed; trying again in %.1f s.", self._poll_interval)
                worked = False
            if not worked:
                await wait_for_work(self.wake, stopping, self._poll_interval)
        log.info("Intake worker stopped.")

    async def _process_batch(self) -> bool:
        receipts = await asyncio.to_thread(self._claim)
        unfinished = [receipt.id for receipt in receipts]
        heartbeat = asyncio.create_task(self._renew_leases(unfinished))
        try:
            for receipt in receipts:
                try:
                    await self._process_one(receipt)
                except Exception:
                    # Even recording the failure failed. The rest of the batch goes
                    # on, and this receipt is claimed again once its lease runs out.
                    log.exception(
                        "Processing receipt %r failed; it is processed again once its "
                        "lease runs out.",
                        receipt.correlation_id,
                    )
                finally:
                    unfinished.remove(receipt.id)
        finally:
            heartbeat.cancel()
        return bool(receipts)

    async def _process_one(self, receipt: Receipt) -> None:
        if await self._superseded(receipt):
            return
        result = await asyncio.to_thread(self._processor.process, receipt)
        if result.queued_target is not None:
            self._on_queued(result.queued_target)

    async def _superseded(self, receipt: Receipt) -> bool:
        """Re-read the order of an update webhook; return True when the order as read
        now is stored as a receipt of its own, which takes this one's place."""
        if self._rereader is None or not self._rereader.wants(receipt):
            return False
        current = await self._rereader.reread(receipt)
        if current is None:
            return False
        outcome = (
            f"superseded by receipt {current.receipt_id}, the order as re-read from the "
            "Admin API" + (" (a version already received)" if current.duplicate else "")
        )
        await asyncio.to_thread(self._processor.supersede, receipt, current.order_id, outcome)
        self.wake.set()
        return True

    async def _renew_leases(self, receipt_ids: list[int]) -> None:
        """Keep the claimed receipts' leases alive while the batch is processed, so a
        slow receipt is not taken over by another worker meanwhile."""
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            if not receipt_ids:
                return
            try:
                await asyncio.to_thread(
                    self._database.write,
                    lambda session: renew_receipt_leases(
                        session, list(receipt_ids), self._owner, self._lease_seconds
                    ),
                )
            except Exception:
                log.exception("Renewing the leases of %d receipts failed.", len(receipt_ids))

    def _claim(self) -> list[Receipt]:
        return self._database.write(
            lambda session: claim_receipts(
                session, self._owner, self._lease_seconds, self._batch_size
            )
        )
