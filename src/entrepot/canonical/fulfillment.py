"""What an ERP did with an order, version 1: a shipment sent, an invoice posted, and the
inventory position of an item at a location."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from entrepot.canonical.money import Money


class ShipmentLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    sku: str = Field(min_length=1)
    quantity: int = Field(gt=0)


class Shipment(BaseModel):
    """A shipment that left the warehouse. ``erp_id`` is the ERP's own key of it."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    erp_id: str
    number: str
    tracking_number: str | None = None
    carrier: str | None = None
    shipped_on: date | None = None
    lines: list[ShipmentLine] = Field(default_factory=list)


class Invoice(BaseModel):
    """An invoice posted in the ERP."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    erp_id: str
    number: str
    total: Money
    invoice_date: date | None = None


class InventoryPosition(BaseModel):
    """The stock of one item at one location: on hand, and forecast once the moves
    already planned (confirmed sales included) are done."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    sku: str = Field(min_length=1)
    location: str = Field(min_length=1)
    on_hand: Decimal
    forecast: Decimal

    @property
    def available(self) -> int:
        """Whole units a channel may sell now: the lower of on hand and forecast."""
        return max(int(min(self.on_hand, self.forecast)), 0)
