"""Ship a sale in Tryton the way a warehouse does: assign, pick, pack, done."""

from __future__ import annotations

import asyncio

from entrepot.spokes.tryton.rpc import TrytonRpc


async def ship_sale(rpc: TrytonRpc, sale_id: int, tracking_number: str | None) -> int:
    """Ship the sale's waiting shipment with ``tracking_number``; return its id."""
    shipments: list[int] = []
    for _ in range(100):
        (row,) = await rpc.model("sale.sale", "read", [sale_id], ["shipments", "state"])
        shipments = row["shipments"]
        if shipments:
            break
        if row["state"] == "confirmed":
            await rpc.model("sale.sale", "process", [sale_id])
        await asyncio.sleep(0.1)
    (shipment,) = shipments
    if tracking_number is not None:
        await rpc.model("stock.shipment.out", "write", [shipment], {"reference": tracking_number})
    for step in ("assign_try", "pick", "pack", "do"):
        await rpc.model("stock.shipment.out", step, [shipment])
    return int(shipment)


async def post_invoices(rpc: TrytonRpc, sale_id: int) -> list[int]:
    (row,) = await rpc.model("sale.sale", "read", [sale_id], ["invoices"])
    invoices: list[int] = row["invoices"]
    await rpc.model("account.invoice", "post", invoices)
    return invoices
