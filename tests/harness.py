"""Shared helpers of the tests: signed webhooks, order bodies, a hub in this process,
and the ERP simulator in a child process."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from entrepot.api.app import create_app
from entrepot.config import Settings, load_settings
from entrepot.demo.processes import ChildProcess, free_port
from entrepot.runtime import Runtime
from entrepot.spokes.shopify.webhooks import sign

SECRET = "test-app-secret"
SHOP = "acme-fasteners.myshopify.com"
ROOT = Path(__file__).resolve().parents[1]
SHARED_SAMPLES = (ROOT / ".." / "shared" / "samples").resolve()


def example_order(name: str = "order-1001") -> dict[str, Any]:
    """Return a fresh copy of one of the project's example Shopify orders."""
    text = resources.files("entrepot.demo").joinpath("orders", f"{name}.json").read_text()
    body: dict[str, Any] = json.loads(text)
    return body


def order_body(
    order_id: int,
    *,
    updated_at: str = "2025-03-03T09:14:07-08:00",
    base: str = "order-1001",
    **changes: Any,
) -> dict[str, Any]:
    """Return an example order with its own id and number, and ``changes`` applied."""
    body = copy.deepcopy(example_order(base))
    body["id"] = order_id
    body["name"] = f"#{order_id}"
    body["order_number"] = order_id
    body["updated_at"] = updated_at
    body.update(changes)
    return body


def webhook_headers(
    body: bytes,
    *,
    topic: str = "orders/create",
    shop: str = SHOP,
    webhook_id: str | None = None,
    event_id: str | None = None,
    secret: str = SECRET,
) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Hmac-Sha256": sign(body, secret),
        "X-Shopify-API-Version": "2024-04",
    }
    if webhook_id is not None:
        headers["X-Shopify-Webhook-Id"] = webhook_id
    if event_id is not None:
        headers["X-Shopify-Event-Id"] = event_id
    return headers


# A target and workers tuned for tests: short backoff and polling, no circuit breaking.
TEST_TARGET = {
    "requests_per_second": 50,
    "max_concurrency": 4,
    "timeout_seconds": 5,
    "max_attempts": 8,
    "backoff_initial_seconds": 0.05,
    "backoff_max_seconds": 0.5,
    "circuit_failure_threshold": 1000,
}
TEST_WORKERS = {"poll_interval_seconds": 0.05, "lease_seconds": 5}


def hub_settings(
    data_dir: Path,
    erp_url: str,
    *,
    store_url: str = "",
    workers: dict[str, Any] | None = None,
    **targets: Any,
) -> Settings:
    """Settings for a hub posting to the simulator at ``erp_url``.

    The store is ``store_url`` (the [store] url setting), or SQLite in ``data_dir``.
    ``workers`` overrides settings of TEST_WORKERS.
    """
    target = {**TEST_TARGET, "base_url": erp_url, **targets}
    return load_settings(
        shopify={"webhook_secret": SECRET},
        store={"data_dir": data_dir, "url": store_url},
        targets={"erp": target},
        workers={**TEST_WORKERS, **(workers or {})},
    )


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], within: float = 30.0, message: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{message} not reached within {within} s")


@dataclass
class Hub:
    """A hub running in this process: its runtime, and a client for its HTTP API."""

    runtime: Runtime
    client: httpx.AsyncClient

    async def post_webhook(
        self, body: dict[str, Any] | bytes, **header_options: Any
    ) -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post(
            "/webhooks/shopify", content=raw, headers=webhook_headers(raw, **header_options)
        )

    async def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = (await self.client.get("/api/summary")).json()
        return result

    async def order(self, key: str) -> dict[str, Any]:
        response = await self.client.get(f"/api/orders/{key}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def state_of(self, key: str) -> str | None:
        """Return the order's lifecycle state, or None while no order has that key."""
        response = await self.client.get(f"/api/orders/{key}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        state: str = response.json()["state"]
        return state

    async def drained(self) -> bool:
        summary = await self.summary()
        receipts = summary["receipts"]
        return (
            receipts.get("received", 0) + receipts.get("processing", 0) == 0
            and summary["open_deliveries"] == 0
        )

    async def wait_drained(self, within: float = 60.0) -> None:
        await wait_until(self.drained, within, "queue drained")


@asynccontextmanager
async def running_hub(
    settings: Settings, *, workers: bool = True, raise_app_exceptions: bool = True
) -> AsyncIterator[Hub]:
    """Run a hub's workers in this event loop, with its API over an in-memory transport.

    With ``raise_app_exceptions`` false, an error in a handler becomes a 500 response,
    as a real server sends, instead of an exception in the test.
    """
    runtime = Runtime(settings)
    stopping = asyncio.Event()
    task = None
    if workers:
        runtime.build_workers()
        task = asyncio.create_task(runtime.run_workers(stopping))
    transport = httpx.ASGITransport(
        app=create_app(runtime), raise_app_exceptions=raise_app_exceptions
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        try:
            yield Hub(runtime, client)
        finally:
            stopping.set()
            if task is not None:
                await task
            runtime.close()


class ErpSim:
    """The ERP simulator in a child process, and its admin API."""

    def __init__(self, data_dir: Path, **options: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["erp-sim", "--port", str(self.port), "--data-dir", str(data_dir)]
        for name, value in options.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        self.process = ChildProcess("ERP simulator", args, data_dir / "erp-sim.log")
        self.process.wait_until_healthy(f"{self.url}/_sim/health")
        self.admin = httpx.Client(base_url=self.url, timeout=10)

    def add_items(self, *skus: str) -> None:
        items = [{"sku": sku, "name": sku} for sku in skus]
        self.admin.post("/_sim/items", json={"items": items}).raise_for_status()

    def fault(self, **fault: Any) -> None:
        self.admin.post("/_sim/faults", json=fault).raise_for_status()

    def orders(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.admin.get("/_sim/orders").json()["orders"]
        return result

    def customers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.admin.get("/_sim/customers").json()["customers"]
        return result

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.admin.get("/_sim/requests").json()["requests"]
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.admin.get("/_sim/stats").json()
        return result

    def close(self) -> None:
        self.admin.close()
        self.process.stop()


EXAMPLE_SKUS = (
    "ACME-BOLT-M8",
    "ACME-NUT-M8",
    "ACME-WASHER-M8",
    "ACME-ANCHOR-10",
    "ACME-DRILL-6",
    "NORD-SCREW-4X40",
    "NORD-DOWEL-8",
    "ACME-TOOLBOX-L",
    "ACME-BOLT-M10",
)


def write_config(
    path: Path, erp_url: str, *, store_url: str = "", **sections: dict[str, Any]
) -> Path:
    """Write a TOML configuration for a hub process posting to ``erp_url``, with its
    store at ``store_url`` or, by default, in the process's data folder."""
    target = {**TEST_TARGET, "base_url": erp_url, **sections.pop("target", {})}
    workers = {**TEST_WORKERS, **sections.pop("workers", {})}
    lines = ["[shopify]", f'webhook_secret = "{SECRET}"', ""]
    if store_url:
        lines += ["[store]", f"url = {_toml_value(store_url)}", ""]
    lines += ["[targets.erp]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in target.items()]
    lines += ["", "[workers]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in workers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return str(value)


class HubProcess:
    """``entrepot run`` (or ``entrepot worker``) in a child process."""

    def __init__(
        self, data_dir: Path, config: Path, *, command: str = "run", log_name: str = "hub.log"
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [command, "--config", str(config), "--data-dir", str(data_dir)]
        if command == "run":
            args += ["--port", str(self.port)]
        self.process = ChildProcess(f"entrepot {command}", args, data_dir / log_name)
        if command == "run":
            self.process.wait_until_healthy(f"{self.url}/healthz")

    def post_webhook(self, body: dict[str, Any], **header_options: Any) -> httpx.Response:
        raw = json.dumps(body).encode()
        return httpx.post(
            f"{self.url}/webhooks/shopify",
            content=raw,
            headers=webhook_headers(raw, **header_options),
            timeout=10,
        )

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> None:
        self.process.stop()
