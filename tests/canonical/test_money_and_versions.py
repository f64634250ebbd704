"""Money keeps its currency; stored objects carry a schema version read on load."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from entrepot.canonical import CurrencyMismatchError, InvalidInputError, Money
from entrepot.canonical.versions import load_sales_order
from entrepot.spokes.shopify.mapping import map_order
from tests.harness import SHOP, example_order


def test_money_adds_same_currency() -> None:
    total = Money(amount=Decimal("0.10"), currency="EUR") + Money(
        amount=Decimal("0.20"), currency="EUR"
    )
    assert total == Money(amount=Decimal("0.30"), currency="EUR")


def test_money_refuses_mixed_currencies() -> None:
    with pytest.raises(CurrencyMismatchError, match="EUR and USD"):
        Money(amount=Decimal(1), currency="EUR") + Money(amount=Decimal(1), currency="USD")


@pytest.mark.parametrize("code", ["ZZZ", "usd", "US", "EURO"])
def test_unknown_currency_rejected(code: str) -> None:
    with pytest.raises(ValidationError, match="unknown ISO 4217 currency code"):
        Money(amount=Decimal(1), currency=code)


def test_float_never_needed() -> None:
    money = Money(amount=Decimal("0.1") + Decimal("0.2"), currency="USD")
    assert str(money) == "0.3 USD"


def test_stored_order_reads_back_equal() -> None:
    order = map_order(example_order("order-1005"), shop_domain=SHOP)
    stored = order.model_dump(mode="json")
    assert stored["schema_version"] == 1
    assert load_sales_order(stored) == order


def test_newer_schema_version_rejected() -> None:
    stored = map_order(example_order(), shop_domain=SHOP).model_dump(mode="json")
    stored["schema_version"] = 99
    with pytest.raises(InvalidInputError, match="schema_version: version 99 is newer"):
        load_sales_order(stored)
