"""Sales order, version 1: lines, discounts, taxes, shipping, payment and totals.

The channel's totals are authoritative. Totals derived from the lines are compared
with them, and each difference is kept on the order as a `ReconciliationDifference`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from entrepot.canonical.customer import Address, Customer
from entrepot.canonical.money import CurrencyCode, Money, MoneySet, sum_money

SALES_ORDER_SCHEMA_VERSION = 1


class TaxLine(BaseModel):
    """One tax charged on a line or on shipping. ``rate`` is a fraction (0.06 = 6 %)."""

    model_config = ConfigDict(frozen=True)

    title: str
    rate: Decimal | None = None
    amount: MoneySet


class DiscountAllocation(BaseModel):
    """The part of an order-level discount that falls on one line or shipping charge.

    ``discount_index`` points into `SalesOrder.discounts`.
    """

    model_config = ConfigDict(frozen=True)

    amount: MoneySet
    discount_index: int | None = None


class Discount(BaseModel):
    """An order-level discount (a code, an automatic or a manual discount)."""

    model_config = ConfigDict(frozen=True)

    code: str | None = None
    title: str | None = None
    value_type: Literal["percentage", "fixed_amount"]
    value: Decimal
    target_type: Literal["line_item", "shipping_line"] = "line_item"
    allocation_method: Literal["across", "each", "one"] = "across"


class OrderLine(BaseModel):
    """One ordered item. ``unit_price`` is before discounts."""

    model_config = ConfigDict(frozen=True)

    channel_line_id: str
    sku: str = Field(min_length=1)
    title: str | None = None
    quantity: int = Field(gt=0)
    unit_price: MoneySet
    discount_allocations: list[DiscountAllocation] = Field(default_factory=list)
    tax_lines: list[TaxLine] = Field(default_factory=list)
    taxable: bool = True
    requires_shipping: bool = True

    @property
    def gross(self) -> Money:
        return self.unit_price.shop_money * self.quantity

    @property
    def discount_total(self) -> Money:
        amounts = [allocation.amount.shop_money for allocation in self.discount_allocations]
        return sum_money(amounts, self.unit_price.shop_money.currency)

    @property
    def net(self) -> Money:
        """Gross minus this line's share of the discounts."""
        return self.gross - self.discount_total

    @property
    def tax_total(self) -> Money:
        amounts = [tax.amount.shop_money for tax in self.tax_lines]
        return sum_money(amounts, self.unit_price.shop_money.currency)


class ShippingCharge(BaseModel):
    """A shipping line: its price before discounts, its discounts and taxes."""

    model_config = ConfigDict(frozen=True)

    code: str | None = None
    title: str | None = None
    price: MoneySet
    discount_allocations: list[DiscountAllocation] = Field(default_factory=list)
    tax_lines: list[TaxLine] = Field(default_factory=list)

    @property
    def net(self) -> Money:
        discounts = [allocation.amount.shop_money for allocation in self.discount_allocations]
        return self.price.shop_money - sum_money(discounts, self.price.shop_money.currency)

    @property
    def tax_total(self) -> Money:
        amounts = [tax.amount.shop_money for tax in self.tax_lines]
        return sum_money(amounts, self.price.shop_money.currency)


class PaymentSummary(BaseModel):
    """How far the buyer has paid, in the channel's words (paid, pending, refunded)."""

    financial_status: str | None = None
    gateways: list[str] = Field(default_factory=list)
    outstanding: Money | None = None
    refunded: Money | None = None


class Totals(BaseModel):
    """The channel's own totals. ``subtotal`` is after line discounts and before
    shipping and tax; ``shipping`` is before shipping discounts."""

    model_config = ConfigDict(frozen=True)

    subtotal: MoneySet
    discounts: MoneySet
    shipping: MoneySet
    tax: MoneySet
    total: MoneySet


class ReconciliationDifference(BaseModel):
    """A channel total that disagrees with the same total derived from the lines.

    ``difference`` is the channel's value minus the derived one.
    """

    model_config = ConfigDict(frozen=True)

    field: str
    channel_value: Money
    derived_value: Money
    difference: Money


class SalesOrder(BaseModel):
    """A sales order as no platform owns it."""

    schema_version: Literal[1] = 1
    channel: str = Field(min_length=1)
    channel_account: str = Field(min_length=1)
    channel_order_id: str = Field(min_length=1)
    order_number: str | None = None
    placed_at: datetime
    source_updated_at: datetime
    currency: CurrencyCode
    presentment_currency: CurrencyCode | None = None
    taxes_included: bool = False
    customer: Customer | None = None
    billing_address: Address | None = None
    shipping_address: Address | None = None
    lines: list[OrderLine] = Field(min_length=1)
    discounts: list[Discount] = Field(default_factory=list)
    shipping: list[ShippingCharge] = Field(default_factory=list)
    payment: PaymentSummary = Field(default_factory=PaymentSummary)
    totals: Totals
    reconciliation: list[ReconciliationDifference] = Field(default_factory=list)
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None

    @model_validator(mode="after")
    def _check_currencies(self) -> SalesOrder:
        for path, amount in self._money_sets():
            if amount.shop_money.currency != self.currency:
                raise ValueError(
                    f"{path} is in {amount.shop_money.currency}, "
                    f"but the order currency is {self.currency}"
                )
            presentment = amount.presentment_money
            expected = self.presentment_currency or self.currency
            if presentment is not None and presentment.currency != expected:
                raise ValueError(
                    f"{path} presentment amount is in {presentment.currency}, "
                    f"but the presentment currency is {expected}"
                )
        return self

    @property
    def external_id(self) -> str:
        """The id the ERP record carries, derived from channel, account and order id."""
        return f"{self.channel}:{self.channel_account}:{self.channel_order_id}"

    @property
    def customer_external_id(self) -> str | None:
        """The id an ERP keeps the order's customer by (channel, account and the
        channel's customer id), or None for an order without a customer."""
        if self.customer is None:
            return None
        system = f"{self.channel}:{self.channel_account}"
        channel_id = self.customer.external_id_for(system) or self.customer.external_ids[0].id
        return f"{system}:{channel_id}"

    @property
    def total(self) -> Money:
        return self.totals.total.shop_money

    def _money_sets(self) -> list[tuple[str, MoneySet]]:
        found: list[tuple[str, MoneySet]] = [
            (f"totals.{name}", getattr(self.totals, name))
            for name in ("subtotal", "discounts", "shipping", "tax", "total")
        ]
        for index, line in enumerate(self.lines):
            found.append((f"lines[{index}].unit_price", line.unit_price))
            found += [(f"lines[{index}].tax_lines", tax.amount) for tax in line.tax_lines]
        for index, charge in enumerate(self.shipping):
            found.append((f"shipping[{index}].price", charge.price))
        return found
