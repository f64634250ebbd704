"""Orders read from the Shopify Admin API: a lost webhook, and an update re-read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from entrepot.config import Settings, load_settings
from entrepot.store.tables import Receipt
from tests.harness import (
    SECRET,
    SHOP,
    TEST_TARGET,
    TEST_WORKERS,
    ErpSim,
    order_body,
    running_hub,
)
from tests.shopsim import ShopSim


def _settings(data_dir: Path, erp: ErpSim, shop: ShopSim) -> Settings:
    return load_settings(
        shopify={
            "webhook_secret": SECRET,
            "pull_interval_seconds": 3600,
            "pull_overlap_seconds": 60,
            "shops": {SHOP: shop.shop_settings()},
        },
        store={"data_dir": data_dir},
        targets={"erp": {**TEST_TARGET, "base_url": erp.url}},
        workers=TEST_WORKERS,
    )


def _receipts(hub: Any) -> list[Receipt]:
    with hub.runtime.database.read() as session:
        return list(session.scalars(select(Receipt).order_by(Receipt.id)))


async def test_order_whose_webhook_never_came_is_pulled_once(
    tmp_path: Path, erp: ErpSim, shop: ShopSim
) -> None:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    orders = [order_body(6100001, updated_at=now), order_body(6100002, updated_at=now)]
    shop.load("orders", orders)

    async with running_hub(_settings(tmp_path, erp, shop)) as hub:
        assert hub.runtime.puller is not None
        # The hub pulls once as it starts; this pull may find the orders stored by it.
        await hub.runtime.puller.pull(SHOP)
        await hub.wait_drained()
        second = await hub.runtime.puller.pull(SHOP)
        await hub.wait_drained()
        pulled = [r.webhook_id for r in _receipts(hub)]
        orders = [await hub.order(key) for key in ("6100001", "6100002")]

    assert second == 0
    assert sorted(pulled) == [f"pull:6100001:{now}", f"pull:6100002:{now}"]
    assert [order["state"] for order in orders] == ["accepted", "accepted"]
    posted = sorted(order["externalId"] for order in erp.orders())
    assert posted == [
        f"shopify:{SHOP}:6100001",
        f"shopify:{SHOP}:6100002",
    ]
    assert all(order["writeCount"] == 1 for order in erp.orders())


async def test_update_webhook_is_applied_as_re_read(
    tmp_path: Path, erp: ErpSim, shop: ShopSim
) -> None:
    """The webhook carries an older body than the shop holds now: the current order,
    read from the Admin API, is what gets applied."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    stale = order_body(6100003, financial_status="pending", updated_at=now)
    shop.load("orders", [stale])
    current = shop.update_order(6100003, financial_status="paid")

    async with running_hub(_settings(tmp_path, erp, shop)) as hub:
        response = await hub.post_webhook(stale, topic="orders/updated")
        await hub.wait_drained()
        order = await hub.order("6100003")
        receipts = _receipts(hub)

    assert response.status_code == 200
    webhook, reread = receipts
    assert webhook.status == "ignored"
    assert f"superseded by receipt {reread.id}" in (webhook.outcome or "")
    assert reread.webhook_id == f"pull:6100003:{current['updated_at']}"
    assert reread.status == "processed"
    assert order["state"] == "accepted"
    assert order["source_updated_at"].startswith(current["updated_at"][:19])
    (posted,) = erp.orders()
    assert posted["writeCount"] == 1
    record = erp.admin.get(
        f"/services/rest/record/v1/salesOrder/eid:shopify:{SHOP}:6100003"
    ).json()
    assert record["custbody_payment_status"] == "paid"
