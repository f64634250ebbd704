"""The ERPs the demo can post to: the ERP simulator, or a real Tryton on this machine.

Each starts on a free loopback port with its data in the demo's folder, writes its
target's settings, carries the story's items, and can have an outage. Tryton also
ships an order at the end, so the fulfillment can be seen reaching the shop.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from entrepot.demo.processes import ChildProcess, free_port
from entrepot.demo.story import ACME, Story, Webhook

FINALE_TIMEOUT_SECONDS = 60.0
DEMO_TRACKING_NUMBER = "1Z999AA10123456784"


@dataclass(frozen=True)
class Finale:
    """What the demo did after the story, and whether it went as expected."""

    lines: list[str]
    as_expected: bool


class DemoErp(Protocol):
    name: str

    def start(self, folder: Path, stack: ExitStack) -> str:
        """Start the ERP; return its base URL."""
        ...

    def config_lines(self) -> list[str]:
        """TOML lines of the demo's settings for this ERP, its target included."""
        ...

    def carry(self, story: Story, unknown: frozenset[str]) -> None:
        """Make the ERP carry the story's items, except the ``unknown`` SKUs."""
        ...

    def outage(self, seconds: float) -> str:
        """Start an outage of ``seconds``; return how to describe it."""
        ...

    def finale(self, hub_url: str, client: httpx.Client) -> Finale | None:
        """Do what comes after the story, if anything."""
        ...


class SimulatorErp:
    """The NetSuite-style ERP simulator in a child process."""

    name = "ERP simulator"

    def __init__(self) -> None:
        self.url = ""

    def start(self, folder: Path, stack: ExitStack) -> str:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        args = ["erp-sim", "--port", str(port), "--data-dir", str(folder / "erp")]
        erp = ChildProcess(self.name, [*args, "--concurrency", "4"], folder / "erp-sim.log")
        stack.callback(erp.stop)
        erp.wait_until_healthy(f"{self.url}/_sim/health")
        return self.url

    def config_lines(self) -> list[str]:
        return [
            "[targets.erp]",
            'kind = "netsuite"',
            f'base_url = "{self.url}"',
            *_DEMO_BUDGET,
        ]

    def carry(self, story: Story, unknown: frozenset[str]) -> None:
        items = [{"sku": sku, "name": sku} for sku in sorted(story.erp_items - unknown)]
        httpx.post(f"{self.url}/_sim/items", json={"items": items}).raise_for_status()

    def outage(self, seconds: float) -> str:
        fault = {"kind": "unavailable", "seconds": seconds, "retry_after": 1}
        httpx.post(f"{self.url}/_sim/faults", json=fault).raise_for_status()
        return f"ERP outage: 503 for {seconds:g} s."

    def finale(self, hub_url: str, client: httpx.Client) -> Finale | None:
        return None


class TrytonErp:
    """A Tryton server on a copy of the seeded template, and a Shopify shop simulator
    that the fulfillments go back to."""

    name = "Tryton"

    def __init__(self) -> None:
        from entrepot.spokes.tryton.server import TrytonServer

        self.server: TrytonServer | None = None
        self.shop_url = ""
        self.token = secrets.token_hex(12)
        self.shipped_order: str | None = None

    def start(self, folder: Path, stack: ExitStack) -> str:
        from entrepot.spokes.tryton.server import TrytonServer
        from entrepot.spokes.tryton.template import copy_database, ensure_template

        template = ensure_template()
        copy_database(template, folder / "tryton", "entrepot")
        self.server = TrytonServer(folder / "tryton", "entrepot")
        self.server.start()
        stack.callback(self.server.stop)

        port = free_port()
        self.shop_url = f"http://127.0.0.1:{port}"
        args = ["shopify-sim", "--port", str(port), "--access-token", self.token]
        shop = ChildProcess("Shopify simulator", [*args, "--shop", ACME], folder / "shop.log")
        stack.callback(shop.stop)
        shop.wait_until_healthy(f"{self.shop_url}/_sim/health")
        return self.server.url

    def config_lines(self) -> list[str]:
        assert self.server is not None
        return [
            "[targets.erp]",
            'kind = "tryton"',
            f'base_url = "{self.server.url}"',
            *_DEMO_BUDGET,
            "batch_size = 10",
            "",
            "[targets.erp.tryton]",
            f'database = "{self.server.database}"',
            "poll_interval_seconds = 1",
            "poll_overlap_seconds = 5",
        ]

    def shop_lines(self) -> list[str]:
        return [
            f'admin_url = "{self.shop_url}/shops/{ACME}"',
            f'access_token = "{self.token}"',
        ]

    def carry(self, story: Story, unknown: frozenset[str]) -> None:
        """Load the shop's orders as they end the story, and stop Tryton selling the
        ``unknown`` SKUs."""
        final: dict[Any, dict[str, Any]] = {}
        for step in story.steps:
            if isinstance(step, Webhook) and step.shop == ACME:
                final[step.body["id"]] = {**step.body, **step.patch}
        orders = {"orders": list(final.values())}
        httpx.post(f"{self.shop_url}/_sim/shops/{ACME}/orders", json=orders).raise_for_status()
        asyncio.run(self._stop_selling(unknown))
        first = next(iter(final), None)
        self.shipped_order = str(first) if first is not None else None

    def outage(self, seconds: float) -> str:
        server = self.server
        assert server is not None
        server.stop()
        threading.Timer(seconds, server.start).start()
        return f"ERP outage: Tryton stopped for {seconds:g} s."

    def finale(self, hub_url: str, client: httpx.Client) -> Finale | None:
        """Ship the first order in Tryton and wait for its fulfillment in the shop."""
        if self.shipped_order is None:
            return None
        view = client.get(f"{hub_url}/api/orders/{self.shipped_order}").json()
        if not view.get("erp_id"):
            return Finale([f"Order {self.shipped_order} never reached Tryton."], False)
        started = time.monotonic()
        asyncio.run(self._ship(int(view["erp_id"])))
        fulfillment = self._wait_for_fulfillment(client)
        state = client.get(f"{hub_url}/api/orders/{self.shipped_order}").json()["state"]
        name = view.get("order_number") or self.shipped_order
        if fulfillment is None:
            return Finale([f"Shipped {name} in Tryton; no fulfillment reached the shop."], False)
        seconds = time.monotonic() - started
        lines = [
            f"Shipped {name} in Tryton (sale {view['erp_id']}) with tracking number "
            f"{DEMO_TRACKING_NUMBER}.",
            f"Fulfillment {fulfillment['id']} reached the shop after {seconds:.1f} s; "
            f"{name} is now {state} in entrepot.",
        ]
        return Finale(lines, fulfillment["tracking_number"] == DEMO_TRACKING_NUMBER)

    def _wait_for_fulfillment(self, client: httpx.Client) -> dict[str, Any] | None:
        deadline = time.monotonic() + FINALE_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            found = client.get(f"{self.shop_url}/_sim/shops/{ACME}/fulfillments").json()
            if found["fulfillments"]:
                fulfillment: dict[str, Any] = found["fulfillments"][0]
                return fulfillment
            time.sleep(0.2)
        return None

    async def _stop_selling(self, skus: frozenset[str]) -> None:
        async with self._rpc() as rpc:
            rows = await rpc.model(
                "product.product",
                "search_read",
                [["code", "in", sorted(skus)]],
                0,
                None,
                None,
                ["template"],
            )
            templates = [row["template"] for row in rows]
            if templates:
                await rpc.model("product.template", "write", templates, {"salable": False})

    async def _ship(self, sale_id: int) -> None:
        from entrepot.spokes.tryton.warehouse import ship_sale

        async with self._rpc() as rpc:
            await ship_sale(rpc, sale_id, DEMO_TRACKING_NUMBER)

    def _rpc(self) -> Any:
        from contextlib import asynccontextmanager

        from entrepot.spokes.tryton.rpc import TrytonRpc

        server = self.server
        assert server is not None

        @asynccontextmanager
        async def session() -> Any:
            rpc = TrytonRpc(server.url, server.database, server.username, server.password)
            try:
                yield rpc
            finally:
                await rpc.aclose()

        return session()


_DEMO_BUDGET = [
    "requests_per_second = 20",
    "max_concurrency = 4",
    "timeout_seconds = 5",
    "max_attempts = 10",
    "backoff_initial_seconds = 0.3",
    "backoff_max_seconds = 2",
    "circuit_failure_threshold = 50",
]


def demo_erp(kind: str) -> SimulatorErp | TrytonErp:
    if kind == "simulator":
        return SimulatorErp()
    if kind == "tryton":
        return TrytonErp()
    raise ValueError(f"unknown ERP {kind!r}; use simulator or tryton")
