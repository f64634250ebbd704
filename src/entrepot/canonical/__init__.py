"""Business objects that no platform owns: money, customers, items, sales orders, and
the shipments, invoices and inventory positions that come back from ERPs."""

from entrepot.canonical.customer import Address, Customer, ExternalId
from entrepot.canonical.errors import FieldError, InvalidInputError
from entrepot.canonical.fulfillment import InventoryPosition, Invoice, Shipment, ShipmentLine
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
    "InventoryPosition",
    "Invoice",
    "Item",
    "Money",
    "MoneySet",
    "OrderLine",
    "PaymentSummary",
    "ReconciliationDifference",
    "SalesOrder",
    "Shipment",
    "ShipmentLine",
    "ShippingCharge",
    "TaxLine",
    "Totals",
    "derive_totals",
    "reconcile",
]
