"""Tests for mapping Shopify REST orders to canonical sales orders."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import entrepot
from entrepot.canonical import InvalidInputError, MoneySet, SalesOrder, derive_totals
from entrepot.config import load_settings
from entrepot.spokes.shopify.channel import ShopifyChannel
from entrepot.spokes.shopify.mapping import map_order, parse_order_body

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = (REPO_ROOT / ".." / "shared" / "samples").resolve()
SHOPIFY_SAMPLES = SAMPLES / "shopify"
DEMO = Path(entrepot.__file__).resolve().parent / "demo"
DEMO_ORDERS = sorted((DEMO / "orders").glob("*.json"))
SHOP = "entrepot-demo.myshopify.com"
# Valid JSON nested far deeper than Python's recursion limit lets json parse.
DEEP_BODY = b'{"a":' * 200_000 + b"1" + b"}" * 200_000


def _sample_params() -> list[Any]:
    if not SHOPIFY_SAMPLES.is_dir():
        reason = f"shared samples not found at {SHOPIFY_SAMPLES}"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="absent")]
    return [pytest.param(path, id=path.name) for path in sorted(SHOPIFY_SAMPLES.glob("*.json"))]


def _sample(name: str) -> SalesOrder:
    path = SHOPIFY_SAMPLES / name
    if not path.is_file():
        pytest.skip(f"shared samples not found at {SHOPIFY_SAMPLES}")
    return map_order(parse_order_body(path.read_bytes()), shop_domain=SHOP)


def _demo(name: str) -> dict[str, Any]:
    """Return a fresh copy of one of the project's example order bodies."""
    return copy.deepcopy(parse_order_body((DEMO / "orders" / name).read_bytes()))


def _shop_of(payload: dict[str, Any]) -> str:
    url: str = payload["order_status_url"]
    host = urlsplit(url).hostname
    assert host is not None
    return host


def _errors(payload: dict[str, Any]) -> dict[str, str]:
    """Map the payload, expecting a rejection, and return each error's reason by path."""
    with pytest.raises(InvalidInputError) as caught:
        map_order(payload, shop_domain=SHOP)
    return {error.path: error.reason for error in caught.value.errors}


def _amounts(order: SalesOrder) -> dict[str, Decimal]:
    totals = order.totals
    return {
        "subtotal": totals.subtotal.shop_money.amount,
        "discounts": totals.discounts.shop_money.amount,
        "shipping": totals.shipping.shop_money.amount,
        "tax": totals.tax.shop_money.amount,
        "total": totals.total.shop_money.amount,
    }


# Shopify's own example orders


@pytest.mark.parametrize("path", _sample_params())
def test_sample_order_maps(path: Path) -> None:
    payload = parse_order_body(path.read_bytes())
    if "line_items" not in payload:
        pytest.skip(f"{path.name} is not an order")

    order = map_order(payload, shop_domain=SHOP)

    assert order.channel == "shopify"
    assert order.channel_account == SHOP
    assert order.channel_order_id == str(payload["id"])
    assert order.total.amount == Decimal(payload["total_price"])
    assert len(order.lines) == len(payload["line_items"])


def test_webhook_sample_values() -> None:
    order = _sample("orders_create_webhook.json")

    assert order.channel_order_id == "1073459981"
    assert order.order_number == "#1002"
    assert order.currency == "USD"
    assert len(order.lines) == 1
    line = order.lines[0]
    assert line.sku == "IPOD2009BLACK"
    assert line.quantity == 1
    assert line.unit_price.shop_money.amount == Decimal("199.00")
    assert line.discount_total.amount == Decimal("17.91")
    assert _amounts(order) == {
        "subtotal": Decimal("181.09"),
        "discounts": Decimal("17.91"),
        "shipping": Decimal("0.00"),
        "tax": Decimal("0.00"),
        "total": Decimal("181.09"),
    }
    assert order.reconciliation == []
    assert order.customer is not None
    assert order.customer.external_id_for(f"shopify:{SHOP}") == "1073339467"
    assert order.payment.financial_status == "paid"


def test_rest_sample_values() -> None:
    order = _sample("order_rest_get_response.json")

    assert order.channel_order_id == "450789469"
    assert order.order_number == "#1001"
    skus = [line.sku for line in order.lines]
    assert skus == ["IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK"]
    allocations = [line.discount_total.amount for line in order.lines]
    assert allocations == [Decimal("3.34"), Decimal("3.33"), Decimal("3.33")]
    for line in order.lines:
        assert line.quantity == 1
        assert line.unit_price.shop_money.amount == Decimal("199.00")
        assert line.tax_total.amount == Decimal("3.98")
        assert [tax.rate for tax in line.tax_lines] == [Decimal("0.06")]
    assert order.total.amount == Decimal("598.94")
    assert order.totals.tax.shop_money.amount == Decimal("11.94")
    assert order.totals.discounts.shop_money.amount == Decimal("10.00")
    assert order.payment.financial_status == "partially_refunded"


def test_rest_sample_subtotal_difference() -> None:
    order = _sample("order_rest_get_response.json")

    assert [difference.field for difference in order.reconciliation] == ["subtotal"]
    difference = order.reconciliation[0]
    assert difference.channel_value.amount == Decimal("597.00")
    assert difference.derived_value.amount == Decimal("587.00")
    assert difference.difference.amount == Decimal("10.00")


def test_rest_envelope_matches_bare_order() -> None:
    path = SHOPIFY_SAMPLES / "order_rest_get_response.json"
    if not path.is_file():
        pytest.skip(f"shared samples not found at {SHOPIFY_SAMPLES}")
    wrapped = json.loads(path.read_bytes())

    bare = parse_order_body(json.dumps(wrapped["order"]).encode())

    assert parse_order_body(path.read_bytes()) == bare


# The project's example orders


def test_demo_orders_present() -> None:
    assert len(DEMO_ORDERS) == 6


@pytest.mark.parametrize("path", DEMO_ORDERS, ids=[path.name for path in DEMO_ORDERS])
def test_demo_order_reconciles(path: Path) -> None:
    payload = parse_order_body(path.read_bytes())

    order = map_order(payload, shop_domain=_shop_of(payload))

    assert order.reconciliation == []
    assert str(order.total.amount) == payload["total_price"]
    assert order.channel_account == _shop_of(payload)


def test_demo_invalid_order_rejected() -> None:
    body = (DEMO / "invalid" / "order-1099-missing-sku.json").read_bytes()

    with pytest.raises(InvalidInputError) as caught:
        map_order(parse_order_body(body), shop_domain=SHOP)

    assert [str(error) for error in caught.value.errors] == ["line_items[0].sku: missing"]


def test_presentment_amounts_add_up() -> None:
    order = map_order(_demo("order-1005.json"), shop_domain=SHOP)

    assert order.currency == "USD"
    assert order.presentment_currency == "CAD"
    line = order.lines[0]
    assert line.unit_price.presentment_money is not None
    assert line.unit_price.presentment_money.amount == Decimal("65.28")
    assert line.unit_price.presentment_money.currency == "CAD"
    assert order.totals.total.presentment_money is not None
    expected = order.totals.total.presentment_money.amount
    assert _presentment_total(order) == expected


def _presentment_total(order: SalesOrder) -> Decimal:
    total = Decimal("0")
    for line in order.lines:
        assert line.unit_price.presentment_money is not None
        total += line.unit_price.presentment_money.amount * line.quantity
        total += sum(_presentment(tax.amount) for tax in line.tax_lines)
        total -= sum(_presentment(allocation.amount) for allocation in line.discount_allocations)
    for charge in order.shipping:
        total += _presentment(charge.price)
        total += sum(_presentment(tax.amount) for tax in charge.tax_lines)
    return total


def _presentment(money_set: MoneySet) -> Decimal:
    assert money_set.presentment_money is not None
    return money_set.presentment_money.amount


def test_taxes_included_not_added() -> None:
    order = map_order(_demo("order-1004.json"), shop_domain=SHOP)
    derived = derive_totals(order)

    assert order.taxes_included is True
    assert order.currency == "EUR"
    assert derived.tax.amount == Decimal("9.33")
    assert derived.total.amount == derived.subtotal.amount + derived.shipping.amount
    assert order.reconciliation == []


def test_shipping_tax_mapped() -> None:
    order = map_order(_demo("order-1003.json"), shop_domain=SHOP)

    assert len(order.shipping) == 1
    charge = order.shipping[0]
    assert charge.price.shop_money.amount == Decimal("12.80")
    assert charge.tax_total.amount == Decimal("0.80")
    assert [tax.rate for tax in charge.tax_lines] == [Decimal("0.0625")]


def test_percentage_code_discount_mapped() -> None:
    order = map_order(_demo("order-1002.json"), shop_domain=SHOP)

    assert len(order.discounts) == 1
    discount = order.discounts[0]
    assert discount.code == "SPRING15"
    assert discount.value_type == "percentage"
    assert discount.value == Decimal("15.0")
    indexes = [line.discount_allocations[0].discount_index for line in order.lines]
    assert indexes == [0, 0, 0]
    allocated = sum(line.discount_total.amount for line in order.lines)
    assert allocated == order.totals.discounts.shop_money.amount


def test_plain_amount_uses_shop_currency() -> None:
    order = map_order(_demo("order-1001.json"), shop_domain=SHOP)

    unit_price = order.lines[0].unit_price
    assert unit_price.shop_money.amount == Decimal("14.50")
    assert unit_price.shop_money.currency == "USD"
    assert unit_price.presentment_money is None


def test_customer_and_addresses_mapped() -> None:
    payload = _demo("order-1003.json")

    order = map_order(payload, shop_domain="Acme-Fasteners.MyShopify.com")

    assert order.channel_account == "acme-fasteners.myshopify.com"
    customer = order.customer
    assert customer is not None
    assert customer.external_ids[0].system == "shopify:acme-fasteners.myshopify.com"
    assert customer.external_ids[0].id == str(payload["customer"]["id"])
    assert customer.email == payload["customer"]["email"]
    assert len(customer.addresses) == 1
    address = order.shipping_address
    assert address is not None
    source = payload["shipping_address"]
    assert address.line1 == source["address1"]
    assert address.line2 == source["address2"]
    assert address.postal_code == source["zip"]
    assert address.region_code == "TX"
    assert address.country_code == "US"
    assert customer.addresses[0] == order.billing_address


def test_b2b_order_mapped() -> None:
    payload = _demo("order-1006.json")

    order = map_order(payload, shop_domain=SHOP)

    assert order.lines[0].quantity == 24
    assert order.customer is not None
    assert order.customer.tax_exempt is True
    assert order.customer.company == "Harbor Line Marine Supply"
    assert order.payment.financial_status == "pending"
    assert order.payment.gateways == ["Net 30"]
    assert order.payment.outstanding is not None
    assert order.payment.outstanding.amount == Decimal("440.00")


def test_order_identifiers_and_dates() -> None:
    payload = _demo("order-1001.json")

    order = map_order(payload, shop_domain=SHOP)

    assert order.order_number == "#1001"
    assert order.channel_order_id == str(payload["id"])
    assert order.placed_at.isoformat() == payload["created_at"]
    assert order.source_updated_at.isoformat() == payload["updated_at"]
    assert order.cancelled_at is None


def test_cancelled_order_mapped() -> None:
    payload = _demo("order-1001.json")
    payload["cancelled_at"] = "2025-03-03T10:00:00-08:00"
    payload["cancel_reason"] = "customer"

    order = map_order(payload, shop_domain=SHOP)

    assert order.cancelled_at is not None
    assert order.cancelled_at.isoformat() == "2025-03-03T10:00:00-08:00"
    assert order.cancel_reason == "customer"


def test_processed_at_replaces_missing_created_at() -> None:
    payload = _demo("order-1001.json")
    del payload["created_at"]
    payload["processed_at"] = "2025-03-01T08:00:00-08:00"

    order = map_order(payload, shop_domain=SHOP)

    assert order.placed_at.isoformat() == "2025-03-01T08:00:00-08:00"


def test_empty_gateway_names_dropped() -> None:
    payload = _demo("order-1001.json")
    payload["payment_gateway_names"] = [""]

    order = map_order(payload, shop_domain=SHOP)

    assert order.payment.gateways == []


# Exact numbers


def test_large_id_kept_exactly() -> None:
    payload = _demo("order-1001.json")
    payload["id"] = 820982911946154508
    payload["line_items"][0]["id"] = 2**63 - 1
    body = json.dumps(payload).encode()

    order = map_order(parse_order_body(body), shop_domain=SHOP)

    assert order.channel_order_id == "820982911946154508"
    assert order.lines[0].channel_line_id == "9223372036854775807"


def test_numeric_amounts_parse_exactly() -> None:
    payload = _demo("order-1001.json")
    payload["line_items"][0]["price"] = 195.66
    payload["line_items"][0]["quantity"] = 1
    payload["subtotal_price"] = 195.66
    payload["total_price"] = 195.66
    body = json.dumps(payload).encode()

    order = map_order(parse_order_body(body), shop_domain=SHOP)

    assert str(order.lines[0].unit_price.shop_money.amount) == "195.66"
    assert order.total.amount == Decimal("195.66")
    assert order.reconciliation == []


def test_float_tax_rate_parses_exactly() -> None:
    order = map_order(_demo("order-1002.json"), shop_domain=SHOP)

    rates = [str(tax.rate) for line in order.lines for tax in line.tax_lines]
    assert rates == ["0.0725", "0.0725", "0.0725"]


def test_discount_reduces_tax_base() -> None:
    payload = _demo("order-1001.json")
    line = payload["line_items"][0]
    line["quantity"] = 1
    line["price"] = "100.00"
    line["discount_allocations"] = [{"amount": "20.00", "discount_application_index": 0}]
    line["tax_lines"] = [{"title": "Sales tax", "rate": 0.1, "price": "8.00"}]
    payload["discount_applications"] = [
        {
            "type": "manual",
            "title": "Loyalty",
            "value": "20.0",
            "value_type": "fixed_amount",
            "allocation_method": "across",
            "target_type": "line_item",
        }
    ]
    payload["subtotal_price"] = "80.00"
    payload["total_discounts"] = "20.00"
    payload["total_tax"] = "8.00"
    payload["total_price"] = "88.00"

    order = map_order(payload, shop_domain=SHOP)
    derived = derive_totals(order)

    assert order.lines[0].net.amount == Decimal("80.00")
    assert derived.subtotal.amount == Decimal("80.00")
    assert derived.tax.amount == Decimal("8.00")
    assert derived.total.amount == Decimal("88.00")
    assert order.total.amount == Decimal("88.00")
    assert order.reconciliation == []


# Rejected input


def test_malformed_json_rejected() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_order_body(b'{"id": 1,')

    [error] = caught.value.errors
    assert error.path == "body"
    assert error.reason.startswith("invalid JSON: ")
    assert "line 1 column 10" in error.reason


def test_nan_constant_rejected() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_order_body(b'{"total_price": NaN}')

    assert str(caught.value) == "body: invalid JSON: NaN is not a JSON number"


def test_invalid_utf8_rejected() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_order_body(b'{"name": "\xff"}')

    [error] = caught.value.errors
    assert error.path == "body"
    assert error.reason.startswith("invalid UTF-8")


def test_deeply_nested_json_rejected() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_order_body(DEEP_BODY)

    [error] = caught.value.errors
    assert error.path == "body"
    assert error.reason == "invalid JSON: nested too deeply to parse"


def test_order_reference_of_deep_body_is_none() -> None:
    channel = ShopifyChannel(load_settings())
    assert channel.order_reference("orders/create", DEEP_BODY) is None
    assert channel.order_reference("refunds/create", DEEP_BODY) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[1, 2]", "body: must be a JSON object (a Shopify order), got an array"),
        (b'"order"', "body: must be a JSON object (a Shopify order), got a string"),
        (b"null", "body: must be a JSON object (a Shopify order), got null"),
        (b'{"order": [1]}', "order: must be a JSON object, got an array"),
    ],
)
def test_non_object_body_rejected(body: bytes, expected: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_order_body(body)

    assert str(caught.value) == expected


def test_missing_sku_rejected() -> None:
    payload = _demo("order-1002.json")
    del payload["line_items"][1]["sku"]

    assert _errors(payload) == {"line_items[1].sku": "missing"}


def test_null_sku_rejected() -> None:
    payload = _demo("order-1001.json")
    payload["line_items"][0]["sku"] = None

    assert _errors(payload) == {"line_items[0].sku": "missing"}


def test_empty_sku_rejected() -> None:
    payload = _demo("order-1001.json")
    payload["line_items"][0]["sku"] = "  "

    errors = _errors(payload)

    assert list(errors) == ["line_items[0].sku"]
    assert errors["line_items[0].sku"].startswith("must not be empty")


def test_negative_quantity_rejected() -> None:
    payload = _demo("order-1001.json")
    payload["line_items"][0]["quantity"] = -2

    errors = _errors(payload)

    assert errors == {"line_items[0].quantity": "must be greater than 0 (got -2)"}


def test_unknown_currency_rejected() -> None:
    payload = _demo("order-1001.json")
    payload["currency"] = "ZZZ"

    errors = _errors(payload)

    assert list(errors) == ["currency"]
    assert errors["currency"].startswith("unknown ISO 4217 currency code")
    assert "'ZZZ'" in errors["currency"]


def test_missing_updated_at_rejected() -> None:
    payload = _demo("order-1001.json")
    del payload["updated_at"]

    assert _errors(payload) == {"updated_at": "missing"}


def test_naive_timestamp_rejected() -> None:
    payload = _demo("order-1001.json")
    payload["updated_at"] = "2025-03-03T09:14:07"

    assert list(_errors(payload)) == ["updated_at"]


def test_float_id_rejected() -> None:
    payload = _demo("order-1001.json")
    payload["id"] = 8.2e17

    errors = _errors(payload)

    assert list(errors) == ["id"]
    assert errors["id"].startswith("must be a positive integer id")


def test_all_errors_listed() -> None:
    payload = _demo("order-1002.json")
    del payload["line_items"][0]["sku"]
    payload["line_items"][2]["quantity"] = 0
    payload["currency"] = "ZZZ"
    del payload["updated_at"]
    payload["total_price"] = "abc"

    errors = _errors(payload)

    assert set(errors) == {
        "line_items[0].sku",
        "line_items[2].quantity",
        "currency",
        "updated_at",
        "total_price",
    }
    assert errors["line_items[2].quantity"] == "must be greater than 0 (got 0)"
    assert errors["total_price"] == "must be a decimal number (got 'abc')"


def test_no_line_items_rejected() -> None:
    payload = _demo("order-1001.json")
    payload["line_items"] = []

    assert list(_errors(payload)) == ["line_items"]


def test_shop_money_currency_mismatch_rejected() -> None:
    payload = _demo("order-1005.json")
    payload["line_items"][0]["price_set"]["shop_money"]["currency_code"] = "EUR"
    payload["total_price_set"]["presentment_money"]["currency_code"] = "USD"

    errors = _errors(payload)

    assert errors == {
        "line_items[0].price_set.shop_money.currency_code": (
            "must match the order currency USD (got 'EUR')"
        ),
        "total_price_set.presentment_money.currency_code": (
            "must match the presentment currency CAD (got 'USD')"
        ),
    }


def test_discount_index_out_of_range_rejected() -> None:
    payload = _demo("order-1002.json")
    payload["line_items"][2]["discount_allocations"][0]["discount_application_index"] = 3

    errors = _errors(payload)

    path = "line_items[2].discount_allocations[0].discount_application_index"
    assert list(errors) == [path]
    assert errors[path].endswith("(got 3)")


def test_errors_omit_personal_data() -> None:
    payload = _demo("order-1001.json")
    payload["customer"] = "Dana Okafor <dana.okafor@mail.example.net>"
    payload["billing_address"] = "1420 Alder Court, Portland"
    payload["shipping_address"]["country_code"] = "Portland"
    payload["email"] = {"address": "dana.okafor@mail.example.net"}

    with pytest.raises(InvalidInputError) as caught:
        map_order(payload, shop_domain=SHOP)

    message = str(caught.value)
    paths = {error.path for error in caught.value.errors}
    assert paths == {"customer", "billing_address", "shipping_address.country_code", "email"}
    assert "Dana" not in message
    assert "dana.okafor" not in message
    assert "Alder" not in message
    assert "portland" not in message.casefold()


def test_empty_shop_domain_rejected() -> None:
    with pytest.raises(ValueError, match="shop_domain"):
        map_order(_demo("order-1001.json"), shop_domain=" ")
