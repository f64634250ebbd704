"""Values a Shopify body may carry that must not reach an ERP as they are."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from entrepot.canonical import InvalidInputError
from entrepot.spokes.shopify.mapping import map_order, parse_order_body
from tests.harness import SHOP, order_body


def errors_of(body: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidInputError) as raised:
        map_order(body, shop_domain=SHOP)
    return {error.path: error.reason for error in raised.value.errors}


@pytest.mark.parametrize("quantity", [True, 2.5, "3"])
def test_quantity_must_be_an_integer(quantity: object) -> None:
    body = order_body(1)
    body["line_items"][0]["quantity"] = quantity
    assert "line_items[0].quantity" in errors_of(body)


def test_quantity_bounded() -> None:
    body = order_body(1)
    body["line_items"][0]["quantity"] = 10**30
    assert errors_of(body)["line_items[0].quantity"].startswith("must be at most 1,000,000,000")


@pytest.mark.parametrize("price", ["1e400", "1e15", 1.2e29])
def test_amount_bounded(price: object) -> None:
    body = order_body(1)
    body["line_items"][0]["price"] = price
    assert "must be below" in errors_of(body)["line_items[0].price"]


def test_json_number_amounts_exact() -> None:
    body = order_body(1)
    raw = json.dumps(body).replace('"total_price": "29.00"', '"total_price": 12345678901234.567')
    order = map_order(parse_order_body(raw.encode()), shop_domain=SHOP)
    assert order.totals.total.shop_money.amount == Decimal("12345678901234.567")


def test_order_id_with_leading_zeros_normalised() -> None:
    body = order_body(1)
    body["id"] = "0008020"
    assert map_order(body, shop_domain=SHOP).channel_order_id == "8020"


def test_wrapped_order_unwrapped_beside_other_keys() -> None:
    raw = json.dumps({"order": order_body(8021), "shop": "acme"}).encode()
    assert parse_order_body(raw)["id"] == 8021
