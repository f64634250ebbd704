"""A Shopify order through the hub into Tryton, shipped there, and back to the shop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select

from entrepot.config import Settings, load_settings
from entrepot.spokes.tryton.server import TrytonServer
from entrepot.spokes.tryton.spoke import TrytonSpoke
from entrepot.spokes.tryton.warehouse import post_invoices, ship_sale
from entrepot.store.tables import ChannelPush, ErpEvent, PollCursor
from tests.harness import (
    SECRET,
    SHOP,
    TEST_TARGET,
    TEST_WORKERS,
    order_body,
    running_hub,
    wait_until,
)
from tests.shopsim import ShopSim

TRACKING = "1Z999AA10123456784"


def _settings(data_dir: Path, tryton: TrytonServer, shop: ShopSim) -> Settings:
    target = {
        **TEST_TARGET,
        "kind": "tryton",
        "base_url": tryton.url,
        "tryton": {"database": tryton.database, "poll_interval_seconds": 0.2},
    }
    return load_settings(
        shopify={
            "webhook_secret": SECRET,
            "pull_interval_seconds": 3600,
            "shops": {SHOP: shop.shop_settings(location_id=shop.location_id)},
        },
        store={"data_dir": data_dir},
        targets={"erp": target},
        workers=TEST_WORKERS,
    )


async def test_shipment_in_tryton_reaches_the_shop_once(
    tryton: TrytonServer, shop: ShopSim, tmp_path: Path
) -> None:
    shipped_order = order_body(5700001, base="order-1001")
    other_order = order_body(5700002, base="order-1003")
    shop.load("orders", [shipped_order, other_order])
    shop.load("products", [{"title": "M8 bolt", "variants": [{"sku": "ACME-BOLT-M8"}]}])
    settings = _settings(tmp_path / "hub", tryton, shop)

    async with running_hub(settings) as hub:
        for body in (shipped_order, other_order):
            assert (await hub.post_webhook(body)).status_code == 200
        await hub.wait_drained()
        order = await hub.order("5700001")
        assert order["state"] == "accepted"
        spoke = hub.runtime._erp_spokes["erp"]
        assert isinstance(spoke, TrytonSpoke)

        await ship_sale(spoke.rpc, int(order["erp_id"]), TRACKING)

        async def fulfilled() -> bool:
            return bool(shop.recorded("fulfillments"))

        await wait_until(fulfilled, 30, "fulfillment in the shop")
        await wait_until(
            lambda: _state_is(hub, "5700001", "shipped"), 30, "order shipped in entrepot"
        )

        # Poll again from the start, as after a lost cursor: nothing is sent twice.
        reader = hub.runtime.readers["erp"]
        database = hub.runtime.database
        database.write(lambda session: session.execute(delete(PollCursor)))
        await reader.poll_once()
        await reader.poll_once()
        await hub.runtime.pushes.push_once()  # type: ignore[union-attr]

        await post_invoices(spoke.rpc, int(order["erp_id"]))
        await wait_until(
            lambda: _state_is(hub, "5700001", "invoiced"), 30, "order invoiced in entrepot"
        )
        levels = shop.recorded("inventory_levels")
        other = await hub.order("5700002")

    fulfillments = shop.recorded("fulfillments")
    assert len(fulfillments) == 1
    (fulfillment,) = fulfillments
    assert fulfillment["order_id"] == 5700001
    assert fulfillment["tracking_number"] == TRACKING
    assert [(item["sku"], item["quantity"]) for item in fulfillment["line_items"]] == [
        ("ACME-BOLT-M8", 2)
    ]
    with database.read() as session:
        events = session.scalar(
            select(func.count()).select_from(ErpEvent).where(ErpEvent.kind == "shipment.confirmed")
        )
        pushed = session.scalar(
            select(func.count()).select_from(ChannelPush).where(ChannelPush.kind == "fulfillment")
        )
        dead = session.scalar(
            select(func.count()).select_from(ChannelPush).where(ChannelPush.status == "dead")
        )
    assert events == 1
    assert pushed == 1
    assert dead == 0
    bolt = [level for level in levels if level["available"] is not None]
    assert [level["available"] for level in bolt] == [998]
    assert other["state"] == "accepted"


async def _state_is(hub: Any, key: str, state: str) -> bool:
    return bool(await hub.state_of(key) == state)
