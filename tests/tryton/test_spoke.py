"""The Tryton spoke against a real Tryton: orders become confirmed sales."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from entrepot.spokes.tryton.server import TrytonServer
from tests.tryton.helpers import example, make_spoke, sale, sale_lines, store


async def test_example_order_becomes_confirmed_sale(tryton: TrytonServer, tmp_path: Path) -> None:
    spoke = make_spoke(tryton, store(tmp_path / "store.db"))
    order = example("order-1002")
    try:
        result = await spoke.submit_order(order, look_up_first=False)
        row = await sale(spoke, result.erp_id)
        lines = await sale_lines(spoke, result.erp_id)
    finally:
        await spoke.aclose()

    assert result.created
    assert row["state"] in {"confirmed", "processing"}
    assert row["reference"] == order.external_id
    assert row["total_amount"] == order.total.amount == Decimal("82.31")
    items = {line["code"]: line for line in lines if not line["code"].startswith("ENTREPOT-")}
    assert {code: line["quantity"] for code, line in items.items()} == {
        "ACME-BOLT-M8": 4.0,
        "ACME-NUT-M8": 4.0,
        "ACME-WASHER-M8": 2.0,
    }
    for line in order.lines:
        assert items[line.sku]["unit_price"] == line.unit_price.shop_money.amount


@pytest.mark.parametrize("name", ["order-1001", "order-1003", "order-1004", "order-1005"])
async def test_totals_match_the_channel(tryton: TrytonServer, tmp_path: Path, name: str) -> None:
    spoke = make_spoke(tryton, store(tmp_path / "store.db"))
    order = example(name)
    try:
        result = await spoke.submit_order(order, look_up_first=False)
        row = await sale(spoke, result.erp_id)
    finally:
        await spoke.aclose()

    assert row["state"] in {"confirmed", "processing"}
    assert row["currency."]["code"] == order.currency
    assert row["total_amount"] == order.total.amount


async def test_expired_session_logs_in_again(tryton: TrytonServer, tmp_path: Path) -> None:
    spoke = make_spoke(tryton, store(tmp_path / "store.db"))
    try:
        first = await spoke.references.currency("USD")
        spoke.rpc._authorization = "Session " + "bm90LWEtc2Vzc2lvbg=="  # not a session
        ids = await spoke.rpc.model(
            "currency.currency", "search", [["code", "=", "USD"]], 0, 1, None
        )
    finally:
        await spoke.aclose()

    assert ids == [first]
    assert spoke.rpc._authorization != "Session bm90LWEtc2Vzc2lvbg=="
