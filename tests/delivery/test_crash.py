"""The hub killed with SIGKILL while orders are in flight, then started again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from entrepot.store.database import Database
from entrepot.store.tables import Delivery, Order, Receipt
from tests.harness import ErpSim, HubProcess, order_body, write_config

ORDERS = 30


@pytest.mark.parametrize("kill_when_posted", [2, 15])
def test_killed_hub_delivers_each_order_once(
    tmp_path: Path, erp: ErpSim, kill_when_posted: int
) -> None:
    erp.admin.post("/_sim/reset").raise_for_status()
    erp.add_items("ACME-BOLT-M8")
    config = write_config(
        tmp_path / "hub.toml",
        erp.url,
        target={"max_concurrency": 4, "requests_per_second": 20},
        workers={"lease_seconds": 2},
    )
    data_dir = tmp_path / "hub"
    erp.admin.post("/_sim/faults", json={"kind": "slow", "count": 1000, "seconds": 0.3})

    first = HubProcess(data_dir, config)
    acknowledged = []
    for number in range(9101, 9101 + ORDERS):
        response = first.post_webhook(order_body(number), webhook_id=f"w-{number}")
        assert response.status_code == 200
        acknowledged.append(number)
    in_flight_at_kill = _wait_for_posted(erp, kill_when_posted)
    first.kill()

    second = HubProcess(data_dir, config, log_name="hub-2.log")
    database = Database(f"sqlite:///{data_dir / 'entrepot.db'}")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _drained(database):
            time.sleep(0.2)
        with database.read() as session:
            states = dict(
                session.execute(select(Order.state, func.count()).group_by(Order.state)).all()
            )
    finally:
        second.stop()
        database.dispose()

    posted = erp.orders()
    assert in_flight_at_kill > 0
    assert states == {"accepted": ORDERS}
    assert sorted(order["otherRefNum"] for order in posted) == [f"#{n}" for n in acknowledged]
    assert {order["writeCount"] for order in posted} == {1}


def _wait_for_posted(erp: ErpSim, posted: int) -> int:
    """Wait until ``posted`` orders are in the ERP with more in flight; return how many."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        in_flight = erp.stats()["in_flight"]
        if len(erp.orders()) >= posted and in_flight > 0:
            return int(in_flight)
        time.sleep(0.02)
    raise AssertionError(f"{posted} orders were not posted with more in flight")


def _drained(database: Database) -> bool:
    with database.read() as session:
        waiting_receipts = session.scalar(
            select(func.count()).where(Receipt.status.in_(("received", "processing")))
        )
        open_deliveries = session.scalar(
            select(func.count()).where(Delivery.status.in_(("pending", "in_flight")))
        )
    return waiting_receipts == 0 and open_deliveries == 0


def test_sigterm_finishes_in_flight_delivery(tmp_path: Path, erp: ErpSim) -> None:
    erp.add_items("ACME-BOLT-M8")
    erp.admin.post("/_sim/faults", json={"kind": "slow", "count": 1, "seconds": 2})
    config = write_config(tmp_path / "hub.toml", erp.url)
    data_dir = tmp_path / "hub"
    hub = HubProcess(data_dir, config)
    hub.post_webhook(order_body(9151), webhook_id="w-9151")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and erp.stats()["in_flight"] == 0:
        time.sleep(0.02)
    hub.stop()

    database = Database(f"sqlite:///{data_dir / 'entrepot.db'}")
    with database.read() as session:
        statuses = list(session.scalars(select(Delivery.status)))
    database.dispose()
    log = (data_dir / "hub.log").read_text()
    assert statuses == ["done"]
    assert "Delivery worker for erp stopped." in log
    assert "Application shutdown complete." in log
