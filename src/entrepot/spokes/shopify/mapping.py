"""Map a Shopify REST Admin Order to the canonical `SalesOrder`.

The body of an orders/create, orders/updated or orders/cancelled webhook is the bare
Order resource, and a REST response wraps the same object as ``{"order": {...}}``.
Shopify's totals are authoritative: the canonical totals are Shopify's, and any total
derived from the lines that disagrees is kept as a reconciliation difference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, NoReturn

from pydantic import ValidationError

from entrepot.canonical import (
    Address,
    Customer,
    Discount,
    DiscountAllocation,
    ExternalId,
    FieldError,
    InvalidInputError,
    Money,
    MoneySet,
    OrderLine,
    PaymentSummary,
    SalesOrder,
    ShippingCharge,
    TaxLine,
    Totals,
    reconcile,
)
from entrepot.spokes.shopify.payload import (
    ShopifyAddress,
    ShopifyCustomer,
    ShopifyDiscountAllocation,
    ShopifyDiscountApplication,
    ShopifyLineItem,
    ShopifyMoney,
    ShopifyMoneySet,
    ShopifyOrder,
    ShopifyShippingLine,
    ShopifyTaxLine,
)

CHANNEL = "shopify"

# Top-level fields whose values are personal data. The reasons of validation errors
# under them leave out the received value.
_PERSONAL_FIELDS = frozenset({"customer", "billing_address", "shipping_address", "email", "phone"})


def parse_order_body(body: bytes) -> dict[str, Any]:
    """Parse a webhook or REST response body into the order object.

    A body of the form ``{"order": {...}}`` is unwrapped, whatever else sits beside
    ``order``. Raises `InvalidInputError` with path ``body`` when the body is not
    valid JSON, is nested deeper than Python's recursion limit lets `json` parse,
    or is not a JSON object.
    """
    try:
        data = json.loads(body, parse_constant=_reject_constant, parse_float=Decimal)
    except RecursionError as exc:
        raise InvalidInputError.single("body", "invalid JSON: nested too deeply to parse") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInputError.single(
            "body", f"invalid UTF-8 at byte {exc.start}: {exc.reason}"
        ) from exc
    except json.JSONDecodeError as exc:
        reason = f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise InvalidInputError.single("body", f"{reason} (char {exc.pos})") from exc

    if not isinstance(data, dict):
        raise InvalidInputError.single(
            "body", f"must be a JSON object (a Shopify order), got {_json_type(data)}"
        )

    if "order" in data and "line_items" not in data:
        data = data["order"]
        if not isinstance(data, dict):
            raise InvalidInputError.single(
                "order", f"must be a JSON object, got {_json_type(data)}"
            )
    return data


def map_order(payload: Mapping[str, Any], *, shop_domain: str) -> SalesOrder:
    """Map a Shopify order to a canonical sales order with its reconciliation.

    ``shop_domain`` (such as ``acme.myshopify.com``) becomes the channel account in
    lower case. Raises `InvalidInputError` listing every invalid field, with paths in
    Shopify's field names such as ``line_items[1].sku``.
    """
    account = shop_domain.strip().lower()
    if not account:
        raise ValueError("shop_domain must not be empty")

    order = _validate(payload)

    try:
        sales_order = _build_order(order, account)
    except ValidationError as exc:
        # NOTE: the Shopify checks above should reject everything the canonical
        # model rejects. If one is missed, the paths here are canonical field names.
        raise InvalidInputError.from_validation_error(exc) from exc
    return sales_order.model_copy(update={"reconciliation": reconcile(sales_order)})


def _validate(payload: Mapping[str, Any]) -> ShopifyOrder:
    try:
        order = ShopifyOrder.model_validate(dict(payload))
    except ValidationError as exc:
        raise _without_personal_values(exc) from exc

    errors = order.consistency_errors()
    if errors:
        raise InvalidInputError(errors)
    return order


def _without_personal_values(exc: ValidationError) -> InvalidInputError:
    """Convert pydantic's errors, removing the received value from the reasons of
    errors under personal fields."""
    converted = InvalidInputError.from_validation_error(exc)
    details = exc.errors(include_url=False)
    errors = []
    for error, detail in zip(converted.errors, details, strict=True):
        location = detail["loc"]
        if location and location[0] in _PERSONAL_FIELDS and "input" in detail:
            suffix = f" (got {detail['input']!r})"
            error = FieldError(error.path, error.reason.removesuffix(suffix))
        errors.append(error)
    return InvalidInputError(errors)


def _build_order(order: ShopifyOrder, account: str) -> SalesOrder:
    currency = order.currency
    return SalesOrder(
        channel=CHANNEL,
        channel_account=account,
        channel_order_id=order.id,
        order_number=order.name,
        placed_at=order.created_at,
        source_updated_at=order.updated_at,
        currency=currency,
        presentment_currency=order.presentment_currency,
        taxes_included=order.taxes_included,
        customer=_customer(order, account),
        billing_address=_address(order.billing_address),
        shipping_address=_address(order.shipping_address),
        lines=[_line(line, currency) for line in order.line_items],
        discounts=[_discount(application) for application in order.discount_applications],
        shipping=[_shipping_charge(line, currency) for line in order.shipping_lines],
        payment=_payment(order),
        totals=_totals(order),
        cancelled_at=order.cancelled_at,
        cancel_reason=order.cancel_reason,
    )


def _line(line: ShopifyLineItem, currency: str) -> OrderLine:
    return OrderLine(
        channel_line_id=line.id,
        sku=line.sku,
        title=line.name or line.title,
        quantity=line.quantity,
        unit_price=_money_set(line.price, line.price_set, currency),
        discount_allocations=_allocations(line.discount_allocations, currency),
        tax_lines=_tax_lines(line.tax_lines, currency),
        taxable=line.taxable,
        requires_shipping=line.requires_shipping,
    )


def _shipping_charge(line: ShopifyShippingLine, currency: str) -> ShippingCharge:
    return ShippingCharge(
        code=line.code,
        title=line.title,
        price=_money_set(line.price, line.price_set, currency),
        discount_allocations=_allocations(line.discount_allocations, currency),
        tax_lines=_tax_lines(line.tax_lines, currency),
    )


def _tax_lines(tax_lines: Sequence[ShopifyTaxLine], currency: str) -> list[TaxLine]:
    return [
        TaxLine(
            title=tax.title,
            rate=tax.rate,
            amount=_money_set(tax.price, tax.price_set, currency),
        )
        for tax in tax_lines
    ]


def _allocations(
    allocations: Sequence[ShopifyDiscountAllocation], currency: str
) -> list[DiscountAllocation]:
    # Discounts keep the order of discount_applications, so Shopify's
    # discount_application_index is also the index into SalesOrder.discounts.
    return [
        DiscountAllocation(
            amount=_money_set(allocation.amount, allocation.amount_set, currency),
            discount_index=allocation.discount_application_index,
        )
        for allocation in allocations
    ]


def _discount(application: ShopifyDiscountApplication) -> Discount:
    return Discount(
        code=application.code,
        title=application.title or application.description,
        value_type=application.value_type,
        value=application.value,
        target_type=application.target_type,
        allocation_method=application.allocation_method,
    )


def _customer(order: ShopifyOrder, account: str) -> Customer | None:
    customer = order.customer
    if customer is None:
        return None

    default_address = _address(customer.default_address)
    return Customer(
        external_ids=[ExternalId(system=f"{CHANNEL}:{account}", id=customer.id)],
        email=customer.email or order.email,
        first_name=customer.first_name,
        last_name=customer.last_name,
        company=_company(customer),
        phone=customer.phone or order.phone,
        tax_exempt=customer.tax_exempt,
        addresses=[default_address] if default_address is not None else [],
    )


def _company(customer: ShopifyCustomer) -> str | None:
    address = customer.default_address
    return address.company if address is not None else None


def _address(address: ShopifyAddress | None) -> Address | None:
    if address is None:
        return None

    names = [part for part in (address.first_name, address.last_name) if part]
    return Address(
        name=address.name or " ".join(names) or None,
        company=address.company,
        line1=address.address1,
        line2=address.address2,
        city=address.city,
        region=address.province,
        region_code=address.province_code,
        postal_code=address.zip,
        country_code=address.country_code,
        phone=address.phone,
    )


def _payment(order: ShopifyOrder) -> PaymentSummary:
    outstanding = None
    if order.total_outstanding is not None:
        outstanding = Money(amount=order.total_outstanding, currency=order.currency)

    # An order created through the Admin API can list an empty gateway name ("").
    gateways = [name for name in order.payment_gateway_names if name]
    return PaymentSummary(
        financial_status=order.financial_status,
        gateways=gateways,
        outstanding=outstanding,
    )


def _totals(order: ShopifyOrder) -> Totals:
    currency = order.currency
    return Totals(
        subtotal=_money_set(order.subtotal_price, order.subtotal_price_set, currency),
        discounts=_money_set(order.total_discounts, order.total_discounts_set, currency),
        shipping=_shipping_total(order),
        tax=_money_set(order.total_tax, order.total_tax_set, currency),
        total=_money_set(order.total_price, order.total_price_set, currency),
    )


def _shipping_total(order: ShopifyOrder) -> MoneySet:
    # total_shipping_price_set is before shipping discounts, like Totals.shipping.
    if order.total_shipping_price_set is not None:
        return _from_shopify(order.total_shipping_price_set)

    prices = sum((line.price for line in order.shipping_lines), Decimal("0"))
    return MoneySet(shop_money=Money(amount=prices, currency=order.currency))


def _money_set(amount: Decimal, money_set: ShopifyMoneySet | None, currency: str) -> MoneySet:
    """Prefer the ``*_set`` object, and fall back to the plain amount in the shop
    currency when Shopify sent none."""
    if money_set is not None:
        return _from_shopify(money_set)
    return MoneySet(shop_money=Money(amount=amount, currency=currency))


def _from_shopify(money_set: ShopifyMoneySet) -> MoneySet:
    presentment = money_set.presentment_money
    return MoneySet(
        shop_money=_money(money_set.shop_money),
        presentment_money=_money(presentment) if presentment is not None else None,
    )


def _money(money: ShopifyMoney) -> Money:
    return Money(amount=money.amount, currency=money.currency_code)


def _reject_constant(name: str) -> NoReturn:
    raise InvalidInputError.single("body", f"invalid JSON: {name} is not a JSON number")


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
