"""Derive order totals from the lines and compare them with the channel's totals."""

from __future__ import annotations

from dataclasses import dataclass

from entrepot.canonical.money import Money, sum_money
from entrepot.canonical.order import ReconciliationDifference, SalesOrder


@dataclass(frozen=True)
class DerivedTotals:
    """Totals computed from lines and shipping charges, in the shop currency."""

    subtotal: Money
    discounts: Money
    shipping: Money
    tax: Money
    total: Money


def derive_totals(order: SalesOrder) -> DerivedTotals:
    """Compute the totals from the order's lines and shipping charges.

    Discounts reduce the tax base: a 100.00 line with a 20.00 discount and 10 % tax
    has a tax base of 80.00. ``shipping`` is before shipping discounts, as channels
    report it; the total counts shipping after them. When ``taxes_included`` is set,
    prices already contain the tax, so the tax is not added on top.
    """
    currency = order.currency
    subtotal = sum_money([line.net for line in order.lines], currency)
    line_discounts = [line.discount_total for line in order.lines]
    shipping_discounts = [charge.price.shop_money - charge.net for charge in order.shipping]
    shipping = sum_money([charge.price.shop_money for charge in order.shipping], currency)
    net_shipping = sum_money([charge.net for charge in order.shipping], currency)
    tax = sum_money(
        [line.tax_total for line in order.lines] + [charge.tax_total for charge in order.shipping],
        currency,
    )

    total = subtotal + net_shipping
    if not order.taxes_included:
        total = total + tax
    return DerivedTotals(
        subtotal=subtotal,
        discounts=sum_money(line_discounts + shipping_discounts, currency),
        shipping=shipping,
        tax=tax,
        total=total,
    )


def reconcile(order: SalesOrder) -> list[ReconciliationDifference]:
    """List every channel total that differs from the derived one, to the cent."""
    derived = derive_totals(order)
    pairs = {
        "subtotal": (order.totals.subtotal.shop_money, derived.subtotal),
        "discounts": (order.totals.discounts.shop_money, derived.discounts),
        "shipping": (order.totals.shipping.shop_money, derived.shipping),
        "tax": (order.totals.tax.shop_money, derived.tax),
        "total": (order.totals.total.shop_money, derived.total),
    }
    differences = []
    for field, (channel_value, derived_value) in pairs.items():
        if channel_value.amount != derived_value.amount:
            differences.append(
                ReconciliationDifference(
                    field=field,
                    channel_value=channel_value,
                    derived_value=derived_value,
                    difference=channel_value - derived_value,
                )
            )
    return differences
