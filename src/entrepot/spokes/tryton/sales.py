"""Canonical orders as Tryton sales: item lines, discount and shipping lines, taxes.

The channel's unit prices become the sale's unit prices. A discount becomes a line
of its own under the discounted line's taxes, so Tryton taxes the discounted
amount. Shipping is a line of the shipping service product. Tryton computes the
taxes itself; `adjustment_line` makes up any difference to the channel's total.

Tryton's sale prices exclude tax. For an order whose prices include tax, each
price is divided by one plus its tax rates, and the adjustment line carries the
rounding that this leaves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from entrepot.canonical import SalesOrder, TaxLine
from entrepot.spokes.failures import PermanentFailure
from entrepot.spokes.tryton.parties import OrderParty
from entrepot.spokes.tryton.references import (
    ADJUSTMENT_CODE,
    DISCOUNT_CODE,
    SERVICE_CODES,
    SHIPPING_CODE,
    Product,
    ReferenceData,
)

UNIT_PRICE_DIGITS = Decimal("0.0001")  # Tryton's default precision of unit prices


@dataclass(frozen=True)
class SaleDraft:
    """The values of a sale to create, with the order it comes from."""

    order: SalesOrder
    values: dict[str, Any]


def sale_reference(order: SalesOrder) -> str:
    """Return the sale's reference in Tryton: the order's external id, which a retry
    searches for."""
    return order.external_id


def sale_description(order: SalesOrder) -> str:
    return f"{order.channel} order {order.order_number or order.channel_order_id}"


async def draft_sale(order: SalesOrder, party: OrderParty, references: ReferenceData) -> SaleDraft:
    """Build the sale's values; raise `PermanentFailure` naming a field Tryton lacks."""
    currency = await references.currency(order.currency)
    if currency is None:
        raise PermanentFailure(
            f"currency {order.currency} is not set up in Tryton",
            remedy=f"Add the currency {order.currency} with a rate in Tryton, "
            "then retry this dead letter.",
            error_code="UNKNOWN_CURRENCY",
            field_path="currency",
        )
    products = await references.products(line.sku for line in order.lines)
    products.update(await _services(references))
    lines = await _item_lines(order, products, references)
    lines += await _shipping_lines(order, products, references)
    values = {
        "party": party.party,
        "invoice_address": party.invoice_address,
        "shipment_address": party.shipment_address,
        "currency": currency,
        "reference": sale_reference(order),
        "description": sale_description(order),
        "sale_date": order.placed_at.date(),
        "lines": [["create", lines]],
    }
    return SaleDraft(order=order, values=values)


def adjustment_line(product: Product, difference: Decimal) -> dict[str, Any]:
    """Build a line without taxes that brings the sale's total to the channel's."""
    return {
        "product": product.id,
        "unit": product.unit,
        "quantity": 1.0,
        "unit_price": difference,
        "description": "Adjustment to the channel's total (tax rounding)",
    }


async def adjustment_product(references: ReferenceData) -> Product:
    return (await _services(references))[ADJUSTMENT_CODE]


async def _item_lines(
    order: SalesOrder, products: dict[str, Product], references: ReferenceData
) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for index, line in enumerate(order.lines):
        product = products.get(line.sku)
        if product is None:
            raise PermanentFailure(
                f"unknown SKU {line.sku!r}: Tryton has no salable product with this code",
                remedy=f"Create the product {line.sku!r} in Tryton or make it salable, or "
                "correct the SKU on the channel, then retry this dead letter.",
                error_code="UNKNOWN_SKU",
                field_path=f"lines[{index}].sku",
            )
        taxes = await _taxes(line.tax_lines, f"lines[{index}]", references)
        divisor = _divisor(order, line.tax_lines)
        lines.append(
            {
                "product": product.id,
                "unit": product.unit,
                "quantity": float(line.quantity),
                "unit_price": _price(line.unit_price.shop_money.amount, divisor),
                "description": line.title or line.sku,
                "taxes": [["add", taxes]] if taxes else [],
            }
        )
        discount = line.discount_total.amount
        if discount:
            lines.append(
                _service_line(
                    products[DISCOUNT_CODE],
                    -_price(discount, divisor),
                    f"Discount on {line.sku}",
                    taxes,
                )
            )
    return lines


async def _shipping_lines(
    order: SalesOrder, products: dict[str, Product], references: ReferenceData
) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for index, charge in enumerate(order.shipping):
        if not charge.net.amount:
            continue
        taxes = await _taxes(charge.tax_lines, f"shipping[{index}]", references)
        price = _price(charge.net.amount, _divisor(order, charge.tax_lines))
        title = charge.title or charge.code or "Shipping"
        lines.append(_service_line(products[SHIPPING_CODE], price, title, taxes))
    return lines


def _service_line(
    product: Product, price: Decimal, description: str, taxes: Sequence[int]
) -> dict[str, Any]:
    return {
        "product": product.id,
        "unit": product.unit,
        "quantity": 1.0,
        "unit_price": price,
        "description": description,
        "taxes": [["add", list(taxes)]] if taxes else [],
    }


async def _taxes(tax_lines: Sequence[TaxLine], path: str, references: ReferenceData) -> list[int]:
    ids: list[int] = []
    for index, tax in enumerate(tax_lines):
        if tax.rate is None:
            raise PermanentFailure(
                f"tax {tax.title!r} has no rate, so Tryton cannot compute it",
                error_code="UNKNOWN_TAX",
                field_path=f"{path}.tax_lines[{index}].rate",
            )
        found = await references.tax(tax.rate)
        if found is None:
            raise PermanentFailure(
                f"Tryton has no customer tax of rate {tax.rate * 100:g} % ({tax.title})",
                remedy="Create a percentage tax of this rate in Tryton, then retry this "
                "dead letter.",
                error_code="UNKNOWN_TAX",
                field_path=f"{path}.tax_lines[{index}].rate",
            )
        ids.append(found)
    return ids


def _divisor(order: SalesOrder, tax_lines: Sequence[TaxLine]) -> Decimal:
    if not order.taxes_included:
        return Decimal(1)
    return Decimal(1) + sum((tax.rate or Decimal(0) for tax in tax_lines), Decimal(0))


def _price(amount: Decimal, divisor: Decimal) -> Decimal:
    if divisor == 1:
        return amount
    return (amount / divisor).quantize(UNIT_PRICE_DIGITS, rounding=ROUND_HALF_EVEN)


async def _services(references: ReferenceData) -> dict[str, Product]:
    services = await references.products(SERVICE_CODES)
    missing = [code for code in SERVICE_CODES if code not in services]
    if missing:
        raise PermanentFailure(
            f"Tryton lacks the service products {', '.join(missing)} that entrepot posts "
            "shipping, discounts and adjustments with",
            remedy="Create them as salable service products in Tryton, then retry.",
            error_code="MISSING_SERVICE_PRODUCT",
        )
    return services
