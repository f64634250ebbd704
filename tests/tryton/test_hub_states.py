"""Refusals and holds through the hub: the stored state and reason, others flowing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from entrepot.config import load_settings
from entrepot.spokes.tryton.server import TrytonServer
from entrepot.spokes.tryton.spoke import TrytonSpoke
from tests.harness import (
    SECRET,
    SHOP,
    TEST_TARGET,
    TEST_WORKERS,
    order_body,
    running_hub,
    wait_until,
)
from tests.tryton.helpers import in_currency


async def test_refused_and_held_orders_keep_their_reason(
    tryton: TrytonServer, tmp_path: Path
) -> None:
    unknown_sku = order_body(5900001)
    unknown_sku["line_items"][0]["sku"] = "NOT-IN-TRYTON"
    unknown_currency = in_currency(order_body(5900002), "GBP")
    held = order_body(5900003)
    held["customer"]["id"] = 5900303
    good = order_body(5900004, base="order-1002")
    target = {
        **TEST_TARGET,
        "kind": "tryton",
        "base_url": tryton.url,
        "tryton": {"database": tryton.database, "hold_recheck_seconds": 0.5},
    }
    settings = load_settings(
        shopify={"webhook_secret": SECRET},
        store={"data_dir": tmp_path},
        targets={"erp": target},
        workers=TEST_WORKERS,
    )

    async with running_hub(settings) as hub:
        spoke = hub.runtime._erp_spokes["erp"]
        assert isinstance(spoke, TrytonSpoke)
        hold = await _hold_customer(spoke, f"shopify:{SHOP}:5900303")
        for body in (unknown_sku, unknown_currency, held, good):
            assert (await hub.post_webhook(body)).status_code == 200
        await wait_until(lambda: _in_state(hub, "5900004", "accepted"), 60, "good order")
        await wait_until(lambda: _in_state(hub, "5900003", "credit_hold"), 60, "held order")
        # Let the hold be checked again twice, then read the order between two checks,
        # when its delivery waits rather than runs the current check.
        await asyncio.sleep(1.2)
        views = {key: await hub.order(key) for key in ("5900001", "5900002")}
        views["5900003"] = await _waiting_view(hub, "5900003")

        party, category = hold
        await spoke.rpc.model(
            "party.party", "write", [party], {"categories": [["remove", [category]]]}
        )
        await wait_until(lambda: _in_state(hub, "5900003", "accepted"), 60, "released order")
        released = await hub.order("5900003")

    assert views["5900001"]["state"] == "rejected"
    assert "unknown SKU 'NOT-IN-TRYTON'" in views["5900001"]["last_error"]
    assert views["5900002"]["state"] == "rejected"
    assert "currency GBP is not set up in Tryton" in views["5900002"]["last_error"]
    assert views["5900003"]["state"] == "credit_hold"
    assert "'Credit hold'" in views["5900003"]["last_error"]
    assert views["5900003"]["deliveries"][0]["attempts"] == 0
    assert released["erp_id"] is not None
    assert [step["to_state"] for step in released["history"]].count("credit_hold") == 1


async def _hold_customer(spoke: TrytonSpoke, identifier: str) -> tuple[int, int]:
    (category,) = await spoke.rpc.model(
        "party.category", "search", [["name", "=", "Credit hold"]], 0, 1, None
    )
    (party,) = await spoke.rpc.model(
        "party.party",
        "create",
        [
            {
                "name": "Held customer",
                "identifiers": [["create", [{"code": identifier}]]],
                "categories": [["add", [category]]],
            }
        ],
    )
    return int(party), int(category)


async def _waiting_view(hub: Any, key: str) -> dict[str, Any]:
    """Return the order's view once it shows its first delivery pending."""
    deadline = time.monotonic() + 10
    while (view := await hub.order(key))["deliveries"][0]["status"] != "pending":
        assert time.monotonic() < deadline, f"order {key} shows no pending delivery in 10 s"
        await asyncio.sleep(0.02)
    result: dict[str, Any] = view
    return result


async def _in_state(hub: Any, key: str, state: str) -> bool:
    return bool(await hub.state_of(key) == state)
