"""Read-back from Tryton: shipments done, invoices posted, stock and prices.

Tryton sends no webhooks, so all of it is read by polling with a cursor on
``write_date`` (or ``create_date`` for a record never written since). Times are
Tryton's own, so the cursor does not depend on the two machines' clocks agreeing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from entrepot.canonical import InventoryPosition, Invoice, Money, Shipment, ShipmentLine
from entrepot.spokes.tryton.rpc import TrytonRpc

INVOICED_STATES = frozenset({"posted", "paid"})


@dataclass(frozen=True)
class SaleProgress:
    """A sale as far as shipping and invoicing go; ``changed_at`` is Tryton's time."""

    sale_id: int
    reference: str
    state: str
    shipment_state: str
    invoice_state: str
    shipments: tuple[int, ...]
    invoices: tuple[int, ...]
    changed_at: dt.datetime


class TrytonReadBack:
    """Reads back what entrepot needs of one Tryton database."""

    def __init__(self, rpc: TrytonRpc, warehouse_code: str) -> None:
        self._rpc = rpc
        self._warehouse_code = warehouse_code
        self._warehouse: int | None = None

    async def changed_sales(
        self, since: dt.datetime, limit: int = 200, offset: int = 0
    ) -> list[SaleProgress]:
        """Return the sales of entrepot written since ``since``, oldest change first."""
        rows = await self._rpc.model(
            "sale.sale",
            "search_read",
            [_changed_since(since), ["reference", "like", "%:%:%"]],
            offset,
            limit,
            [["write_date", "ASC"], ["id", "ASC"]],
            [
                "reference",
                "state",
                "shipment_state",
                "invoice_state",
                "shipments",
                "invoices",
                "write_date",
                "create_date",
            ],
        )
        return [
            SaleProgress(
                sale_id=row["id"],
                reference=row["reference"],
                state=row["state"],
                shipment_state=row["shipment_state"],
                invoice_state=row["invoice_state"],
                shipments=tuple(row["shipments"]),
                invoices=tuple(row["invoices"]),
                changed_at=row["write_date"] or row["create_date"],
            )
            for row in rows
        ]

    async def shipments_done(self, ids: Sequence[int]) -> list[Shipment]:
        if not ids:
            return []
        rows = await self._rpc.model(
            "stock.shipment.out",
            "read",
            list(ids),
            ["state", "number", "reference", "effective_date", "outgoing_moves"],
        )
        done = [row for row in rows if row["state"] == "done"]
        move_ids = [move for row in done for move in row["outgoing_moves"]]
        moves = await self._moves(move_ids)
        return [
            Shipment(
                erp_id=str(row["id"]),
                number=row["number"] or str(row["id"]),
                tracking_number=row["reference"] or None,
                shipped_on=row["effective_date"],
                lines=[moves[move] for move in row["outgoing_moves"] if move in moves],
            )
            for row in done
        ]

    async def invoices_posted(self, ids: Sequence[int]) -> list[Invoice]:
        if not ids:
            return []
        rows = await self._rpc.model(
            "account.invoice",
            "read",
            list(ids),
            ["state", "number", "total_amount", "currency.code", "invoice_date"],
        )
        return [
            Invoice(
                erp_id=str(row["id"]),
                number=row["number"] or str(row["id"]),
                total=Money(
                    amount=Decimal(row["total_amount"]),
                    currency=(row.get("currency.") or {}).get("code", ""),
                ),
                invoice_date=row["invoice_date"],
            )
            for row in rows
            if row["state"] in INVOICED_STATES
        ]

    async def withdraw_if_duplicate(self, sale: SaleProgress) -> bool:
        """Cancel ``sale`` if it is a draft or quotation while another sale of the same
        reference is confirmed; return whether it did.

        An attempt that timed out may still have created its sale after the next attempt
        looked for it and created one; the later poll finds the leftover this way.
        """
        if sale.state not in {"draft", "quotation"}:
            return False
        confirmed = await self._rpc.model(
            "sale.sale",
            "search",
            [
                ["reference", "=", sale.reference],
                ["id", "!=", sale.sale_id],
                ["state", "in", ["confirmed", "processing", "done"]],
            ],
            0,
            1,
            None,
        )
        if not confirmed:
            return False
        await self._rpc.model("sale.sale", "cancel", [sale.sale_id])
        return True

    async def stock_changed_since(
        self, since: dt.datetime, limit: int = 500
    ) -> tuple[list[InventoryPosition], dt.datetime | None]:
        """Return the stock of the products whose moves changed since ``since``, and
        the time of the newest change seen (None when nothing changed)."""
        rows = await self._rpc.model(
            "stock.move",
            "search_read",
            [_changed_since(since)],
            0,
            limit,
            [["write_date", "ASC"], ["id", "ASC"]],
            ["product", "write_date", "create_date"],
        )
        if not rows:
            return [], None
        newest = max(row["write_date"] or row["create_date"] for row in rows)
        products = sorted({row["product"] for row in rows})
        return await self.stock_levels(products), newest

    async def stock_levels(self, product_ids: Sequence[int]) -> list[InventoryPosition]:
        warehouse = await self._warehouse_id()
        rows = await self._rpc.model(
            "product.product",
            "read",
            list(product_ids),
            ["code", "quantity", "forecast_quantity", "type"],
            locations=[warehouse],
        )
        return [
            InventoryPosition(
                sku=row["code"],
                location=self._warehouse_code,
                on_hand=Decimal(str(row["quantity"])),
                forecast=Decimal(str(row["forecast_quantity"])),
            )
            for row in rows
            if row["code"] and row["type"] == "goods"
        ]

    async def price(self, product_id: int, party_id: int, quantity: Decimal) -> Decimal:
        """Return the party's price for ``quantity`` of the product, from its price
        list when it has one."""
        (party,) = await self._rpc.model("party.party", "read", [party_id], ["sale_price_list"])
        context: dict[str, Any] = {"customer": party_id, "quantity": float(quantity)}
        if party["sale_price_list"]:
            context["price_list"] = party["sale_price_list"]
        (row,) = await self._rpc.model(
            "product.product", "read", [product_id], ["sale_price_uom"], **context
        )
        return Decimal(row["sale_price_uom"])

    async def server_now(self) -> dt.datetime | None:
        """Return the newest write time Tryton has recorded on a sale, as a starting
        cursor in Tryton's own clock."""
        rows = await self._rpc.model(
            "sale.sale", "search_read", [], 0, 1, [["create_date", "DESC"]], ["create_date"]
        )
        return rows[0]["create_date"] if rows else None

    async def _moves(self, ids: Sequence[int]) -> dict[int, ShipmentLine]:
        if not ids:
            return {}
        rows = await self._rpc.model(
            "stock.move", "read", list(ids), ["product.code", "quantity", "state"]
        )
        return {
            row["id"]: ShipmentLine(
                sku=(row.get("product.") or {}).get("code", ""), quantity=int(row["quantity"])
            )
            for row in rows
            if row["state"] == "done"
        }

    async def _warehouse_id(self) -> int:
        if self._warehouse is None:
            ids = await self._rpc.model(
                "stock.location",
                "search",
                [["code", "=", self._warehouse_code], ["type", "=", "warehouse"]],
                0,
                1,
                None,
            )
            if not ids:
                raise LookupError(f"Tryton has no warehouse with code {self._warehouse_code!r}")
            self._warehouse = int(ids[0])
        return self._warehouse


def _changed_since(since: dt.datetime) -> list[Any]:
    return ["OR", ["write_date", ">=", since], ["create_date", ">=", since]]
