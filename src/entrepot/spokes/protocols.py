"""Protocols of the spokes: all that the hub and delivery import of a spoke.

A concrete spoke is named in the configuration by its ``kind``; `load_erp_spoke`
imports it by the dotted path registered for that kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from entrepot.canonical import SalesOrder
from entrepot.spokes.failures import DeliveryFailure

if TYPE_CHECKING:
    from entrepot.config import Settings, TargetSettings
    from entrepot.store.database import Database


@dataclass(frozen=True)
class SubmitResult:
    """The ERP's result for a submitted order.

    ``created`` is false when the order was already there (found by its external
    id) and nothing new was written. ``notes`` are remarks for operators that do not
    stop the order, such as an address to review or a total adjusted.
    """

    erp_id: str
    created: bool
    notes: tuple[str, ...] = ()


class ErpSpoke(Protocol):
    """An ERP that takes canonical sales orders.

    Methods raise `RetryLater`, `PermanentFailure` or `NothingToDo` from
    `entrepot.spokes.failures` and nothing else for a failed request.
    """

    async def submit_order(self, order: SalesOrder, *, look_up_first: bool) -> SubmitResult:
        """Create or update the order, idempotent by ``order.external_id``.

        With ``look_up_first``, find the order before creating it, because an
        earlier attempt may have created it without its response reaching us.
        """
        ...

    async def cancel_order(self, order: SalesOrder) -> SubmitResult:
        """Cancel the order in the ERP."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class BatchingErpSpoke(ErpSpoke, Protocol):
    """An ERP spoke that also takes several orders in one go."""

    async def submit_orders(
        self, orders: Sequence[SalesOrder]
    ) -> list[SubmitResult | DeliveryFailure]:
        """Submit ``orders``; each outcome is in its order's place, a failure as the
        `DeliveryFailure` it would have raised alone. A failure raised instead of
        returned applies to every order of the batch."""
        ...


@dataclass(frozen=True)
class WebhookEnvelope:
    """The parts of a verified webhook request that the hub keys and routes by."""

    channel: str
    account: str
    topic: str
    webhook_id: str | None
    event_id: str | None
    triggered_at: datetime | None
    headers: Mapping[str, str]


class WebhookRejected(Exception):
    """Raised when a webhook request fails verification; ``status_code`` is the
    HTTP status to respond with (401 for a bad signature, 400 for a missing header)."""

    def __init__(self, reason: str, status_code: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


@dataclass(frozen=True)
class OrderReference:
    """The channel's key of an order and the number shown to people ("#1001").

    ``carries_order`` is false for a message about an order that is not the order
    itself, such as a refund.
    """

    order_id: str
    order_number: str | None = None
    carries_order: bool = True


@dataclass(frozen=True)
class ChannelMessage:
    """What a stored webhook means to the hub.

    ``kind`` is ``order`` for a new or changed order (a cancelled one included),
    ``refund`` for a refund to record on its order, and ``ignored`` for a topic the
    hub does not act on. ``note`` tells operators what the message carried.
    """

    kind: Literal["order", "refund", "ignored"]
    channel_order_id: str | None
    order: SalesOrder | None = None
    note: str | None = None


class ChannelSpoke(Protocol):
    """A sales channel that sends webhooks."""

    def verify(self, headers: Mapping[str, str], body: bytes) -> WebhookEnvelope:
        """Check the request's signature; raise `WebhookRejected` if it fails."""
        ...

    def interpret(self, topic: str, account: str, body: bytes) -> ChannelMessage:
        """Map a stored body; raise `InvalidInputError` naming each bad field."""
        ...

    def order_reference(self, topic: str, body: bytes) -> OrderReference | None:
        """Return the order's id and number if the body has readable ones, even when
        the body is otherwise invalid."""
        ...


RequestGate = Callable[[], Awaitable[None]]
"""Awaited by an ERP spoke before each request it sends. It waits for the target's
rate budget, and raises when the target is closed (maintenance, throttled, circuit
open), so that no request of a delivery leaves outside the budget."""

ErpSpokeFactory = Callable[[str, "TargetSettings", RequestGate, "Database"], ErpSpoke]
ChannelSpokeFactory = Callable[["Settings"], ChannelSpoke]

ERP_SPOKE_KINDS: dict[str, str] = {
    "netsuite": "entrepot.spokes.netsuite:create_spoke",
    "tryton": "entrepot.spokes.tryton:create_spoke",
}

CHANNEL_SPOKES: dict[str, str] = {
    "shopify": "entrepot.spokes.shopify.channel:create_channel",
}


def load_channel_spokes(settings: Settings) -> dict[str, ChannelSpoke]:
    """Build every registered channel spoke, keyed by the channel name in URLs."""
    return {name: _import(path)(settings) for name, path in CHANNEL_SPOKES.items()}


def load_erp_spoke(
    name: str, settings: TargetSettings, gate: RequestGate, database: Database
) -> ErpSpoke:
    """Build the ERP spoke for target ``name`` from its configured ``kind``; the spoke
    may keep links to the target's objects in ``database``."""
    path = ERP_SPOKE_KINDS.get(settings.kind, settings.kind)
    if ":" not in path:
        known = ", ".join(sorted(ERP_SPOKE_KINDS))
        raise ValueError(
            f"unknown kind {settings.kind!r} for target {name!r}; "
            f"use one of {known} or a 'module:factory' path"
        )
    factory: ErpSpokeFactory = _import(path)
    return factory(name, settings, gate, database)


def _import(path: str) -> Any:
    module_name, attribute = path.split(":", 1)
    return getattr(importlib.import_module(module_name), attribute)
