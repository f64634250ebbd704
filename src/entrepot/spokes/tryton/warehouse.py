"""Warehouse steps in Tryton, as its users take them: ship a sale, post its invoices.

The demo and the tests use these to make Tryton do what entrepot then reads back.
"""

from __future__ import annotations

import asyncio

from entrepot.spokes.tryton.rpc import TrytonRpc

PROCESS_WAIT_SECONDS = 10.0


async def ship_sale(rpc: TrytonRpc, sale_id: int, tracking_number: str | None) -> int:
    """Ship the sale's waiting shipment, with ``tracking_number`` as its reference;
    return the shipment's id."""
    shipments = await _shipments(rpc, sale_id)
    (shipment,) = shipments
    if tracking_number is not None:
        await rpc.model("stock.shipment.out", "write", [shipment], {"reference": tracking_number})
    for step in ("assign_try", "pick", "pack", "do"):
        await rpc.model("stock.shipment.out", step, [shipment])
    return int(shipment)


async def post_invoices(rpc: TrytonRpc, sale_id: int) -> list[int]:
    """Post the sale's draft invoices; return their ids."""
    (row,) = await rpc.model("sale.sale", "read", [sale_id], ["invoices"])
    invoices: list[int] = row["invoices"]
    await rpc.model("account.invoice", "post", invoices)
    return invoices


async def _shipments(rpc: TrytonRpc, sale_id: int) -> list[int]:
    """Wait for the confirmed sale to be processed into its shipments."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PROCESS_WAIT_SECONDS
    while True:
        (row,) = await rpc.model("sale.sale", "read", [sale_id], ["shipments", "state"])
        if row["shipments"] or loop.time() > deadline:
            return list(row["shipments"])
        if row["state"] == "confirmed":
            await rpc.model("sale.sale", "process", [sale_id])
        await asyncio.sleep(0.1)
