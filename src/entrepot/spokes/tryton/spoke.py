"""The Tryton ERP spoke: orders become confirmed sales, found again by their reference.

A sale carries the order's external id as its reference. Every submission first
searches for it, so a retry after a timeout, or a second submission, finishes the
sale already there instead of creating another. A sale is created, quoted and
confirmed in three calls, each its own transaction in Tryton; a sale found in
draft or quotation is taken on from where it stopped.

Orders submitted together go in one call per step. When Tryton refuses a call,
the batch is split in halves until the order it refuses is alone, so one bad
order never fails the others.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from entrepot.canonical import SalesOrder
from entrepot.config import TargetSettings
from entrepot.spokes.failures import (
    DeliveryFailure,
    NothingToDo,
    OnHold,
    PermanentFailure,
    RetryLater,
)
from entrepot.spokes.protocols import RequestGate, SubmitResult
from entrepot.spokes.tryton.parties import OrderParty, PartyDirectory
from entrepot.spokes.tryton.references import ReferenceData
from entrepot.spokes.tryton.rpc import TrytonError, TrytonRpc
from entrepot.spokes.tryton.sales import (
    SaleDraft,
    adjustment_line,
    adjustment_product,
    draft_sale,
    sale_reference,
)
from entrepot.store.database import Database

log = logging.getLogger(__name__)

T = TypeVar("T")
Outcome = SubmitResult | DeliveryFailure

CONFIRMED_STATES = frozenset({"confirmed", "processing", "done"})
# The end of Tryton's message for a unique key that a concurrent write took first.
UNIQUE_CLASH = "must be unique."


class TrytonSpoke:
    """Posts canonical orders to one Tryton database as confirmed sales."""

    def __init__(
        self, name: str, settings: TargetSettings, gate: RequestGate, database: Database
    ) -> None:
        self.name = name
        self._settings = settings.tryton
        self.rpc = TrytonRpc(
            settings.base_url,
            settings.tryton.database,
            settings.tryton.username,
            settings.tryton.password.get_secret_value(),
            timeout=settings.timeout_seconds,
            max_connections=settings.max_concurrency,
            gate=gate,
            target=name,
        )
        self.references = ReferenceData(self.rpc)
        owner = f"{name}:{uuid.uuid4().hex[:12]}"
        self.parties = PartyDirectory(name, self.rpc, self.references, database, owner)
        self._guest_customer = settings.guest_customer

    async def submit_order(self, order: SalesOrder, *, look_up_first: bool) -> SubmitResult:
        (outcome,) = await self.submit_orders([order])
        if isinstance(outcome, DeliveryFailure):
            raise outcome
        return outcome

    async def submit_orders(self, orders: Sequence[SalesOrder]) -> list[Outcome]:
        """Submit several orders in as few calls as Tryton allows; the outcome of each
        order is in its place, a failure as the `DeliveryFailure` it raised."""
        outcomes: list[Outcome | None] = [None] * len(orders)
        existing = await self._existing_sales(orders)
        drafts: list[tuple[int, SaleDraft, list[str]]] = []
        unfinished: list[tuple[int, int, str]] = []
        for index, order in enumerate(orders):
            sale = existing.get(sale_reference(order))
            if sale is not None and sale["state"] in CONFIRMED_STATES:
                outcomes[index] = SubmitResult(
                    erp_id=str(sale["id"]), created=False, notes=_diverged(sale, order)
                )
            elif sale is not None:
                unfinished.append((index, sale["id"], sale["state"]))
            else:
                prepared = await _caught(self._prepare(order))
                if isinstance(prepared, DeliveryFailure):
                    outcomes[index] = prepared
                else:
                    drafts.append((index, *prepared))

        created = await self._create(drafts, outcomes)
        await self._confirm(created + unfinished, orders, outcomes)
        return [_settled(outcome) for outcome in outcomes]

    async def cancel_order(self, order: SalesOrder) -> SubmitResult:
        sale = (await self._existing_sales([order])).get(sale_reference(order))
        if sale is None:
            raise NothingToDo(f"the order is not in {self.name}, so there is nothing to cancel")
        sale_id, state = sale["id"], sale["state"]
        if state == "cancelled":
            return SubmitResult(erp_id=str(sale_id), created=False)
        try:
            if state == "processing":
                await self._withdraw(sale_id)
                log.info(
                    "Withdrew sale %d in %s: nothing shipped or invoiced.", sale_id, self.name
                )
                return SubmitResult(erp_id=str(sale_id), created=False)
            if state == "confirmed":
                await self.rpc.model("sale.sale", "draft", [sale_id])
            await self.rpc.model("sale.sale", "cancel", [sale_id])
        except TrytonError as exc:
            raise PermanentFailure(
                f"Tryton cannot cancel sale {sale_id} in state {state!r}: {exc.message}",
                remedy="Cancel the sale's shipments and invoices in Tryton, or cancel the "
                "sale there by hand, then discard this dead letter.",
                error_code="CANNOT_CANCEL",
            ) from exc
        log.info("Cancelled sale %d in %s.", sale_id, self.name)
        return SubmitResult(erp_id=str(sale_id), created=False)

    async def aclose(self) -> None:
        await self.rpc.aclose()

    async def _withdraw(self, sale_id: int) -> None:
        """Cancel a processing sale's shipments and draft invoices, and have the sale
        ignore them, as Tryton's exception handling does; the sale ends done with
        nothing shipped or invoiced. A shipment sent or an invoice posted stops it."""
        (sale,) = await self.rpc.model("sale.sale", "read", [sale_id], ["lines", "invoices"])
        shipments = await self._shipments_of(sale_id)
        invoices = await self.rpc.model("account.invoice", "read", sale["invoices"], ["state"])
        sent = [row["id"] for row in shipments if row["state"] == "done"]
        posted = [row["id"] for row in invoices if row["state"] in {"posted", "paid"}]
        if sent or posted:
            raise PermanentFailure(
                f"Tryton has already shipped or invoiced sale {sale_id} "
                f"(shipments {sent}, invoices {posted}), so it cannot be withdrawn",
                remedy="Handle the return or credit note in Tryton, then discard this "
                "dead letter.",
                error_code="ALREADY_FULFILLED",
            )
        open_shipments = [row["id"] for row in shipments if row["state"] != "cancelled"]
        if open_shipments:
            await self.rpc.model("stock.shipment.out", "cancel", open_shipments)
        drafts = [row["id"] for row in invoices if row["state"] != "cancelled"]
        if drafts:
            await self.rpc.model("account.invoice", "cancel", drafts)
        lines = await self.rpc.model("sale.line", "read", sale["lines"], ["moves"])
        for line in lines:
            if line["moves"]:
                await self.rpc.model(
                    "sale.line", "write", [line["id"]], {"moves_ignored": [["add", line["moves"]]]}
                )
        if sale["invoices"]:
            await self.rpc.model(
                "sale.sale", "write", [sale_id], {"invoices_ignored": [["add", sale["invoices"]]]}
            )
        await self.rpc.model("sale.sale", "process", [sale_id])

    async def _shipments_of(self, sale_id: int) -> list[dict[str, Any]]:
        (sale,) = await self.rpc.model("sale.sale", "read", [sale_id], ["shipments"])
        rows: list[dict[str, Any]] = await self.rpc.model(
            "stock.shipment.out", "read", sale["shipments"], ["state"]
        )
        return rows

    async def _existing_sales(self, orders: Sequence[SalesOrder]) -> dict[str, dict[str, Any]]:
        references = [sale_reference(order) for order in orders]
        rows = await self.rpc.model(
            "sale.sale",
            "search_read",
            [["reference", "in", references], ["state", "!=", "cancelled"]],
            0,
            None,
            [["id", "ASC"]],
            ["reference", "state", "total_amount"],
        )
        # A confirmed sale wins over a draft of the same reference that a timed-out
        # attempt may have left; among equals, the oldest.
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            kept = found.get(row["reference"])
            if kept is None or (
                row["state"] in CONFIRMED_STATES and kept["state"] not in CONFIRMED_STATES
            ):
                found[row["reference"]] = row
        return found

    async def _prepare(self, order: SalesOrder) -> tuple[SaleDraft, list[str]]:
        party = await self.parties.for_order(order, await self._guest_party(order))
        await self._check_credit(order, party)
        return await draft_sale(order, party, self.references), party.notes

    async def _guest_party(self, order: SalesOrder) -> int | None:
        if order.customer is not None:
            return None
        guest = self._guest_customer
        party = await self.parties.party_of(guest) if guest else None
        if party is None:
            raise PermanentFailure(
                "the order has no customer, and no guest party is set up for it",
                remedy=f"Set guest_customer for target {self.name!r} to the identifier of "
                "a Tryton party linked in entrepot, then retry this dead letter.",
                error_code="MISSING_CUSTOMER",
                field_path="customer",
            )
        return party

    async def _check_credit(self, order: SalesOrder, party: OrderParty) -> None:
        """Hold the order if its party is in the hold category or would go over its
        credit limit with this order."""
        hold = await self.references.party_category(self._settings.hold_category)
        (row,) = await self.rpc.model(
            "party.party",
            "read",
            [party.party],
            ["categories", "credit_amount", "credit_limit_amount"],
        )
        recheck = self._settings.hold_recheck_seconds
        if hold is not None and hold in row["categories"]:
            raise OnHold(
                f"the customer's party is in category {self._settings.hold_category!r} "
                f"in {self.name}",
                retry_after=recheck,
            )
        limit, credit = row.get("credit_limit_amount"), row.get("credit_amount") or 0
        if limit is not None and Decimal(credit) + order.total.amount > Decimal(limit):
            raise OnHold(
                f"the order of {order.total.amount} {order.currency} would take the "
                f"customer's credit of {credit} over its limit of {limit} in {self.name}",
                retry_after=recheck,
            )

    async def _create(
        self, drafts: list[tuple[int, SaleDraft, list[str]]], outcomes: list[Outcome | None]
    ) -> list[tuple[int, int, str]]:
        """Create the sales, bring each total to the channel's, and return (index, sale
        id, state) of those created."""
        created: list[tuple[int, int, str]] = []

        async def create(batch: list[tuple[int, SaleDraft, list[str]]]) -> list[int]:
            ids: list[int] = await self.rpc.model(
                "sale.sale", "create", [draft.values for _, draft, _ in batch]
            )
            return ids

        results = await _split_on_refusal(drafts, create, "create")
        for (index, draft, notes), result in zip(drafts, results, strict=True):
            if isinstance(result, DeliveryFailure):
                outcomes[index] = result
                continue
            notes += await self._adjust_total(result, draft.order)
            outcomes[index] = SubmitResult(erp_id=str(result), created=True, notes=tuple(notes))
            created.append((index, result, "draft"))
        return created

    async def _adjust_total(self, sale_id: int, order: SalesOrder) -> list[str]:
        (row,) = await self.rpc.model("sale.sale", "read", [sale_id], ["total_amount"])
        difference = order.total.amount - Decimal(row["total_amount"])
        if not difference:
            return []
        product = await adjustment_product(self.references)
        line = adjustment_line(product, difference)
        await self.rpc.model("sale.sale", "write", [sale_id], {"lines": [["create", [line]]]})
        log.info(
            "Sale %d in %s differs from the channel's total by %s %s; added an adjustment line.",
            sale_id,
            self.name,
            difference,
            order.currency,
        )
        return [
            f"adjustment line of {difference} {order.currency} added: Tryton computed "
            f"{row['total_amount']}, the channel's total is {order.total.amount}"
        ]

    async def _confirm(
        self,
        sales: list[tuple[int, int, str]],
        orders: Sequence[SalesOrder],
        outcomes: list[Outcome | None],
    ) -> None:
        drafts = [sale for sale in sales if sale[2] == "draft"]
        quoted = await _split_on_refusal(drafts, self._call_on("quote"), "quote")
        for (index, _, _), result in zip(drafts, quoted, strict=True):
            if isinstance(result, DeliveryFailure):
                outcomes[index] = result
        ready = [sale for sale in sales if not isinstance(outcomes[sale[0]], DeliveryFailure)]
        confirmed = await _split_on_refusal(ready, self._call_on("confirm"), "confirm")
        for (index, sale_id, _), result in zip(ready, confirmed, strict=True):
            if isinstance(result, DeliveryFailure):
                outcomes[index] = result
            elif outcomes[index] is None:
                outcomes[index] = SubmitResult(erp_id=str(sale_id), created=True)
            log.debug("Sale %d for %s confirmed.", sale_id, orders[index].external_id)

    def _call_on(self, method: str) -> Callable[[list[tuple[int, int, str]]], Awaitable[None]]:
        async def call(batch: list[tuple[int, int, str]]) -> None:
            await self.rpc.model("sale.sale", method, [sale_id for _, sale_id, _ in batch])

        return call


async def _split_on_refusal(
    items: list[T],
    call: Callable[[list[T]], Awaitable[Any]],
    step: str,
) -> list[Any]:
    """Run ``call`` on ``items``; when Tryton refuses, run it on each half, down to the
    single item it refuses. Returns per item the call's per-item result (the list
    entry for a call that returns a list) or the failure."""
    if not items:
        return []
    try:
        result = await call(items)
    except TrytonError as exc:
        if len(items) == 1:
            return [_refusal(exc, step)]
        middle = len(items) // 2
        first = await _split_on_refusal(items[:middle], call, step)
        return first + await _split_on_refusal(items[middle:], call, step)
    except DeliveryFailure as failure:
        return [failure] * len(items)
    if isinstance(result, list):
        return result
    return [result] * len(items)


def _refusal(exc: TrytonError, step: str) -> DeliveryFailure:
    if exc.is_user_error and UNIQUE_CLASH in exc.message:
        # Two writers took the same number from a sequence (a party code, say); the
        # one that lost tries again and draws the next number.
        return RetryLater(f"Tryton refused to {step} the sale: {exc.message}")
    if exc.is_user_error:
        return PermanentFailure(
            f"Tryton refused to {step} the sale: {exc.message}",
            remedy="Correct the order or the data in Tryton it points at, then retry this "
            "dead letter.",
            error_code=exc.kind,
        )
    # Not a rule of Tryton but a fault in it: another attempt may go through.
    return RetryLater(f"Tryton failed to {step} the sale: {exc}", ambiguous=step == "create")


async def _caught(step: Awaitable[T]) -> T | DeliveryFailure:
    try:
        return await step
    except DeliveryFailure as failure:
        return failure
    except TrytonError as exc:
        return _refusal(exc, "prepare")


def _diverged(sale: dict[str, Any], order: SalesOrder) -> tuple[str, ...]:
    """Say so when the order changed on the channel after its sale was confirmed."""
    total = Decimal(sale["total_amount"])
    if total == order.total.amount:
        return ()
    return (
        f"sale {sale['id']} is confirmed in Tryton with total {total}, and the channel's "
        f"total is now {order.total.amount} {order.currency}; Tryton does not take changes "
        "to a confirmed sale, so change it there",
    )


def _settled(outcome: Outcome | None) -> Outcome:
    assert outcome is not None, "every order of a batch ends with an outcome"
    return outcome
