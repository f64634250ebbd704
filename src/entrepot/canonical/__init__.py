"""Business objects that no platform owns: money, customers, items, sales orders."""

from entrepot.canonical.customer import Address, Customer, ExternalId
from entrepot.canonical.errors import FieldError, InvalidInputError
from entrepot.canonical.item import Item
from entrepot.canonical.money import CurrencyMismatchError, Money, MoneySet
from entrepot.canonical.order import (
    Discount,
    DiscountAllocation,
    OrderLine,
    PaymentSummary,
    ReconciliationDifference,
    SalesOrder,
    ShippingCharge,
    TaxLine,
    Totals,
)
from entrepot.canonical.totals import DerivedTotals, derive_totals, reconcile

__all__ = [
    "Address",
    "CurrencyMismatchError",
    "Customer",
    "DerivedTotals",
    "Discount",
    "DiscountAllocation",
    "ExternalId",
    "FieldError",
    "InvalidInputError",
    "Item",
    "Money",
    "MoneySet",
    "OrderLine",
    "PaymentSummary",
    "ReconciliationDifference",
    "SalesOrder",
    "ShippingCharge",
    "TaxLine",
    "Totals",
    "derive_totals",
    "reconcile",
]
