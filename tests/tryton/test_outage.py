"""Tryton stopped while orders flow, then started again: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from entrepot.config import Settings, load_settings
from entrepot.spokes.tryton.server import TrytonServer
from entrepot.spokes.tryton.spoke import TrytonSpoke
from tests.harness import SECRET, TEST_TARGET, TEST_WORKERS, order_body, running_hub, wait_until

ORDERS = range(5800001, 5800009)


def _settings(data_dir: Path, tryton: TrytonServer, **target: Any) -> Settings:
    return load_settings(
        shopify={"webhook_secret": SECRET},
        store={"data_dir": data_dir},
        targets={
            "erp": {
                **TEST_TARGET,
                "kind": "tryton",
                "base_url": tryton.url,
                "max_attempts": 50,
                "tryton": {"database": tryton.database, "poll_interval_seconds": 0.5},
                **target,
            }
        },
        workers=TEST_WORKERS,
    )


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 4])
async def test_tryton_restarted_mid_run_loses_nothing(
    fresh_tryton: TrytonServer, tmp_path: Path, batch_size: int
) -> None:
    settings = _settings(tmp_path / "hub", fresh_tryton, batch_size=batch_size)
    async with running_hub(settings) as hub:
        for order_id in ORDERS[:3]:
            await hub.post_webhook(order_body(order_id))
        await wait_until(lambda: _accepted(hub, ORDERS[:3]), 60, "first orders accepted")

        fresh_tryton.stop()
        for order_id in ORDERS[3:]:
            await hub.post_webhook(order_body(order_id, base="order-1003"))
        await asyncio.sleep(1.0)
        waiting = await hub.order(str(ORDERS[-1]))
        fresh_tryton.start()

        await wait_until(lambda: _accepted(hub, ORDERS), 90, "every order accepted")
        views = [await hub.order(str(order_id)) for order_id in ORDERS]
        spoke = hub.runtime._erp_spokes["erp"]
        assert isinstance(spoke, TrytonSpoke)
        # A create that timed out during the outage may still land after the retry made
        # its sale; the read-back cancels such a leftover draft on its next poll.
        await wait_until(lambda: _one_live_sale_each(spoke), 30, "one live sale per order")
        sales = {order_id: await _live_sales(spoke, order_id) for order_id in ORDERS}

    assert waiting["state"] == "validated"
    assert "cannot connect" in (waiting["deliveries"][0]["last_error"] or "")
    assert all(len(found) == 1 for found in sales.values()), sales
    assert [view["erp_id"] for view in views] == [str(sales[o][0]) for o in ORDERS]


async def _live_sales(spoke: TrytonSpoke, order_id: int) -> list[int]:
    ids: list[int] = await spoke.rpc.model(
        "sale.sale",
        "search",
        [
            ["reference", "=", f"shopify:acme-fasteners.myshopify.com:{order_id}"],
            ["state", "!=", "cancelled"],
        ],
        0,
        None,
        None,
    )
    return ids


async def _one_live_sale_each(spoke: TrytonSpoke) -> bool:
    counts = [len(await _live_sales(spoke, order_id)) for order_id in ORDERS]
    return all(count == 1 for count in counts)


async def _accepted(hub: Any, order_ids: Any) -> bool:
    states = [await hub.state_of(str(order_id)) for order_id in order_ids]
    return all(state == "accepted" for state in states)
