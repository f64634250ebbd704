"""A delivery worker that stops: requests in flight finish, and claimed deliveries
whose request has not started go back to the queue without using an attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import func, select

from entrepot.canonical import SalesOrder
from entrepot.config import TargetSettings
from entrepot.runtime import Runtime
from entrepot.spokes.failures import DeliveryFailure
from entrepot.spokes.netsuite import NetSuiteSpoke
from entrepot.spokes.protocols import RequestGate, SubmitResult
from entrepot.store import deliveries
from entrepot.store.database import Database
from entrepot.store.tables import Delivery, Receipt
from tests.harness import (
    EXAMPLE_SKUS,
    ErpSim,
    Hub,
    hub_settings,
    order_body,
    running_hub,
    wait_until,
)

ORDERS = 16
# The latency of each ERP request. The first order's customer is written first, and
# the spoke remembers it, so each further order takes one request.
LATENCY_MS = 1_000


class BatchingNetSuite(NetSuiteSpoke):
    """The NetSuite spoke, taking a batch by sending its orders one after another."""

    async def submit_orders(
        self, orders: Sequence[SalesOrder]
    ) -> list[SubmitResult | DeliveryFailure]:
        results: list[SubmitResult | DeliveryFailure] = []
        for order in orders:
            try:
                results.append(await self.submit_order(order, look_up_first=False))
            except DeliveryFailure as failure:
                results.append(failure)
        return results


def create_batching_spoke(
    name: str, settings: TargetSettings, gate: RequestGate, database: Database
) -> BatchingNetSuite:
    return BatchingNetSuite(name, settings, gate)


@pytest.fixture
def slow_erp(tmp_path: Path) -> Iterator[ErpSim]:
    """The ERP simulator, taking ``LATENCY_MS`` for each request."""
    sim = ErpSim(tmp_path / "erp", concurrency=16, latency_ms=LATENCY_MS)
    sim.add_items(*EXAMPLE_SKUS)
    yield sim
    sim.close()


async def test_stop_puts_unstarted_deliveries_back(tmp_path: Path, slow_erp: ErpSim) -> None:
    settings = hub_settings(tmp_path / "hub", slow_erp.url, max_concurrency=4)
    async with running_hub(settings, workers=False) as hub:
        await _queue_deliveries(hub)
        # 10 deliveries are claimed at once. 4 start their requests, and 6 wait for a slot.
        await _stop_with_requests_in_flight(hub.runtime, slow_erp, 4)
        statuses = _delivery_statuses(hub.runtime.database)

    assert len(slow_erp.orders()) == 4
    assert statuses == {("done", 1, None): 4, ("pending", 0, None): ORDERS - 4}


async def test_stop_puts_unstarted_batches_back(tmp_path: Path, slow_erp: ErpSim) -> None:
    settings = hub_settings(
        tmp_path / "hub",
        slow_erp.url,
        kind="tests.delivery.test_stopping:create_batching_spoke",
        max_concurrency=2,
        batch_size=2,
    )
    async with running_hub(settings, workers=False) as hub:
        await _queue_deliveries(hub)
        # 6 deliveries are claimed at once, as three batches of 2. Two batches start
        # their requests, and the third waits for a slot.
        await _stop_with_requests_in_flight(hub.runtime, slow_erp, 2)
        statuses = _delivery_statuses(hub.runtime.database)

    assert len(slow_erp.orders()) == 4
    assert statuses == {("done", 1, None): 4, ("pending", 0, None): ORDERS - 4}


async def _queue_deliveries(hub: Hub) -> None:
    """Store ``ORDERS`` webhooks and run intake alone until each has its delivery, so
    that the delivery worker finds them all waiting."""
    for number in range(9301, 9301 + ORDERS):
        response = await hub.post_webhook(order_body(number), webhook_id=f"w-{number}")
        assert response.status_code == 200
    runtime = hub.runtime
    runtime.build_workers()
    assert runtime.intake is not None
    stopping = asyncio.Event()
    intake = asyncio.create_task(runtime.intake.run(stopping))
    try:
        await wait_until(lambda: _pending_deliveries(runtime.database), 30, "deliveries queued")
    finally:
        stopping.set()
        await intake


async def _pending_deliveries(database: Database) -> bool:
    with database.read() as session:
        unprocessed = session.scalar(
            select(func.count()).select_from(Receipt).where(Receipt.status != "processed")
        )
        pending = session.scalar(select(func.count()).select_from(Delivery))
    return unprocessed == 0 and pending == ORDERS


async def _stop_with_requests_in_flight(runtime: Runtime, erp: ErpSim, in_flight: int) -> None:
    """Start the workers, and stop them once ``in_flight`` ERP requests are open."""

    async def requests_open() -> bool:
        stats = await asyncio.to_thread(erp.stats)
        return bool(stats["in_flight"] >= in_flight)

    stopping = asyncio.Event()
    workers = asyncio.create_task(runtime.run_workers(stopping))
    try:
        await wait_until(requests_open, 30, f"{in_flight} requests in flight")
    finally:
        stopping.set()
        await workers


def _delivery_statuses(database: Database) -> dict[tuple[str, int, str | None], int]:
    """Count deliveries by status, attempts used and last error."""
    with database.read() as session:
        rows = session.execute(
            select(Delivery.status, Delivery.attempts, Delivery.last_error, func.count()).group_by(
                Delivery.status, Delivery.attempts, Delivery.last_error
            )
        ).all()
    return {(status, attempts, error): count for status, attempts, error, count in rows}


async def test_stop_past_the_grace_ends_leases_for_the_next_worker(
    tmp_path: Path, slow_erp: ErpSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests still open when the grace runs out are stopped; their deliveries can be
    taken at once, as ambiguous, instead of after their lease."""
    monkeypatch.setattr("entrepot.delivery.worker.STOP_GRACE_SECONDS", 0.2)
    settings = hub_settings(tmp_path / "hub", slow_erp.url, max_concurrency=4)
    async with running_hub(settings, workers=False) as hub:
        await _queue_deliveries(hub)
        await _stop_with_requests_in_flight(hub.runtime, slow_erp, 4)
        with hub.runtime.database.read() as session:
            rows = list(session.scalars(select(Delivery)))
            stopped = [row for row in rows if row.status == "in_flight"]
        claimed = hub.runtime.database.write(
            lambda session: deliveries.claim_batch(session, "erp", "next", 30, 50)
        )

    assert len(stopped) == 4
    assert sorted((row.status, row.attempts) for row in rows if row not in stopped) == [
        ("pending", 0)
    ] * (ORDERS - 4)
    taken = {item.id: item.ambiguous for item in claimed}
    assert all(taken[row.id] for row in stopped)
