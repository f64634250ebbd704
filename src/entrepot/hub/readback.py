"""The read-back worker: polls a target for what it did with the orders, and the stock.

Each shipment done and each invoice posted is kept once as an event (a poll that
reads it again finds it kept), moves its order through the lifecycle, and queues
what goes back to the channel: a fulfillment with its tracking number, and the new
inventory levels of the items whose stock moved.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from entrepot.canonical import InventoryPosition, Invoice, Shipment
from entrepot.config import ShopifySettings
from entrepot.delivery.budget import TargetClosedError
from entrepot.events.envelope import (
    INVENTORY_CHANGED,
    INVOICE_POSTED,
    SHIPMENT_CONFIRMED,
    Event,
    inventory_subject,
)
from entrepot.events.outbox import append, emit_for_order
from entrepot.hub.lifecycle import OrderState, is_allowed, record, transition
from entrepot.spokes.failures import DeliveryFailure
from entrepot.spokes.tryton.readback import SaleProgress, TrytonReadBack
from entrepot.spokes.tryton.rpc import TrytonError
from entrepot.store import pushes, readback
from entrepot.store.database import Database
from entrepot.store.tables import Order
from entrepot.store.types import utc_now
from entrepot.wakeups import wait_for_work

log = logging.getLogger(__name__)

PAGE = 200
MAX_BACKOFF = 60.0  # seconds between polls at most while the target keeps failing
FIRST_CURSOR = dt.datetime(2000, 1, 1)


@dataclass
class PollSummary:
    """The counts of one poll: new events, changed inventory positions, pushes queued."""

    sales: int = 0
    shipments: int = 0
    invoices: int = 0
    positions: int = 0
    pushes: int = 0
    duplicates: int = 0
    unknown_sales: list[str] = field(default_factory=list)


class ReadBackWorker:
    """Polls one target every ``interval`` seconds."""

    def __init__(
        self,
        target: str,
        source: TrytonReadBack,
        database: Database,
        shopify: ShopifySettings,
        *,
        interval: float,
        overlap: float,
        on_pushed: Callable[[], None] | None = None,
    ) -> None:
        self.target = target
        self.wake = asyncio.Event()
        self._source = source
        self._database = database
        self._shopify = shopify
        self._interval = interval
        self._overlap = dt.timedelta(seconds=overlap)
        self._on_pushed = on_pushed

    async def run(self, stopping: asyncio.Event) -> None:
        log.info("Read-back worker for %s started.", self.target)
        failures = 0
        while not stopping.is_set():
            try:
                summary = await self.poll_once()
            except (DeliveryFailure, TrytonError, LookupError, TargetClosedError) as exc:
                failures += 1
                # One warning per outage; the polls that keep failing log at debug.
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "Reading back from %s failed: %s; trying again.", self.target, exc)
            except Exception:
                failures += 1
                log.exception("Reading back from %s failed unexpectedly.", self.target)
            else:
                if failures:
                    log.info(
                        "Reading back from %s works again after %d failed polls.",
                        self.target,
                        failures,
                    )
                failures = 0
                if summary.pushes and self._on_pushed is not None:
                    self._on_pushed()
            wait = min(self._interval * 2 ** min(failures, 6), max(self._interval, MAX_BACKOFF))
            await wait_for_work(self.wake, stopping, wait)
        log.info("Read-back worker for %s stopped.", self.target)

    async def poll_once(self) -> PollSummary:
        """Read what changed since the last poll, and record it."""
        summary = PollSummary()
        await self._poll_sales(summary)
        await self._poll_stock(summary)
        return summary

    async def _poll_sales(self, summary: PollSummary) -> None:
        source = f"{self.target}:sales"
        since = self._since(source)
        offset_newest = since
        offset = 0
        while True:
            sales = await self._source.changed_sales(since, PAGE, offset)
            for sale in sales:
                await self._apply_sale(sale, summary)
                offset_newest = max(offset_newest, sale.changed_at)
            if len(sales) < PAGE:
                break
            offset += PAGE
        await asyncio.to_thread(self._save_cursor, source, offset_newest)

    async def _apply_sale(self, sale: SaleProgress, summary: PollSummary) -> None:
        summary.sales += 1
        if await self._source.withdraw_if_duplicate(sale):
            log.warning(
                "Cancelled sale %d in %s: a draft left by a timed-out attempt, beside the "
                "confirmed sale of %s.",
                sale.sale_id,
                self.target,
                sale.reference,
            )
            summary.duplicates += 1
            return
        shipments = await self._source.shipments_done(sale.shipments)
        invoices = await self._source.invoices_posted(sale.invoices)
        applied = await asyncio.to_thread(
            self._database.write,
            lambda session: self._record_sale(session, sale, shipments, invoices, summary),
        )
        if not applied:
            summary.unknown_sales.append(sale.reference)

    def _record_sale(
        self,
        session: Session,
        sale: SaleProgress,
        shipments: list[Shipment],
        invoices: list[Invoice],
        summary: PollSummary,
    ) -> bool:
        order = _order_of(session, sale.reference)
        if order is None:
            return False
        for shipment in shipments:
            if self._record_shipment(session, order, shipment):
                summary.shipments += 1
                summary.pushes += self._queue_fulfillment(session, order, shipment)
        for invoice in invoices:
            if self._record_invoice(session, order, invoice):
                summary.invoices += 1
        _follow_progress(session, order, sale, bool(invoices), self.target)
        return True

    def _record_shipment(self, session: Session, order: Order, shipment: Shipment) -> bool:
        payload = shipment.model_dump(mode="json")
        key = f"shipment:{shipment.erp_id}"
        if not readback.record_event(
            session, self.target, SHIPMENT_CONFIRMED, key, order.id, payload
        ):
            return False
        emit_for_order(
            session, order, SHIPMENT_CONFIRMED, extra={"target": self.target, "shipment": payload}
        )
        tracking = shipment.tracking_number or "no tracking number"
        record(
            session,
            order,
            f"shipment confirmed by {self.target}",
            detail=f"shipment {shipment.number}, {tracking}",
        )
        log.info(
            "Shipment %s of order %s (%s) confirmed by %s.",
            shipment.number,
            order.order_number or order.channel_order_id,
            order.correlation_id,
            self.target,
        )
        return True

    def _queue_fulfillment(self, session: Session, order: Order, shipment: Shipment) -> int:
        shop = self._shopify.shops.get(order.account)
        if order.channel != "shopify" or shop is None or shop.admin_url is None:
            return 0
        payload = {
            "order_id": order.channel_order_id,
            "lines": [[line.sku, line.quantity] for line in shipment.lines],
            "tracking_number": shipment.tracking_number,
            "shipment": shipment.number,
        }
        pushes.enqueue_push(
            session,
            order.channel,
            order.account,
            pushes.FULFILLMENT,
            f"{self.target}:shipment:{shipment.erp_id}",
            payload,
            order_id=order.id,
            correlation_id=order.correlation_id,
        )
        return 1

    def _record_invoice(self, session: Session, order: Order, invoice: Invoice) -> bool:
        payload = invoice.model_dump(mode="json")
        key = f"invoice:{invoice.erp_id}"
        if not readback.record_event(session, self.target, INVOICE_POSTED, key, order.id, payload):
            return False
        emit_for_order(
            session, order, INVOICE_POSTED, extra={"target": self.target, "invoice": payload}
        )
        record(
            session,
            order,
            f"invoice posted by {self.target}",
            detail=f"invoice {invoice.number}, {invoice.total.amount} {invoice.total.currency}",
        )
        return True

    async def _poll_stock(self, summary: PollSummary) -> None:
        source = f"{self.target}:stock"
        since = self._since(source)
        levels, newest = await self._source.stock_changed_since(since)
        if newest is None:
            return
        await asyncio.to_thread(
            self._database.write, lambda session: self._record_stock(session, levels, summary)
        )
        await asyncio.to_thread(self._save_cursor, source, newest)

    def _record_stock(
        self, session: Session, levels: list[InventoryPosition], summary: PollSummary
    ) -> None:
        for level in levels:
            changed = readback.update_position(
                session, self.target, level.sku, level.location, level.on_hand, level.forecast
            )
            if not changed:
                continue
            append(session, _inventory_event(self.target, level))
            summary.positions += 1
            summary.pushes += self._queue_inventory(session, level)

    def _queue_inventory(self, session: Session, level: InventoryPosition) -> int:
        available = level.available
        queued = 0
        for domain, shop in self._shopify.shops.items():
            if shop.admin_url is None or shop.location_id is None:
                continue
            pushes.enqueue_push(
                session,
                "shopify",
                domain,
                pushes.INVENTORY,
                f"{level.sku}@{shop.location_id}",
                {"sku": level.sku, "location_id": shop.location_id, "available": available},
            )
            queued += 1
        return queued

    def _since(self, source: str) -> dt.datetime:
        with self._database.read() as session:
            position = readback.cursor(session, source)
        if position is None:
            return FIRST_CURSOR
        return dt.datetime.fromisoformat(position) - self._overlap

    def _save_cursor(self, source: str, position: dt.datetime) -> None:
        self._database.write(
            lambda session: readback.save_cursor(session, source, position.isoformat())
        )


def _inventory_event(target: str, level: InventoryPosition) -> Event:
    return Event(
        type=INVENTORY_CHANGED,
        source=f"/entrepot/targets/{target}",
        subject=inventory_subject(target, level.sku, level.location),
        data={"target": target, "position": level.model_dump(mode="json")},
        sourceversion=utc_now().isoformat(),
    )


def _order_of(session: Session, reference: str) -> Order | None:
    """Find the order whose external id is the sale's reference (channel:account:id)."""
    channel, _, rest = reference.partition(":")
    account, _, channel_order_id = rest.rpartition(":")
    if not (channel and account and channel_order_id):
        return None
    return session.scalars(
        select(Order)
        .where(
            Order.channel == channel,
            Order.account == account,
            Order.channel_order_id == channel_order_id,
        )
        .with_for_update()
    ).first()


def _follow_progress(
    session: Session, order: Order, sale: SaleProgress, invoiced: bool, target: str
) -> None:
    """Move the order to the state the sale's shipments and invoices have reached."""
    if sale.shipment_state == "sent":
        state = OrderState.INVOICED if invoiced else OrderState.SHIPPED
    elif sale.shipment_state == "partially shipped":
        state = OrderState.PARTIALLY_SHIPPED
    else:
        return
    current = OrderState(order.state)
    if current == state or not is_allowed(current, state):
        return
    event = {
        OrderState.INVOICED: "shipped and invoiced",
        OrderState.SHIPPED: "shipped",
        OrderState.PARTIALLY_SHIPPED: "partially shipped",
    }[state]
    transition(session, order, state, f"{event} in {target}", detail=f"sale {sale.sale_id}")
