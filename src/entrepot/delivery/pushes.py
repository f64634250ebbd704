"""The channel push worker: sends fulfillments and inventory levels back to shops.

Pushes are claimed under leases like deliveries. A fulfillment is created once per
ERP shipment: the read-back worker queues it once, and the Admin client finds a
fulfillment already made with the same tracking number instead of making another.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy.orm import Session

from entrepot.config import ShopifySettings
from entrepot.delivery.backoff import Backoff
from entrepot.hub.lifecycle import record
from entrepot.spokes.failures import DeliveryFailure, NothingToDo, PermanentFailure, RetryLater
from entrepot.spokes.shopify.admin import UNKNOWN_SKU, ShopifyAdminClient
from entrepot.store import pushes
from entrepot.store.database import Database
from entrepot.store.pushes import ClaimedPush
from entrepot.store.tables import Order
from entrepot.store.types import utc_now
from entrepot.wakeups import wait_for_work

log = logging.getLogger(__name__)

CLAIM_LIMIT = 16
UNTRACKED_COMPANY = "Other"


class ChannelPushWorker:
    """Sends the queued pushes of every shop that has its Admin API configured, through
    ``clients`` by shop domain, which the caller closes."""

    def __init__(
        self,
        database: Database,
        shopify: ShopifySettings,
        clients: Mapping[str, ShopifyAdminClient],
        *,
        owner: str,
        lease_seconds: float,
        poll_interval: float,
        concurrency: int = 4,
    ) -> None:
        self.wake = asyncio.Event()
        self._database = database
        self._shopify = shopify
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._poll_interval = poll_interval
        self._concurrency = asyncio.Semaphore(concurrency)
        self._max_attempts = shopify.max_push_attempts
        self._backoff = Backoff(1.0, 300.0)
        self.clients = clients

    async def run(self, stopping: asyncio.Event) -> None:
        log.info("Channel push worker started for %d shops.", len(self.clients))
        try:
            while not stopping.is_set():
                try:
                    sent = await self.push_once()
                except Exception:
                    log.exception("Claiming channel pushes failed; trying again.")
                    sent = 0
                if not sent:
                    await wait_for_work(self.wake, stopping, self._poll_interval)
        finally:
            log.info("Channel push worker stopped.")

    async def push_once(self) -> int:
        """Send the pushes that are due; return how many were claimed."""
        claimed = await asyncio.to_thread(
            self._database.write,
            lambda session: pushes.claim_pushes(
                session, self._owner, self._lease_seconds, CLAIM_LIMIT
            ),
        )
        await asyncio.gather(*(self._send(push) for push in claimed))
        return len(claimed)

    async def _send(self, push: ClaimedPush) -> None:
        async with self._concurrency:
            try:
                outcome = await self._request(push)
            except DeliveryFailure as failure:
                await asyncio.to_thread(self._record_failure, push, failure)
                return
            except Exception as exc:
                log.exception("Push %d to %s failed unexpectedly.", push.id, push.account)
                unexpected = RetryLater(f"unexpected error: {exc!r}")
                await asyncio.to_thread(self._record_failure, push, unexpected)
                return
        await asyncio.to_thread(self._record_done, push, outcome)

    async def _request(self, push: ClaimedPush) -> str:
        client = self.clients.get(push.account)
        if client is None:
            raise PermanentFailure(f"shop {push.account} has no Admin API configured")
        payload = push.payload
        if push.kind == pushes.FULFILLMENT:
            shop = self._shopify.shops[push.account]
            # Without a tracking number from the ERP, the ERP's shipment number stands in
            # for it, so that a second attempt still finds the fulfillment it made.
            tracking = payload.get("tracking_number") or payload["shipment"]
            fulfillment = await client.create_fulfillment(
                payload["order_id"],
                [(sku, int(quantity)) for sku, quantity in payload["lines"]],
                tracking_number=tracking,
                tracking_company=payload.get("tracking_company") or UNTRACKED_COMPANY,
                notify_customer=shop.notify_customer,
            )
            return f"fulfillment {fulfillment} with tracking number {tracking}"
        try:
            await client.set_inventory_level(
                payload["sku"], payload["location_id"], int(payload["available"])
            )
        except PermanentFailure as failure:
            if failure.error_code == UNKNOWN_SKU:
                # The ERP stocks items that this shop does not sell.
                raise NothingToDo(failure.reason) from failure
            raise
        return f"{payload['sku']} set to {payload['available']} available"

    def _record_done(self, push: ClaimedPush, outcome: str) -> None:
        def write(session: Session) -> None:
            row = pushes.owned_push(session, push)
            if row is None:
                return
            pushes.finish_push(row, pushes.DONE, outcome)
            self._note(session, push, f"{push.kind} sent to {push.channel}", outcome)

        self._database.write(write)
        log.info("Pushed %s to %s: %s.", push.kind, push.account, outcome)

    def _record_failure(self, push: ClaimedPush, failure: DeliveryFailure) -> None:
        def write(session: Session) -> None:
            row = pushes.owned_push(session, push)
            if row is None:
                return
            if isinstance(failure, NothingToDo):
                pushes.finish_push(row, pushes.DONE, f"nothing to do: {failure.reason}")
            elif isinstance(failure, RetryLater) and (
                failure.throttled or push.attempts < self._max_attempts
            ):
                delay = self._backoff.delay(push.attempts, failure.retry_after)
                at = utc_now() + timedelta(seconds=delay)
                pushes.reschedule_push(
                    session, row, at, failure.reason, count_attempt=not failure.throttled
                )
            else:
                pushes.finish_push(row, pushes.DEAD, failure.reason)
                self._note(session, push, f"{push.kind} to {push.channel} failed", failure.reason)
                log.error(
                    "Push %d of %s to %s given up after %d attempts: %s",
                    push.id,
                    push.kind,
                    push.account,
                    push.attempts,
                    failure.reason,
                )

        self._database.write(write)

    def _note(self, session: Session, push: ClaimedPush, event: str, detail: str) -> None:
        if push.order_id is None:
            return
        order = session.get(Order, push.order_id)
        if order is not None:
            record(session, order, event, detail=detail, correlation_id=push.correlation_id)
