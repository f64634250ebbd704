"""Reading Tryton back: stock per warehouse, a customer's price, sales changed since."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

from entrepot.spokes.tryton.readback import TrytonReadBack
from entrepot.spokes.tryton.server import TrytonServer
from entrepot.spokes.tryton.warehouse import ship_sale
from tests.tryton.helpers import make_spoke, order_of_customer, party_of_sale, store


async def test_stock_price_and_shipments_read_back(tryton: TrytonServer, tmp_path: Path) -> None:
    spoke = make_spoke(tryton, store(tmp_path / "store.db"))
    readback = TrytonReadBack(spoke.rpc, "WH")
    try:
        products = await spoke.references.products(["ACME-BOLT-M8"])
        bolt = products["ACME-BOLT-M8"].id
        (before,) = await readback.stock_levels([bolt])

        order = order_of_customer(870001, 970001)  # 2 x ACME-BOLT-M8
        result = await spoke.submit_order(order, look_up_first=False)
        sale_id = int(result.erp_id)
        await ship_sale(spoke.rpc, sale_id, "TRACK-870001")
        (after,) = await readback.stock_levels([bolt])

        sales = await readback.changed_sales(dt.datetime(2000, 1, 1))
        (progress,) = [sale for sale in sales if sale.sale_id == sale_id]
        (shipment,) = await readback.shipments_done(progress.shipments)
        changed, newest = await readback.stock_changed_since(dt.datetime(2000, 1, 1))

        party = await party_of_sale(spoke, sale_id)
        (wholesale,) = await spoke.rpc.model(
            "product.price_list", "search", [["name", "=", "Wholesale"]], 0, 1, None
        )
        list_price = await readback.price(bolt, party, Decimal(5))
        await spoke.rpc.model("party.party", "write", [party], {"sale_price_list": wholesale})
        wholesale_price = await readback.price(bolt, party, Decimal(5))
    finally:
        await spoke.aclose()

    assert (before.sku, before.location, before.on_hand, before.forecast) == (
        "ACME-BOLT-M8",
        "WH",
        Decimal("1000.0"),
        Decimal("1000.0"),
    )
    assert (after.on_hand, after.forecast) == (Decimal("998.0"), Decimal("998.0"))
    assert progress.reference == order.external_id
    assert progress.shipment_state == "sent"
    assert shipment.tracking_number == "TRACK-870001"
    assert [(line.sku, line.quantity) for line in shipment.lines] == [("ACME-BOLT-M8", 2)]
    assert "ACME-BOLT-M8" in {level.sku for level in changed}
    assert newest is not None
    assert list_price == Decimal("14.50")
    assert wholesale_price == Decimal("13.05")


async def test_draft_left_by_a_timed_out_create_is_cancelled(
    tryton: TrytonServer, tmp_path: Path
) -> None:
    """A create that timed out commits after the retry made the sale: the extra draft
    is cancelled by the next poll, and a new submission keeps the confirmed sale."""
    spoke = make_spoke(tryton, store(tmp_path / "store.db"))
    readback = TrytonReadBack(spoke.rpc, "WH")
    order = order_of_customer(870101, 970101)
    try:
        confirmed = await spoke.submit_order(order, look_up_first=False)
        (row,) = await spoke.rpc.model(
            "sale.sale", "read", [int(confirmed.erp_id)], ["party", "shipment_address"]
        )
        (late,) = await spoke.rpc.model(
            "sale.sale",
            "create",
            [
                {
                    "party": row["party"],
                    "invoice_address": row["shipment_address"],
                    "shipment_address": row["shipment_address"],
                    "reference": order.external_id,
                }
            ],
        )
        again = await spoke.submit_order(order, look_up_first=True)
        sales = await readback.changed_sales(dt.datetime(2000, 1, 1))
        (stray,) = [sale for sale in sales if sale.sale_id == late]
        withdrawn = await readback.withdraw_if_duplicate(stray)
        kept = [sale for sale in sales if sale.sale_id == int(confirmed.erp_id)]
        not_withdrawn = await readback.withdraw_if_duplicate(kept[0])
        (state,) = await spoke.rpc.model("sale.sale", "read", [late], ["state"])
    finally:
        await spoke.aclose()

    assert again.erp_id == confirmed.erp_id
    assert not again.created
    assert withdrawn is True
    assert not_withdrawn is False
    assert state["state"] == "cancelled"
