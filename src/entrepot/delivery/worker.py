"""The worker of one target: claims deliveries and sends them within the budget."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from entrepot.canonical.versions import load_sales_order
from entrepot.config import TargetSettings
from entrepot.delivery.backoff import Backoff
from entrepot.delivery.budget import TargetBudget, TargetClosedError
from entrepot.delivery.outcomes import Failed, Outcome, Sent, Waiting
from entrepot.delivery.recording import OutcomeRecorder
from entrepot.hub.lifecycle import OrderState
from entrepot.observability.logging import correlation_scope
from entrepot.spokes.failures import DeliveryFailure, NothingToDo, RetryLater
from entrepot.spokes.protocols import BatchingErpSpoke, ErpSpoke, SubmitResult
from entrepot.store import deliveries
from entrepot.store.database import Database
from entrepot.store.deliveries import ClaimedDelivery
from entrepot.store.tables import Order
from entrepot.store.types import utc_now
from entrepot.wakeups import wait_for_work

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 10.0
MAX_CLAIM = 50  # deliveries taken in one transaction at most


class TargetWorker:
    """Sends the deliveries of one target, as many at once as its budget allows."""

    def __init__(
        self,
        name: str,
        settings: TargetSettings,
        spoke: ErpSpoke,
        budget: TargetBudget,
        database: Database,
        *,
        owner: str,
        lease_seconds: float,
        poll_interval: float,
    ) -> None:
        self.name = name
        self.wake = asyncio.Event()
        self._spoke = spoke
        self._database = database
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._poll_interval = poll_interval
        self._budget = budget
        self._recorder = OutcomeRecorder(
            name,
            settings.max_attempts,
            Backoff(settings.backoff_initial_seconds, settings.backoff_max_seconds),
        )
        self._sending: dict[asyncio.Task[None], list[ClaimedDelivery]] = {}
        self._started: set[int] = set()  # deliveries whose request has begun
        # Set by `run` once the worker must stop. A claimed delivery whose
        # request has not started by then goes back to the queue instead.
        self._stopping = asyncio.Event()
        self._put_back_count = 0
        self._batch_size = settings.batch_size if isinstance(spoke, BatchingErpSpoke) else 1
        self._batch_wait = settings.batch_wait_seconds
        # Claimed deliveries that this worker holds, from claim to recorded outcome.
        # A few more than the concurrency, so that the next ones are ready when a
        # request ends, and the outcome of the last one is written meanwhile.
        held = (settings.max_concurrency + 1) * self._batch_size
        self._held = asyncio.Semaphore(min(MAX_CLAIM, max(held, 2 * settings.max_concurrency + 2)))

    async def run(self, stopping: asyncio.Event) -> None:
        """Claim and send deliveries until ``stopping`` is set.

        Requests in flight then finish, within ``STOP_GRACE_SECONDS``. Claimed
        deliveries whose request has not started are put back, using no attempt.
        """
        self._stopping = stopping
        await self._budget.start()
        log.info("Delivery worker for %s started.", self.name)
        try:
            while not stopping.is_set():
                try:
                    await self._claim_and_send(stopping)
                except Exception:
                    # The store failed even after its retries; a claimed delivery
                    # keeps its lease, which runs out, so waiting loses nothing.
                    log.exception("Claiming a delivery for %s failed; trying again.", self.name)
                    await wait_for_work(self.wake, stopping, self._poll_interval)
        finally:
            await self._drain()
            if self._put_back_count:
                log.info(
                    "Put %d claimed deliveries to %s back in the queue without sending them.",
                    self._put_back_count,
                    self.name,
                )
            log.info("Delivery worker for %s stopped.", self.name)

    async def _claim_and_send(self, stopping: asyncio.Event) -> None:
        closed_until = self._budget.closed_until()
        if closed_until is not None:
            seconds = (closed_until - utc_now()).total_seconds()
            await wait_for_work(self.wake, stopping, min(max(seconds, 0.01), self._poll_interval))
            return

        slots = await self._take_free_slots(stopping)
        if not slots:
            return
        try:
            claimed = await self._claim_filling(slots, stopping)
        except BaseException:
            self._release_slots(slots)
            raise
        self._release_slots(slots - len(claimed))
        if not claimed:
            await wait_for_work(self.wake, stopping, self._poll_interval)
            return
        for group in self._groups(claimed):
            send = self._send(group[0]) if len(group) == 1 else self._send_batch(group)
            task = asyncio.create_task(send, name=f"deliver-{group[0].id}")
            self._sending[task] = group
            task.add_done_callback(self._sent)

    async def _claim_filling(self, slots: int, stopping: asyncio.Event) -> list[ClaimedDelivery]:
        """Claim up to ``slots`` deliveries; when batching, wait a moment for a batch
        that is not full yet to fill."""
        claimed = await asyncio.to_thread(self._claim, slots)
        if not claimed or self._batch_size == 1 or len(claimed) >= min(slots, self._batch_size):
            return claimed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), self._batch_wait)
        if stopping.is_set():
            return claimed
        more = await asyncio.to_thread(self._claim, min(slots, self._batch_size) - len(claimed))
        return claimed + more

    def _groups(self, claimed: list[ClaimedDelivery]) -> list[list[ClaimedDelivery]]:
        """Split claimed deliveries into batches of orders to create, and the rest alone."""
        if self._batch_size == 1:
            return [[delivery] for delivery in claimed]
        upserts = [delivery for delivery in claimed if delivery.action == "upsert"]
        alone = [[delivery] for delivery in claimed if delivery.action != "upsert"]
        size = self._batch_size
        return alone + [upserts[start : start + size] for start in range(0, len(upserts), size)]

    async def _take_free_slots(self, stopping: asyncio.Event) -> int:
        """Wait for room for one more claimed delivery, then take all the room there
        is, so that one claim fills it. Returns 0 when ``stopping`` is set first."""
        if not await self._acquire_unless(stopping):
            return 0
        taken = 1
        while not self._held.locked():
            await self._held.acquire()
            taken += 1
        return taken

    async def _acquire_unless(self, stopping: asyncio.Event) -> bool:
        acquire = asyncio.ensure_future(self._held.acquire())
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if acquire.done() and not acquire.cancelled():
            return True
        acquire.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acquire
        # Not cancelled means it acquired while being cancelled; the caller releases it.
        return not acquire.cancelled()

    def _release_slots(self, count: int) -> None:
        for _ in range(count):
            self._held.release()

    def _sent(self, task: asyncio.Task[None]) -> None:
        group = self._sending.pop(task, [])
        self._started.difference_update(claimed.id for claimed in group)
        self._release_slots(len(group) or 1)
        if not task.cancelled() and task.exception() is not None:
            log.critical("Sending a delivery to %s crashed.", self.name, exc_info=task.exception())

    def _claim(self, limit: int) -> list[ClaimedDelivery]:
        return self._database.write(
            lambda session: deliveries.claim_batch(
                session, self.name, self._owner, self._lease_seconds, limit
            )
        )

    async def _send(self, claimed: ClaimedDelivery) -> None:
        with correlation_scope(claimed.correlation_id):
            heartbeat = asyncio.create_task(self._renew_lease(claimed))
            try:
                outcome = await self._attempt(claimed)
            finally:
                heartbeat.cancel()
            pause = await asyncio.to_thread(self._record, claimed, outcome)
            if pause:
                self._budget.pause(pause)

    async def _send_batch(self, batch: list[ClaimedDelivery]) -> None:
        heartbeats = [asyncio.create_task(self._renew_lease(claimed)) for claimed in batch]
        try:
            outcomes = await self._attempt_batch(batch)
        finally:
            for heartbeat in heartbeats:
                heartbeat.cancel()
        if not all(isinstance(outcome, Waiting) for outcome in outcomes):
            log.info("Sent a batch of %d orders to %s.", len(batch), self.name)
        for claimed, outcome in zip(batch, outcomes, strict=True):
            with correlation_scope(claimed.correlation_id):
                pause = await asyncio.to_thread(self._record, claimed, outcome)
            if pause:
                self._budget.pause(pause)

    async def _attempt_batch(self, batch: list[ClaimedDelivery]) -> list[Outcome]:
        rows = await asyncio.to_thread(
            lambda: [self._load_order(claimed.order_id) for claimed in batch]
        )
        outcomes: list[Outcome | None] = [None] * len(batch)
        to_send: list[int] = []
        for index, row in enumerate(rows):
            if row["state"] == OrderState.CANCELLED:
                reason = "the order was cancelled, so this version is not posted"
                outcomes[index] = Failed(NothingToDo(reason))
            else:
                to_send.append(index)
        orders = [load_sales_order(rows[index]["canonical"]) for index in to_send]
        spoke = self._spoke
        assert isinstance(spoke, BatchingErpSpoke)
        async with self._budget.slots:
            if self._stopping.is_set():
                sent: Outcome | list[SubmitResult | DeliveryFailure] = self._put_back(len(orders))
            else:
                self._started.update(claimed.id for claimed in batch)
                sent = await self._within_breaker(lambda: spoke.submit_orders(orders))
        for position, index in enumerate(to_send):
            outcomes[index] = _outcome(sent[position]) if isinstance(sent, list) else sent
        return [outcome for outcome in outcomes if outcome is not None]

    async def _within_breaker(
        self, request: Callable[[], Awaitable[list[SubmitResult | DeliveryFailure]]]
    ) -> Outcome | list[SubmitResult | DeliveryFailure]:
        """Send a batch; a failure of the whole batch comes back as one outcome."""
        try:
            return await self._budget.call(request)
        except TargetClosedError as exc:
            return Waiting(exc.until, str(exc))
        except DeliveryFailure as failure:
            return Failed(failure)
        except Exception as exc:
            log.exception("A batch to %s failed unexpectedly.", self.name)
            return Failed(RetryLater(f"unexpected error: {exc!r}"))

    async def _attempt(self, claimed: ClaimedDelivery) -> Outcome:
        order_row = await asyncio.to_thread(self._load_order, claimed.order_id)
        async with self._budget.slots:
            if self._stopping.is_set():
                return self._put_back(1)
            self._started.add(claimed.id)
            return await self._request_within_breaker(claimed, order_row)

    async def _request_within_breaker(
        self, claimed: ClaimedDelivery, order_row: dict[str, Any]
    ) -> Outcome:
        try:
            result = await self._budget.call(lambda: self._request(claimed, order_row))
        except TargetClosedError as exc:
            return Waiting(exc.until, str(exc))
        except DeliveryFailure as failure:
            return Failed(failure)
        except Exception as exc:
            # An unexpected error in a spoke is a bug; retry it like any failure
            # so the message reaches the dead letters if it keeps failing.
            log.exception("Delivery %d to %s failed unexpectedly.", claimed.id, self.name)
            return Failed(RetryLater(f"unexpected error: {exc!r}"))
        return Sent(result)

    async def _request(self, claimed: ClaimedDelivery, order_row: dict[str, Any]) -> SubmitResult:
        order = load_sales_order(order_row["canonical"])
        if claimed.action == "cancel":
            return await self._spoke.cancel_order(order)
        if order_row["state"] == OrderState.CANCELLED:
            raise NothingToDo("the order was cancelled, so this version is not posted")
        return await self._spoke.submit_order(order, look_up_first=claimed.ambiguous)

    def _put_back(self, count: int) -> Waiting:
        """Return the outcome of ``count`` deliveries not sent because the worker is
        stopping. Each keeps its place in the queue and gets its attempt back."""
        self._put_back_count += count
        return Waiting(utc_now(), "the worker is stopping")

    def _load_order(self, order_id: int) -> dict[str, Any]:
        with self._database.read() as session:
            order = session.get(Order, order_id)
            assert order is not None and order.canonical is not None
            return {"canonical": order.canonical, "state": order.state}

    def _record(self, claimed: ClaimedDelivery, outcome: Outcome) -> float | None:
        return self._database.write(
            lambda session: self._recorder.record(session, claimed, outcome)
        )

    async def _renew_lease(self, claimed: ClaimedDelivery) -> None:
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            try:
                renewed = await asyncio.to_thread(
                    self._database.write,
                    lambda session: deliveries.renew_lease(session, claimed, self._lease_seconds),
                )
            except Exception:
                log.exception("Renewing the lease on delivery %d failed.", claimed.id)
                continue
            if not renewed:
                log.warning("Lost the lease on delivery %d to %s.", claimed.id, self.name)
                return

    async def _drain(self) -> None:
        if not self._sending:
            return
        _done, pending = await asyncio.wait(list(self._sending), timeout=STOP_GRACE_SECONDS)
        cut = [claimed for task in pending for claimed in self._sending.get(task, [])]
        stopped = [claimed for claimed in cut if claimed.id in self._started]
        unstarted = [claimed for claimed in cut if claimed.id not in self._started]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for claimed in unstarted:
            await asyncio.to_thread(self._record, claimed, self._put_back(1))
        if stopped:
            # The requests may have reached the target: end their leases now, so the
            # next worker takes them at once, as ambiguous, instead of after the lease.
            await asyncio.to_thread(
                self._database.write,
                lambda session: deliveries.end_leases(session, stopped),
            )
            log.warning(
                "Stopped %d deliveries to %s in flight; the next worker sends them again "
                "after looking them up.",
                len(stopped),
                self.name,
            )


def _outcome(result: SubmitResult | DeliveryFailure) -> Outcome:
    return Failed(result) if isinstance(result, DeliveryFailure) else Sent(result)
