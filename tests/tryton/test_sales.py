"""Orders into a real Tryton: samples to the cent, retries, refusals, holds, races."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from entrepot.spokes.failures import OnHold, PermanentFailure, RetryLater
from entrepot.spokes.tryton.server import TrytonServer
from entrepot.spokes.tryton.spoke import TrytonSpoke
from entrepot.spokes.tryton.warehouse import ship_sale
from entrepot.store.database import Database
from tests.harness import example_order
from tests.tryton.helpers import (
    canonical,
    in_currency,
    make_spoke,
    order_of_customer,
    party_of_sale,
    sale,
    sale_lines,
    sales_with_reference,
    sample,
    store,
)

SAMPLE_ORDERS = ("order_rest_get_response.json", "orders_create_webhook.json")


@pytest.fixture
def database(tmp_path: Path) -> Database:
    return store(tmp_path / "store.db")


@pytest.fixture
async def spoke(tryton: TrytonServer, database: Database) -> Any:
    spoke = make_spoke(tryton, database)
    yield spoke
    await spoke.aclose()


@pytest.mark.parametrize("name", SAMPLE_ORDERS)
async def test_shared_sample_lands_as_confirmed_sale(
    spoke: TrytonSpoke, samples_dir: Path, name: str
) -> None:
    order = sample(samples_dir / "shopify" / name)

    result = await spoke.submit_order(order, look_up_first=False)
    row = await sale(spoke, result.erp_id)
    lines = await sale_lines(spoke, result.erp_id)

    assert row["state"] in {"confirmed", "processing"}
    assert row["total_amount"] == order.total.amount
    items = [line for line in lines if not line["code"].startswith("ENTREPOT-")]
    assert sorted(
        (line["code"], line["quantity"], line["unit_price"]) for line in items
    ) == sorted(
        (line.sku, float(line.quantity), line.unit_price.shop_money.amount) for line in order.lines
    )


async def test_same_order_twice_and_after_timeout_is_one_sale(spoke: TrytonSpoke) -> None:
    order = order_of_customer(880001, 990001)
    real_model = spoke.rpc.model
    calls = {"create": 0}

    async def create_then_time_out(model: str, method: str, *args: Any, **context: Any) -> Any:
        result = await real_model(model, method, *args, **context)
        if (model, method) == ("sale.sale", "create") and calls["create"] == 0:
            calls["create"] += 1
            raise RetryLater("read timed out after the sale was created", ambiguous=True)
        return result

    spoke.rpc.model = create_then_time_out  # type: ignore[method-assign]
    with pytest.raises(RetryLater):
        await spoke.submit_order(order, look_up_first=False)
    spoke.rpc.model = real_model  # type: ignore[method-assign]

    again = await spoke.submit_order(order, look_up_first=True)
    third = await spoke.submit_order(order, look_up_first=False)

    assert await sales_with_reference(spoke, order.external_id) == [int(again.erp_id)]
    assert third.erp_id == again.erp_id
    assert not third.created
    assert (await sale(spoke, again.erp_id))["state"] in {"confirmed", "processing"}


async def test_unknown_sku_is_refused_by_name(spoke: TrytonSpoke) -> None:
    payload = example_order("order-1001")
    payload["id"] = 880002
    payload["line_items"][0]["sku"] = "NO-SUCH-SKU"

    with pytest.raises(PermanentFailure) as caught:
        await spoke.submit_order(canonical(payload), look_up_first=False)

    assert caught.value.error_code == "UNKNOWN_SKU"
    assert caught.value.field_path == "lines[0].sku"
    assert "'NO-SUCH-SKU'" in caught.value.reason


async def test_unknown_currency_is_refused_by_name(spoke: TrytonSpoke) -> None:
    payload = in_currency(example_order("order-1001"), "GBP")
    payload["id"] = 880003

    with pytest.raises(PermanentFailure) as caught:
        await spoke.submit_order(canonical(payload), look_up_first=False)

    assert caught.value.error_code == "UNKNOWN_CURRENCY"
    assert caught.value.field_path == "currency"
    assert "GBP" in caught.value.reason


async def test_customer_in_hold_category_is_held_until_released(spoke: TrytonSpoke) -> None:
    first = await spoke.submit_order(order_of_customer(880004, 990004), look_up_first=False)
    party = await party_of_sale(spoke, first.erp_id)
    (hold,) = await spoke.rpc.model(
        "party.category", "search", [["name", "=", "Credit hold"]], 0, 1, None
    )
    await spoke.rpc.model("party.party", "write", [party], {"categories": [["add", [hold]]]})
    held = order_of_customer(880005, 990004)

    with pytest.raises(OnHold) as caught:
        await spoke.submit_order(held, look_up_first=False)
    assert await sales_with_reference(spoke, held.external_id) == []
    assert "'Credit hold'" in caught.value.reason

    await spoke.rpc.model("party.party", "write", [party], {"categories": [["remove", [hold]]]})
    released = await spoke.submit_order(held, look_up_first=False)
    assert (await sale(spoke, released.erp_id))["total_amount"] == held.total.amount


async def test_customer_over_credit_limit_is_held(spoke: TrytonSpoke) -> None:
    first = await spoke.submit_order(order_of_customer(880006, 990006), look_up_first=False)
    party = await party_of_sale(spoke, first.erp_id)
    await spoke.rpc.model(
        "party.party", "write", [party], {"credit_limit_amount": Decimal("20.00")}
    )
    order = order_of_customer(880007, 990006)

    with pytest.raises(OnHold) as caught:
        await spoke.submit_order(order, look_up_first=False)

    assert "limit of 20.00" in caught.value.reason
    assert await sales_with_reference(spoke, order.external_id) == []


async def test_two_workers_racing_on_a_new_customer_make_one_party(
    tryton: TrytonServer, database: Database
) -> None:
    """Failure kind 3: two orders of a never-seen customer, 50 ms apart, two workers."""
    workers = [make_spoke(tryton, database), make_spoke(tryton, database)]
    orders = [order_of_customer(880010, 990010), order_of_customer(880011, 990010)]

    async def submit(index: int) -> str:
        await asyncio.sleep(0.05 * index)
        return (await workers[index].submit_order(orders[index], look_up_first=False)).erp_id

    try:
        sale_ids = await asyncio.gather(submit(0), submit(1))
        parties = {await party_of_sale(workers[0], sale_id) for sale_id in sale_ids}
        identified = await workers[0].rpc.model(
            "party.identifier",
            "search",
            [["code", "=", "shopify:entrepot-demo.myshopify.com:990010"]],
            0,
            None,
            None,
        )
    finally:
        for worker in workers:
            await worker.aclose()

    assert len(parties) == 1
    assert len(identified) == 1


async def test_known_customer_with_address_in_other_case_reuses_it(spoke: TrytonSpoke) -> None:
    """Failure kind 5: "12 Main St" synced, then "12 main st " on the next order."""
    first = order_of_customer(880020, 990020, address={"address1": "12 Main St"})
    second = order_of_customer(880021, 990020, address={"address1": "12 main st "})

    one = await spoke.submit_order(first, look_up_first=False)
    two = await spoke.submit_order(second, look_up_first=False)

    rows = await spoke.rpc.model(
        "sale.sale", "read", [int(one.erp_id), int(two.erp_id)], ["shipment_address", "state"]
    )
    assert rows[0]["shipment_address"] == rows[1]["shipment_address"]
    assert rows[1]["state"] in {"confirmed", "processing"}
    party = await party_of_sale(spoke, two.erp_id)
    assert (
        len(
            await spoke.rpc.model(
                "party.address", "search", [["party", "=", party]], 0, None, None
            )
        )
        == 1
    )


async def test_region_renamed_on_the_channel_maps_through_its_code(spoke: TrytonSpoke) -> None:
    """Failure kind 9: the channel sends Puducherry (IN-PY); Tryton still names it Pondicherry."""
    address = {
        "province": "Puducherry",
        "province_code": "PY",
        "country": "India",
        "country_code": "IN",
        "zip": "605001",
        "city": "Puducherry",
    }
    order = order_of_customer(880030, 990030, address=address)

    result = await spoke.submit_order(order, look_up_first=False)

    (row,) = await spoke.rpc.model(
        "sale.sale", "read", [int(result.erp_id)], ["shipment_address.subdivision.name", "state"]
    )
    assert row["shipment_address."]["subdivision."]["name"] == "Pondicherry"
    assert row["state"] in {"confirmed", "processing"}
    assert result.notes == ()


async def test_region_unknown_by_name_is_accepted_for_review(spoke: TrytonSpoke) -> None:
    address = {
        "province": "Atlantis",
        "province_code": None,
        "country_code": "IN",
        "country": "India",
    }
    order = order_of_customer(880031, 990031, address=address)

    result = await spoke.submit_order(order, look_up_first=False)

    assert (await sale(spoke, result.erp_id))["state"] in {"confirmed", "processing"}
    assert any("address needs review" in note and "'Atlantis'" in note for note in result.notes)


async def test_batch_with_a_bad_order_posts_the_others(spoke: TrytonSpoke) -> None:
    good = [order_of_customer(880040 + index, 990040 + index) for index in range(5)]
    bad_payload = example_order("order-1001")
    bad_payload["id"] = 880049
    bad_payload["line_items"][0]["sku"] = "NOT-IN-TRYTON"
    orders = [*good[:2], canonical(bad_payload), *good[2:]]

    outcomes = await spoke.submit_orders(orders)

    assert isinstance(outcomes[2], PermanentFailure)
    posted = [outcome for index, outcome in enumerate(outcomes) if index != 2]
    for order, outcome in zip([*good[:2], *good[2:]], posted, strict=True):
        assert not isinstance(outcome, Exception)
        row = await sale(spoke, outcome.erp_id)
        assert row["reference"] == order.external_id
        assert row["total_amount"] == order.total.amount
        assert row["state"] in {"confirmed", "processing"}


async def test_batch_that_tryton_refuses_is_split_down_to_the_bad_order(
    spoke: TrytonSpoke,
) -> None:
    """A product made unsalable in Tryton after the spoke looked it up: the create call
    of the whole batch is refused, and only the order with that product fails."""
    payload = example_order("order-1001")
    payload["id"] = 880059
    payload["line_items"][0]["sku"] = "SKU-C"
    doomed = canonical(payload)
    await spoke.references.products(["SKU-C"])
    (product,) = await spoke.rpc.model(
        "product.product", "search_read", [["code", "=", "SKU-C"]], 0, 1, None, ["template"]
    )
    template = product["template"]
    good = [order_of_customer(880050 + index, 990050 + index) for index in range(4)]

    await spoke.rpc.model("product.template", "write", [template], {"salable": False})
    try:
        outcomes = await spoke.submit_orders([good[0], good[1], doomed, good[2], good[3]])
    finally:
        await spoke.rpc.model("product.template", "write", [template], {"salable": True})

    assert isinstance(outcomes[2], PermanentFailure)
    assert "refused to create" in outcomes[2].reason
    assert await sales_with_reference(spoke, doomed.external_id) == []
    for order, outcome in zip(
        good, [outcomes[0], outcomes[1], outcomes[3], outcomes[4]], strict=True
    ):
        assert not isinstance(outcome, Exception)
        assert (await sale(spoke, outcome.erp_id))["total_amount"] == order.total.amount


async def test_open_sales_count_toward_the_credit_limit(spoke: TrytonSpoke) -> None:
    first = await spoke.submit_order(order_of_customer(880060, 990060), look_up_first=False)
    party = await party_of_sale(spoke, first.erp_id)
    await spoke.rpc.model(
        "party.party", "write", [party], {"credit_limit_amount": Decimal("50.00")}
    )
    second = order_of_customer(880061, 990060)

    with pytest.raises(OnHold) as caught:
        await spoke.submit_order(second, look_up_first=False)

    (row,) = await spoke.rpc.model("party.party", "read", [party], ["credit_amount"])
    assert Decimal(row["credit_amount"]) > 0
    assert "limit of 50.00" in caught.value.reason


async def test_cancelling_a_processing_sale_withdraws_it(spoke: TrytonSpoke) -> None:
    order = order_of_customer(880070, 990070)
    result = await spoke.submit_order(order, look_up_first=False)
    sale_id = int(result.erp_id)
    await _processing(spoke, sale_id)

    cancelled = await spoke.cancel_order(order)

    (row,) = await spoke.rpc.model(
        "sale.sale", "read", [sale_id], ["state", "shipment_state", "invoice_state", "shipments"]
    )
    shipments = await spoke.rpc.model("stock.shipment.out", "read", row["shipments"], ["state"])
    assert cancelled.erp_id == result.erp_id
    assert (row["state"], row["shipment_state"], row["invoice_state"]) == ("done", "none", "none")
    assert [shipment["state"] for shipment in shipments] == ["cancelled"]


async def test_cancelling_a_shipped_sale_is_refused(spoke: TrytonSpoke) -> None:
    order = order_of_customer(880071, 990071)
    result = await spoke.submit_order(order, look_up_first=False)
    await ship_sale(spoke.rpc, int(result.erp_id), "TRACK-880071")

    with pytest.raises(PermanentFailure) as caught:
        await spoke.cancel_order(order)

    assert caught.value.error_code == "ALREADY_FULFILLED"


async def test_order_changed_after_confirmation_is_noted(spoke: TrytonSpoke) -> None:
    order = order_of_customer(880080, 990080)
    first = await spoke.submit_order(order, look_up_first=False)
    payload = example_order("order-1001")
    payload.update(id=880080, name="#880080", updated_at="2025-03-04T09:00:00-08:00")
    payload["customer"]["id"] = 990080
    payload["line_items"][0]["quantity"] = 5
    payload["total_price"] = "72.50"
    changed = canonical(payload)

    again = await spoke.submit_order(changed, look_up_first=False)

    assert again.erp_id == first.erp_id
    assert not again.created
    (note,) = again.notes
    assert "total is now" in note
    assert "change it there" in note


async def _processing(spoke: TrytonSpoke, sale_id: int) -> None:
    for _ in range(50):
        (row,) = await spoke.rpc.model("sale.sale", "read", [sale_id], ["state"])
        if row["state"] == "processing":
            return
        if row["state"] == "confirmed":
            await spoke.rpc.model("sale.sale", "process", [sale_id])
        await asyncio.sleep(0.1)


async def test_batch_with_shipping_lines_is_processed(spoke: TrytonSpoke) -> None:
    """Sales with shipping lines are processed into shipments and invoices at once."""
    payloads = []
    for index in range(3):
        payload = example_order("order-1002")
        payload.update(id=880090 + index, name=f"#{880090 + index}")
        payload["customer"]["id"] = 990090 + index
        payloads.append(canonical(payload))
    assert all(order.shipping for order in payloads)

    outcomes = await spoke.submit_orders(payloads)

    ids = [int(outcome.erp_id) for outcome in outcomes if not isinstance(outcome, Exception)]
    rows = await spoke.rpc.model("sale.sale", "read", ids, ["state", "shipments", "invoices"])
    assert [row["state"] for row in rows] == ["processing"] * 3
    assert all(len(row["shipments"]) == 1 and len(row["invoices"]) == 1 for row in rows)
