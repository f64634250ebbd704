"""The demo's story: which webhooks are sent, in what order, and what must happen."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ACME = "acme-fasteners.myshopify.com"
NORDWERK = "nordwerk-eu.myshopify.com"
DEFAULT_SHOP = "demo-store.myshopify.com"

# SKUs of the example orders that the demo's ERP does not carry.
UNKNOWN_TO_ERP = frozenset({"ACME-DRILL-6"})


@dataclass(frozen=True)
class Webhook:
    """One webhook to sign and send. ``patch`` changes fields of the body first."""

    topic: str
    body: dict[str, Any]
    shop: str
    webhook_id: str
    event_id: str
    patch: dict[str, Any] = field(default_factory=dict)
    repeat: bool = False

    def payload(self) -> bytes:
        return json.dumps({**self.body, **self.patch}).encode()


@dataclass(frozen=True)
class Outage:
    """An ERP outage: every request gets 503 for ``seconds``, as in a maintenance window."""

    seconds: float


@dataclass(frozen=True)
class WaitForState:
    """Wait until an order reaches ``state`` before sending more."""

    order_id: str
    state: str


Step = Webhook | Outage | WaitForState


@dataclass(frozen=True)
class Expected:
    """The state the demo expects of one order at the end."""

    order_id: str
    state: str
    reason_contains: str | None = None


@dataclass
class Story:
    steps: list[Step]
    expected: list[Expected]
    erp_items: set[str]
    duplicates: int


def built_in_story() -> Story:
    """Build the story on the project's example orders."""
    orders = {
        name: _load_example(name)
        for name in (
            "order-1001",
            "order-1002",
            "order-1003",
            "order-1004",
            "order-1005",
            "order-1006",
        )
    }
    invalid = _load_example("order-1099-missing-sku", folder="invalid")
    create = WebhookMaker()
    steps: list[Step] = [
        create("orders/create", orders["order-1001"], ACME),
        create("orders/create", orders["order-1002"], ACME),
        create("orders/create", orders["order-1002"], ACME, repeat_of=-1),
        create("orders/create", invalid, ACME),
        create("orders/create", orders["order-1006"], ACME),
        WaitForState(str(orders["order-1006"]["id"]), "accepted"),
        Outage(seconds=4.0),
        create("orders/create", orders["order-1003"], ACME),
        create("orders/create", orders["order-1004"], NORDWERK),
        create("orders/create", orders["order-1005"], ACME),
        create(
            "orders/updated",
            orders["order-1001"],
            ACME,
            patch={"updated_at": "2025-03-03T11:30:00-08:00", "note": "Deliver to dock 4"},
        ),
        create(
            "orders/cancelled",
            orders["order-1006"],
            ACME,
            patch={
                "updated_at": "2025-03-17T09:15:00-07:00",
                "cancelled_at": "2025-03-17T09:15:00-07:00",
                "cancel_reason": "customer",
            },
        ),
    ]
    expected = [
        Expected(str(orders["order-1001"]["id"]), "accepted"),
        Expected(str(orders["order-1002"]["id"]), "accepted"),
        Expected(str(orders["order-1003"]["id"]), "rejected", "ACME-DRILL-6"),
        Expected(str(orders["order-1004"]["id"]), "accepted"),
        Expected(str(orders["order-1005"]["id"]), "accepted"),
        Expected(str(orders["order-1006"]["id"]), "cancelled"),
        Expected(str(invalid["id"]), "rejected", "line_items[0].sku: missing"),
    ]
    items = {sku for body in orders.values() for sku in _skus(body)} - UNKNOWN_TO_ERP
    return Story(steps, expected, items, duplicates=1)


def story_from_folder(folder: Path) -> Story:
    """Build the same story on the orders in ``folder``, expecting every order to post."""
    bodies = [_read_order(path) for path in sorted(folder.glob("*.json"))]
    if not bodies:
        raise FileNotFoundError(f"no *.json order files in {folder}")
    create = WebhookMaker()
    steps: list[Step] = []
    half = len(bodies) // 2
    for index, body in enumerate(bodies):
        if index == half and len(bodies) > 1:
            steps.append(Outage(seconds=4.0))
        steps.append(create("orders/create", body, _shop_of(body)))
        if index == 0:
            steps.append(create("orders/create", body, _shop_of(body), repeat_of=-1))
    expected = [Expected(str(body.get("id")), "accepted") for body in bodies]
    items = {sku for body in bodies for sku in _skus(body)}
    return Story(steps, expected, items, duplicates=1)


class WebhookMaker:
    """Make webhooks with fresh ids, or with the ids of an earlier one to repeat it."""

    def __init__(self) -> None:
        self.made: list[Webhook] = []

    def __call__(
        self,
        topic: str,
        body: dict[str, Any],
        shop: str,
        *,
        patch: dict[str, Any] | None = None,
        repeat_of: int | None = None,
    ) -> Webhook:
        if repeat_of is not None:
            first = self.made[repeat_of]
            webhook = Webhook(
                topic, body, shop, first.webhook_id, first.event_id, first.patch, repeat=True
            )
        else:
            number = len(self.made) + 1
            webhook = Webhook(
                topic,
                body,
                shop,
                f"demo-webhook-{number:04d}",
                f"demo-event-{number:04d}",
                patch or {},
            )
        self.made.append(webhook)
        return webhook


def _load_example(name: str, folder: str = "orders") -> dict[str, Any]:
    text = resources.files("entrepot.demo").joinpath(folder, f"{name}.json").read_text()
    body: dict[str, Any] = json.loads(text)
    return body


def _read_order(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path} as JSON: {exc}") from exc
    if isinstance(body, dict) and isinstance(body.get("order"), dict):
        body = body["order"]
    if not isinstance(body, dict):
        raise ValueError(f"{path} does not hold a Shopify order object")
    return body


def _shop_of(body: dict[str, Any]) -> str:
    host = urlparse(str(body.get("order_status_url") or "")).hostname or ""
    return host if host.endswith(".myshopify.com") else DEFAULT_SHOP


def _skus(body: dict[str, Any]) -> set[str]:
    lines = body.get("line_items")
    return {str(line["sku"]) for line in lines or [] if isinstance(line, dict) and line.get("sku")}
