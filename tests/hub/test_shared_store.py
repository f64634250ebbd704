"""Hubs on SQLite and PostgreSQL, alone and several sharing one store."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.harness import (
    ErpSim,
    HubProcess,
    hub_settings,
    order_body,
    running_hub,
    wait_until,
    write_config,
)


async def test_orders_flow_on_each_store(tmp_path: Path, erp: ErpSim, store_url: str) -> None:
    missing_sku = order_body(8010)
    del missing_sku["line_items"][0]["sku"]
    settings = hub_settings(tmp_path, erp.url, store_url=store_url)

    async with running_hub(settings) as hub:
        for number in range(8000, 8010):
            for _ in range(2):
                response = await hub.post_webhook(order_body(number), webhook_id=f"w-{number}")
                assert response.status_code == 200
        await hub.post_webhook(missing_sku, webhook_id="w-8010")
        await hub.wait_drained()
        summary = await hub.summary()
        rejected = await hub.order("8010")

    posted = erp.orders()
    assert sorted(order["otherRefNum"] for order in posted) == [f"#{n}" for n in range(8000, 8010)]
    assert {order["writeCount"] for order in posted} == {1}
    assert summary["orders"] == {"accepted": 10, "rejected": 1}
    assert summary["duplicates_ignored"] == 10
    assert rejected["dead_letters"][0]["reason"].startswith("line_items[0].sku: missing")


async def test_two_hubs_share_one_store(tmp_path: Path, erp: ErpSim, store_url: str) -> None:
    settings = hub_settings(tmp_path, erp.url, store_url=store_url, max_concurrency=2)
    sends = [(number, side) for number in range(8100, 8130) for side in (0, 1)]
    random.Random(8).shuffle(sends)

    async with running_hub(settings) as first, running_hub(settings) as second:
        hubs = (first, second)
        for number, side in sends:
            body = json.dumps(order_body(number)).encode()
            response = await hubs[side].post_webhook(body, webhook_id=f"w-{number}")
            assert response.status_code == 200
        await first.wait_drained()
        await second.wait_drained()
        summary = await first.summary()

    posted = erp.orders()
    assert sorted(order["otherRefNum"] for order in posted) == [f"#{n}" for n in range(8100, 8130)]
    assert {order["writeCount"] for order in posted} == {1}
    assert summary["orders"] == {"accepted": 30}
    assert summary["duplicates_ignored"] == 30


def test_run_and_worker_processes_share_postgres(
    tmp_path: Path, erp: ErpSim, postgres_url: str
) -> None:
    erp.fault(kind="slow", count=1000, seconds=0.2)
    config = write_config(
        tmp_path / "hub.toml",
        erp.url,
        store_url=postgres_url,
        target={"max_concurrency": 2},
        workers={"poll_interval_seconds": 2},
    )
    server = HubProcess(tmp_path / "run", config)
    worker = HubProcess(tmp_path / "worker", config, command="worker", log_name="worker.log")
    try:
        _wait_for_listeners(postgres_url, 2)
        for number in range(8200, 8240):
            response = server.post_webhook(order_body(number), webhook_id=f"w-{number}")
            assert response.status_code == 200
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(erp.orders()) < 40:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        worker.stop()
        server.stop()

    posted = erp.orders()
    worker_log = (tmp_path / "worker" / "worker.log").read_text()
    assert sorted(order["otherRefNum"] for order in posted) == [f"#{n}" for n in range(8200, 8240)]
    assert {order["writeCount"] for order in posted} == {1}
    assert "posted to erp" in worker_log


async def test_worker_process_wakes_on_notify(
    tmp_path: Path, erp: ErpSim, postgres_url: str
) -> None:
    poll_seconds = 30
    settings = hub_settings(tmp_path / "api", erp.url, store_url=postgres_url)
    config = write_config(
        tmp_path / "hub.toml",
        erp.url,
        store_url=postgres_url,
        workers={"poll_interval_seconds": poll_seconds},
    )

    async with running_hub(settings, workers=False) as api:
        worker = HubProcess(tmp_path / "worker", config, command="worker", log_name="worker.log")
        try:
            _wait_for_listeners(postgres_url, 1)
            started = time.monotonic()
            await api.post_webhook(order_body(8300), webhook_id="w-8300")
            await wait_until(
                lambda: _posted(erp), within=poll_seconds / 2, message="order posted to the ERP"
            )
            elapsed = time.monotonic() - started
            state = await api.state_of("8300")
        finally:
            worker.stop()

    assert elapsed < 5, f"the worker took {elapsed:.1f} s; its poll interval is {poll_seconds} s"
    assert state == "accepted"


async def _posted(erp: ErpSim) -> bool:
    return len(erp.orders()) == 1


def _wait_for_listeners(url: str, count: int, within: float = 30.0) -> None:
    """Wait until ``count`` connections to the database LISTEN for store notifications."""
    engine = create_engine(url)
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                if connection.scalar(query) == count:
                    return
            time.sleep(0.1)
    finally:
        engine.dispose()
    raise AssertionError(f"{count} listeners not connected within {within} s")
