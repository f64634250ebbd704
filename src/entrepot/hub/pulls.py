"""Orders read from the Shopify Admin API: the re-read of an update, and the catch-up pull.

Webhooks get lost, repeated and reordered, so an orders/updated webhook is taken as
a hint: the current order is read from the Admin API and stored as a receipt of its
own, which the intake applies like any other. The catch-up pull stores the orders
updated since the last pull, less an overlap, the same way, so an order whose
webhook never came is still imported. A pulled receipt is keyed by order id and
``updated_at``, so a version pulled twice is stored once, and the intake's version
check keeps an older version from being applied over a newer one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from entrepot.config import ShopifySettings
from entrepot.spokes.failures import DeliveryFailure
from entrepot.spokes.protocols import WebhookEnvelope
from entrepot.spokes.shopify.admin import ShopifyAdminClient
from entrepot.store import readback
from entrepot.store.database import Database
from entrepot.store.receipts import StoredReceipt, add_receipt
from entrepot.store.tables import Receipt
from entrepot.store.types import utc_now
from entrepot.wakeups import wait_for_work

log = logging.getLogger(__name__)

UPDATED_TOPIC = "orders/updated"
PULL_PREFIX = "pull:"
SOURCE_HEADER = "X-Entrepot-Source"


def admin_clients(shopify: ShopifySettings) -> dict[str, ShopifyAdminClient]:
    """Build an Admin API client for every shop that has one configured."""
    return {
        domain: ShopifyAdminClient(
            shop.admin_url, shop.access_token.get_secret_value(), api_version=shop.api_version
        )
        for domain, shop in shopify.shops.items()
        if shop.admin_url and shop.access_token
    }


def store_pulled_order(
    database: Database, shop: str, body: bytes, order: Mapping[str, Any], source: str
) -> StoredReceipt:
    """Store an order read from the Admin API as a receipt; a version stored before
    comes back as a duplicate."""
    envelope = WebhookEnvelope(
        channel="shopify",
        account=shop,
        topic=UPDATED_TOPIC,
        webhook_id=f"{PULL_PREFIX}{order['id']}:{order.get('updated_at')}",
        event_id=None,
        triggered_at=None,
        headers={SOURCE_HEADER: source, "X-Shopify-Shop-Domain": shop},
    )
    return database.write(lambda session: add_receipt(session, envelope, body))


@dataclass(frozen=True)
class Reread:
    """The receipt that holds an order as re-read, and whether it was stored before."""

    receipt_id: int
    duplicate: bool
    order_id: str


class OrderRereader:
    """Reads the current order for an orders/updated webhook before it is applied."""

    def __init__(self, database: Database, clients: Mapping[str, ShopifyAdminClient]) -> None:
        self._database = database
        self._clients = clients

    def wants(self, receipt: Receipt) -> bool:
        return (
            receipt.channel == "shopify"
            and receipt.topic == UPDATED_TOPIC
            and not (receipt.webhook_id or "").startswith(PULL_PREFIX)
            and receipt.account in self._clients
        )

    async def reread(self, receipt: Receipt) -> Reread | None:
        """Store the current order as a receipt of its own and return it, or None when
        it cannot be read (the webhook's own body is applied then)."""
        order_id = _order_id(receipt.body)
        if order_id is None:
            return None
        try:
            body = await self._clients[receipt.account].get_order(order_id)
        except DeliveryFailure as failure:
            log.warning(
                "Re-reading order %s from %s failed (%s); applying the webhook as sent.",
                order_id,
                receipt.account,
                failure.reason,
            )
            return None
        order = json.loads(body)["order"]
        stored = await asyncio.to_thread(
            store_pulled_order, self._database, receipt.account, body, order, "re-read"
        )
        return Reread(stored.receipt_id, stored.duplicate, str(order_id))


class OrderPuller:
    """Pulls the orders updated since the last pull from every shop, now and then."""

    def __init__(
        self,
        database: Database,
        clients: Mapping[str, ShopifyAdminClient],
        shopify: ShopifySettings,
        *,
        on_stored: Callable[[], None],
    ) -> None:
        self.wake = asyncio.Event()
        self._database = database
        self._clients = clients
        self._interval = shopify.pull_interval_seconds
        self._overlap = dt.timedelta(seconds=shopify.pull_overlap_seconds)
        self._on_stored = on_stored

    async def run(self, stopping: asyncio.Event) -> None:
        log.info("Order pull started for %d shops.", len(self._clients))
        while not stopping.is_set():
            for shop in self._clients:
                try:
                    stored = await self.pull(shop)
                except DeliveryFailure as failure:
                    log.warning("Pulling orders from %s failed: %s", shop, failure.reason)
                except Exception:
                    log.exception("Pulling orders from %s failed unexpectedly.", shop)
                else:
                    if stored:
                        self._on_stored()
            await wait_for_work(self.wake, stopping, self._interval)
        log.info("Order pull stopped.")

    async def pull(self, shop: str) -> int:
        """Store the orders of ``shop`` updated since the last pull; return how many
        versions were new."""
        source = f"shopify:{shop}:orders"
        started = utc_now()
        since = await asyncio.to_thread(self._since, source, started)
        stored = 0
        async for order in self._clients[shop].orders_updated_since(since):
            body = json.dumps({"order": order}).encode()
            receipt = await asyncio.to_thread(
                store_pulled_order, self._database, shop, body, order, "pull"
            )
            stored += not receipt.duplicate
        await asyncio.to_thread(self._save, source, started)
        if stored:
            log.info("Pulled %d new order versions from %s.", stored, shop)
        return stored

    def _since(self, source: str, now: dt.datetime) -> dt.datetime:
        with self._database.read() as session:
            position = readback.cursor(session, source)
        last = dt.datetime.fromisoformat(position) if position else now - dt.timedelta(days=1)
        return last - self._overlap

    def _save(self, source: str, position: dt.datetime) -> None:
        self._database.write(
            lambda session: readback.save_cursor(session, source, position.isoformat())
        )


def _order_id(body: bytes) -> int | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("order"), dict):
        data = data["order"]
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
