"""Run the demo: start an ERP and a hub, replay the story, report.

The ERP is the ERP simulator, or a real Tryton with a Shopify shop simulator beside
it. All run on free loopback ports, with their data in a temporary folder (or
``--data-dir``), so the demo leaves nothing behind.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from entrepot.demo.erps import DemoErp, demo_erp
from entrepot.demo.processes import ChildProcess, free_port
from entrepot.demo.report import OrderOutcome, print_report
from entrepot.demo.story import (
    ACME,
    NORDWERK,
    UNKNOWN_TO_ERP,
    Outage,
    WaitForState,
    Webhook,
    built_in_story,
    story_from_folder,
)
from entrepot.spokes.shopify.webhooks import sign

DRAIN_TIMEOUT_SECONDS = 120.0


@dataclass
class DemoEnvironment:
    hub_url: str
    erp: DemoErp
    app_secret: str
    shop_secrets: dict[str, str]


def run_demo(
    *,
    orders_dir: Path | None,
    as_json: bool,
    data_dir: Path | None,
    console: Console,
    erp_kind: str = "simulator",
) -> bool:
    """Run the story and print what happened; returns whether it went as expected."""
    story = story_from_folder(orders_dir) if orders_dir else built_in_story()
    if data_dir is not None and data_dir.exists() and any(data_dir.iterdir()):
        raise ValueError(f"--data-dir {data_dir} is not empty; the demo needs a fresh folder")
    erp = demo_erp(erp_kind)
    with ExitStack() as stack:
        folder = data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        environment = _start(folder, stack, erp, console, quiet=as_json, kept=data_dir is not None)
        unknown = UNKNOWN_TO_ERP if orders_dir is None else frozenset()
        erp.carry(story, unknown)
        with httpx.Client(timeout=10.0) as client:
            started = time.monotonic()
            for step in story.steps:
                _play(client, environment, step, console, quiet=as_json)
            _wait_until_drained(client, environment.hub_url)
            drain_seconds = time.monotonic() - started
            outcomes = [_outcome(client, environment.hub_url, item) for item in story.expected]
            summary = client.get(f"{environment.hub_url}/api/summary").json()
            finale = erp.finale(environment.hub_url, client)
    passed = all(outcome.as_expected for outcome in outcomes)
    passed = passed and summary["duplicates_ignored"] == story.duplicates
    passed = passed and (finale is None or finale.as_expected)
    if as_json:
        print(json.dumps([outcome.as_dict() for outcome in outcomes], indent=2))
    else:
        print_report(console, outcomes, summary, story, drain_seconds)
        for line in finale.lines if finale else []:
            console.print(line)
    return passed


def _start(
    folder: Path, stack: ExitStack, erp: DemoErp, console: Console, *, quiet: bool, kept: bool
) -> DemoEnvironment:
    hub_port = free_port()
    environment = DemoEnvironment(
        hub_url=f"http://127.0.0.1:{hub_port}",
        erp=erp,
        app_secret=secrets.token_hex(16),
        shop_secrets={NORDWERK: secrets.token_hex(16)},
    )
    erp_url = erp.start(folder, stack)
    config = _write_config(folder, environment)
    hub = ChildProcess(
        "hub",
        [
            "run",
            "--config",
            str(config),
            "--port",
            str(hub_port),
            "--data-dir",
            str(folder / "hub"),
        ],
        folder / "hub.log",
    )
    stack.callback(hub.stop)
    hub.wait_until_healthy(f"{environment.hub_url}/healthz")
    if not quiet:
        console.print(
            f"Hub at {environment.hub_url}, {erp.name} at {erp_url}, data in {folder}"
            + ("" if kept else " (removed at exit; --data-dir keeps it)")
        )
    return environment


def _write_config(folder: Path, environment: DemoEnvironment) -> Path:
    lines = [
        "[shopify]",
        f'webhook_secret = "{environment.app_secret}"',
        "pull_interval_seconds = 3600",
        "",
        *environment.erp.config_lines(),
        "",
        "[workers]",
        "poll_interval_seconds = 0.2",
    ]
    shop_lines = getattr(environment.erp, "shop_lines", None)
    if shop_lines is not None:
        lines += ["", f'[shopify.shops."{ACME}"]', *shop_lines()]
    for shop, secret in environment.shop_secrets.items():
        lines += ["", f'[shopify.shops."{shop}"]', f'webhook_secret = "{secret}"']
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "entrepot.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _play(
    client: httpx.Client,
    environment: DemoEnvironment,
    step: object,
    console: Console,
    *,
    quiet: bool,
) -> None:
    if isinstance(step, Webhook):
        if not quiet:
            again = " (the same delivery again)" if step.repeat else ""
            console.print(
                f"Sending {step.topic} {step.body.get('name', '')} from {step.shop}{again}."
            )
        _send(client, environment, step)
    elif isinstance(step, Outage):
        described = environment.erp.outage(step.seconds)
        if not quiet:
            console.print(described)
    elif isinstance(step, WaitForState):
        _wait_for_state(client, environment.hub_url, step)


def _send(client: httpx.Client, environment: DemoEnvironment, webhook: Webhook) -> None:
    body = webhook.payload()
    secret = environment.shop_secrets.get(webhook.shop, environment.app_secret)
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": webhook.topic,
        "X-Shopify-Shop-Domain": webhook.shop,
        "X-Shopify-Webhook-Id": webhook.webhook_id,
        "X-Shopify-Event-Id": webhook.event_id,
        "X-Shopify-API-Version": "2024-04",
        "X-Shopify-Hmac-Sha256": sign(body, secret),
    }
    response = client.post(
        f"{environment.hub_url}/webhooks/shopify", content=body, headers=headers
    )
    response.raise_for_status()


def _wait_for_state(client: httpx.Client, hub_url: str, step: WaitForState) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        response = client.get(f"{hub_url}/api/orders/{step.order_id}")
        if response.status_code == 200 and response.json().get("state") == step.state:
            return
        time.sleep(0.1)
    raise RuntimeError(f"order {step.order_id} did not reach {step.state}")


def _wait_until_drained(client: httpx.Client, hub_url: str) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        summary = client.get(f"{hub_url}/api/summary").json()
        waiting = summary["receipts"].get("received", 0) + summary["receipts"].get("processing", 0)
        if waiting == 0 and summary["open_deliveries"] == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the queue did not drain within {DRAIN_TIMEOUT_SECONDS} s")


def _outcome(client: httpx.Client, hub_url: str, expected: Any) -> OrderOutcome:
    response = client.get(f"{hub_url}/api/orders/{expected.order_id}")
    view: dict[str, Any] = response.json() if response.status_code == 200 else {}
    return OrderOutcome.from_view(expected, view)
