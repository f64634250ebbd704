"""Intake benchmark: signed Shopify webhooks acknowledged per second by ``entrepot run``.

The hub runs as a child process on a loopback port with its own data folder. Its
delivery target is a loopback port that nothing listens on, and the target is in a
maintenance window for the whole run, so the delivery worker sends nothing and only
polls. The intake worker runs as in production and maps the receipts while they
arrive, so it competes with the acknowledgements for the processor and for SQLite's
write lock. A second server, the same HTTP API without any workers, shows that cost.

The baseline is bare SQLite: one thread committing rows of the same size, one
transaction per row, into a fresh file with the hub's settings (WAL,
``synchronous=FULL``, ``BEGIN IMMEDIATE``). It is measured before and after the
servers, and ratios are taken against the mean of the two.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from tests.harness import SHOP, HubProcess, order_body, webhook_headers, write_config

from bench.common import (
    ALWAYS_CLOSED_WINDOW,
    LOOPBACK,
    MachineCpu,
    Row,
    mean,
    percentile,
    process_cpu_seconds,
    repository_root,
)
from bench.loadgen import Connection, HttpResponse, ProtocolError
from entrepot.demo.processes import ChildProcess, free_port
from entrepot.spokes.protocols import WebhookEnvelope
from entrepot.spokes.shopify.webhooks import KEPT_HEADERS
from entrepot.store.database import Database, sqlite_url
from entrepot.store.migrate import upgrade_to_head
from entrepot.store.receipts import store_receipt
from entrepot.store.types import utc_now

BENCHMARK = "intake"
# The example order with three lines: about 3.5 KB of JSON.
BASE_ORDER = "order-1002"
TOPIC = "orders/create"
UNKNOWN_CHANNEL_PATH = "/webhooks/bench-unknown-channel"
WEBHOOK_PATH = "/webhooks/shopify"
REQUEST_TIMEOUT_SECONDS = 30.0
# The load generators: asyncio streams (bench.loadgen) or httpx.
CLIENTS = ("asyncio", "httpx")
# Seconds to wait for the intake worker to map the warm-up webhooks.
WARMUP_SETTLE_SECONDS = 60.0


@dataclass(frozen=True)
class IntakeOptions:
    """Sizes of one intake benchmark run."""

    webhooks: int
    connections: int
    warmup: int
    baseline_commits: int
    client: str = "asyncio"

    @property
    def floor_requests(self) -> int:
        return max(self.webhooks // 2, 1)


FULL = IntakeOptions(webhooks=5000, connections=16, warmup=200, baseline_commits=3000)
QUICK = IntakeOptions(webhooks=600, connections=16, warmup=50, baseline_commits=1000)


@dataclass(frozen=True)
class Webhook:
    """A signed webhook request, built before any timing starts."""

    webhook_id: str
    event_id: str
    body: bytes
    headers: dict[str, str]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    def kept_headers(self) -> dict[str, str]:
        """Return the headers that the Shopify spoke stores with the body."""
        lowered = {name.lower(): value for name, value in self.headers.items()}
        return {name: lowered[name] for name in KEPT_HEADERS if name in lowered}


@dataclass
class LoadResult:
    """Statuses, errors, latencies and CPU times of one load generator run, in seconds."""

    seconds: float = 0.0
    latencies: dict[str, float] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    server_cpu_seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    other_cpu: Row | None = None
    connections: int = 0

    @property
    def requests_per_second(self) -> float:
        return sum(self.statuses.values()) / self.seconds

    @property
    def acked_per_second(self) -> float:
        return len(self.latencies) / self.seconds


@dataclass(frozen=True)
class ServerResult:
    """A measured server run, and how many acknowledged bodies its database holds."""

    load: LoadResult
    stored: int
    stored_matching: int
    floor: LoadResult | None


def build_webhooks(prefix: str, count: int, first_order_id: int) -> list[Webhook]:
    """Build ``count`` signed orders/create webhooks with distinct ids and order numbers."""
    webhooks = []
    for n in range(count):
        body = json.dumps(order_body(first_order_id + n, base=BASE_ORDER)).encode()
        webhook_id = f"{prefix}-{n}"
        event_id = f"{prefix}-event-{n}"
        headers = webhook_headers(body, topic=TOPIC, webhook_id=webhook_id, event_id=event_id)
        webhooks.append(Webhook(webhook_id, event_id, body, headers))
    return webhooks


def receipt_row(webhook: Webhook) -> tuple[Any, ...]:
    """Return the values that the hub stores for ``webhook`` in a new receipt row."""
    return (
        str(uuid.uuid4()),
        "shopify",
        SHOP,
        TOPIC,
        webhook.webhook_id,
        webhook.event_id,
        json.dumps(webhook.kept_headers()),
        webhook.body,
        utc_now().isoformat(),
        "received",
    )


def row_size(row: Sequence[Any]) -> int:
    """Return the bytes of a row's text and blob values, without SQLite's record header."""
    return sum(len(value.encode() if isinstance(value, str) else value) for value in row)


def measure_commit_rate(path: Path, webhooks: Sequence[Webhook], count: int) -> float:
    """Commit ``count`` receipt-sized rows, one transaction each, and return commits/s."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(
            "CREATE TABLE receipts (id INTEGER PRIMARY KEY, correlation_id TEXT, "
            "channel TEXT, account TEXT, topic TEXT, webhook_id TEXT, event_id TEXT, "
            "headers TEXT, body BLOB, received_at TEXT, status TEXT)"
        )
        rows = [receipt_row(webhook) for webhook in webhooks]
        insert = (
            "INSERT INTO receipts (correlation_id, channel, account, topic, webhook_id, "
            "event_id, headers, body, received_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        started = time.perf_counter()
        for n in range(count):
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(insert, rows[n % len(rows)])
            connection.execute("COMMIT")
        elapsed = time.perf_counter() - started
    finally:
        connection.close()
    return count / elapsed


def measure_store_receipt_rate(path: Path, webhooks: Sequence[Webhook]) -> float:
    """Call ``store_receipt`` for each webhook from one thread, and return receipts/s."""
    database = Database(sqlite_url(path))
    try:
        upgrade_to_head(database)
        envelopes = [
            WebhookEnvelope(
                channel="shopify",
                account=SHOP,
                topic=TOPIC,
                webhook_id=webhook.webhook_id,
                event_id=webhook.event_id,
                triggered_at=None,
                headers=webhook.kept_headers(),
            )
            for webhook in webhooks
        ]
        started = time.perf_counter()
        for envelope, webhook in zip(envelopes, webhooks, strict=True):
            store_receipt(database, envelope, webhook.body)
        elapsed = time.perf_counter() - started
    finally:
        database.dispose()
    return len(webhooks) / elapsed


async def post_all(
    senders: Sequence[Sender], path: str, webhooks: Sequence[Webhook]
) -> LoadResult:
    """POST every webhook to ``path``, one request in flight per sender.

    A webhook counts as acknowledged when the response is 200 and not a duplicate.
    Its latency runs from just before the request is written to the whole response.
    """
    result = LoadResult(connections=len(senders))
    pending = iter(webhooks)

    async def send_from_queue(sender: Sender) -> None:
        for webhook in pending:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                    response = await sender.post(path, webhook.body, webhook.headers)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ProtocolError) as exc:
                result.errors[type(exc).__name__] += 1
                await sender.close()
                continue
            except httpx.HTTPError as exc:
                result.errors[type(exc).__name__] += 1
                continue
            result.statuses[response.status] += 1
            if response.status == 200 and not json.loads(response.body)["duplicate"]:
                result.latencies[webhook.webhook_id] = time.perf_counter() - started

    started = time.perf_counter()
    await asyncio.gather(*(send_from_queue(sender) for sender in senders))
    result.seconds = time.perf_counter() - started
    return result


class Sender(Protocol):
    """One slot of the load generator: sends one request at a time."""

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> HttpResponse: ...

    async def close(self) -> None: ...


class HttpxSender:
    """A slot that sends through an httpx client shared by every slot."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> HttpResponse:
        response = await self._client.post(path, content=body, headers=headers)
        return HttpResponse(response.status_code, response.content)

    async def close(self) -> None:
        return None


@asynccontextmanager
async def open_senders(url: str, connections: int, client: str) -> AsyncIterator[list[Sender]]:
    """Open ``connections`` senders to ``url`` with the ``client`` load generator."""
    if client == "httpx":
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as shared:
            yield [HttpxSender(shared) for _ in range(connections)]
        return
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    senders: list[Sender] = [Connection(parts.hostname, parts.port) for _ in range(connections)]
    try:
        yield senders
    finally:
        for sender in senders:
            await sender.close()


def open_receipts(database_path: Path) -> int:
    """Return the receipts still waiting for, or in, intake processing."""
    with closing(sqlite3.connect(f"file:{database_path}?mode=ro", uri=True)) as connection:
        (count,) = connection.execute(
            "SELECT count(*) FROM receipts WHERE status IN ('received', 'processing')"
        ).fetchone()
    return int(count)


def wait_for_intake(database_path: Path, timeout: float) -> None:
    """Wait until the intake worker has processed every receipt, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while open_receipts(database_path) and time.monotonic() < deadline:
        time.sleep(0.2)


def stored_digests(database_path: Path, prefix: str) -> dict[str, str]:
    """Return the SHA-256 of each stored body whose webhook id starts with ``prefix-``."""
    with closing(sqlite3.connect(f"file:{database_path}?mode=ro", uri=True)) as connection:
        rows = connection.execute(
            "SELECT webhook_id, body FROM receipts WHERE webhook_id LIKE ?", (f"{prefix}-%",)
        ).fetchall()
    return {webhook_id: hashlib.sha256(body).hexdigest() for webhook_id, body in rows}


async def drive_server(
    url: str,
    database_path: Path,
    server_pid: int,
    *,
    workers: bool,
    warmup: Sequence[Webhook],
    measured: Sequence[Webhook],
    floor: Sequence[Webhook],
    connections: int,
    client: str,
) -> ServerResult:
    """Warm the server up, measure it, and check its database against the responses."""
    async with open_senders(url, connections, client) as senders:
        floor_result = None
        if floor:
            floor_result = await post_all(senders, UNKNOWN_CHANNEL_PATH, floor)
        await post_all(senders, WEBHOOK_PATH, warmup)
        if workers:
            await asyncio.to_thread(wait_for_intake, database_path, WARMUP_SETTLE_SECONDS)
        machine_cpu = MachineCpu.read()
        server_cpu = process_cpu_seconds(server_pid)
        client_cpu = time.process_time()
        load = await post_all(senders, WEBHOOK_PATH, measured)
        load.server_cpu_seconds = process_cpu_seconds(server_pid) - server_cpu
        load.client_cpu_seconds = time.process_time() - client_cpu
        load.other_cpu = MachineCpu.read().others_since(
            machine_cpu, load.server_cpu_seconds + load.client_cpu_seconds, load.seconds
        )

    prefix = measured[0].webhook_id.rsplit("-", 1)[0]
    stored = stored_digests(database_path, prefix)
    digests = {webhook.webhook_id: webhook.digest for webhook in measured}
    matching = sum(
        1 for webhook_id in load.latencies if stored.get(webhook_id) == digests[webhook_id]
    )
    return ServerResult(load, len(stored), matching, floor_result)


def progress(message: str) -> None:
    print(f"[{BENCHMARK}] {message}", file=sys.stderr, flush=True)


def hub_config(path: Path) -> Path:
    """Write a hub configuration whose target gets no requests (see the module docstring)."""
    unreachable = f"http://{LOOPBACK}:{free_port()}"
    return write_config(
        path,
        unreachable,
        target={"maintenance_windows": [ALWAYS_CLOSED_WINDOW]},
        # The product's defaults, in place of the short intervals that the tests use.
        workers={"poll_interval_seconds": 0.5, "lease_seconds": 30},
    )


def run_hub(folder: Path, options: IntakeOptions, webhooks: IntakeWebhooks) -> ServerResult:
    """Measure ``entrepot run``, with its workers, as deployed."""
    data_dir = folder / "hub"
    hub = HubProcess(data_dir, hub_config(folder / "hub.toml"))
    try:
        progress(f"entrepot run at {hub.url}: {options.webhooks} webhooks")
        return asyncio.run(
            drive_server(
                hub.url,
                data_dir / "entrepot.db",
                hub.process.process.pid,
                workers=True,
                warmup=webhooks.hub_warmup,
                measured=webhooks.hub,
                floor=webhooks.floor,
                connections=options.connections,
                client=options.client,
            )
        )
    finally:
        hub.stop()


def run_api_only(folder: Path, options: IntakeOptions, webhooks: IntakeWebhooks) -> ServerResult:
    """Measure the same HTTP API with no workers in the process."""
    data_dir = folder / "api"
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    config = hub_config(folder / "api.toml")
    root = repository_root()
    python_path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    server = ChildProcess(
        "HTTP API without workers",
        [str(config), str(data_dir), str(port)],
        folder / "api.log",
        {"PYTHONPATH": python_path},
        module="bench.api_server",
        cwd=root,
    )
    try:
        server.wait_until_healthy(f"{url}/healthz")
        progress(f"HTTP API without workers at {url}: {options.webhooks} webhooks")
        return asyncio.run(
            drive_server(
                url,
                data_dir / "entrepot.db",
                server.process.pid,
                workers=False,
                warmup=webhooks.api_warmup,
                measured=webhooks.api,
                floor=[],
                connections=options.connections,
                client=options.client,
            )
        )
    finally:
        server.stop()


@dataclass(frozen=True)
class IntakeWebhooks:
    """The requests of one run. Each server gets webhook ids of its own."""

    floor: list[Webhook]
    hub_warmup: list[Webhook]
    hub: list[Webhook]
    api_warmup: list[Webhook]
    api: list[Webhook]

    @classmethod
    def build(cls, options: IntakeOptions) -> IntakeWebhooks:
        sizes = {
            "floor": options.floor_requests,
            "hub_warmup": options.warmup,
            "hub": options.webhooks,
            "api_warmup": options.warmup,
            "api": options.webhooks,
        }
        built: dict[str, list[Webhook]] = {}
        first_order_id = 5_000_000
        for name, count in sizes.items():
            built[name] = build_webhooks(f"bench-{name.replace('_', '-')}", count, first_order_id)
            first_order_id += count
        return cls(**built)


def server_rows(name: str, result: ServerResult, baseline: float, client: str) -> list[Row]:
    load = result.load
    latencies = list(load.latencies.values())
    acked = len(latencies)
    failed = sum(load.statuses.values()) - load.statuses[200] + sum(load.errors.values())
    note = f"{failed} not acknowledged" if failed else ""
    stored_note = f"every acknowledged body stored; {result.stored:,} rows in all"
    if result.stored_matching != acked:
        missing = acked - result.stored_matching
        stored_note = f"MISSING: {missing} acknowledged bodies not stored"
    rows = [
        Row(
            BENCHMARK,
            f"{name}: webhooks acknowledged",
            load.acked_per_second,
            "webhooks/s",
            load.acked_per_second / baseline,
            note,
        ),
        Row(BENCHMARK, f"{name}: acknowledgement p50", percentile(latencies, 0.5) * 1000, "ms"),
        Row(BENCHMARK, f"{name}: acknowledgement p99", percentile(latencies, 0.99) * 1000, "ms"),
        Row(
            BENCHMARK,
            f"{name}: stored bodies equal to the sent ones",
            result.stored_matching,
            f"of {acked:,} acked",
            note=stored_note,
        ),
        Row(
            BENCHMARK,
            f"{name}: server CPU",
            load.server_cpu_seconds / load.seconds,
            "cores",
            note="user + system time of the server process over wall time",
        ),
        Row(
            BENCHMARK,
            f"{name}: load generator CPU",
            load.client_cpu_seconds / load.seconds,
            "cores",
            note=f"{client} client, {load.connections} connections",
        ),
    ]
    if load.other_cpu is not None:
        rows.append(
            replace(load.other_cpu, benchmark=BENCHMARK, measure=f"{name}: CPU of other processes")
        )
    return rows


def run(options: IntakeOptions, folder: Path) -> tuple[list[Row], bool]:
    """Run the intake benchmark in ``folder``, and return its rows and whether checks passed."""
    webhooks = IntakeWebhooks.build(options)
    size = row_size(receipt_row(webhooks.hub[0]))
    progress(f"baseline: {options.baseline_commits} bare SQLite commits of {size}-byte rows")
    before = measure_commit_rate(
        folder / "baseline-before.db", webhooks.hub, options.baseline_commits
    )
    direct = measure_store_receipt_rate(folder / "direct.db", webhooks.api)

    hub = run_hub(folder, options, webhooks)
    api = run_api_only(folder, options, webhooks)

    after = measure_commit_rate(
        folder / "baseline-after.db", webhooks.hub, options.baseline_commits
    )
    baseline = mean([before, after])
    rows = [
        *baseline_rows(options, size, before, after, direct, hub),
        *server_rows("entrepot run", hub, baseline, options.client),
        *server_rows("API without workers", api, baseline, options.client),
    ]
    passed = all(
        result.stored_matching == len(result.load.latencies) == options.webhooks
        for result in (hub, api)
    )
    return rows, passed


def baseline_rows(
    options: IntakeOptions,
    size: int,
    before: float,
    after: float,
    direct: float,
    hub: ServerResult,
) -> list[Row]:
    """Rows of the SQLite baseline and of the parts of the path measured alone."""
    baseline = mean([before, after])
    assert hub.floor is not None
    return [
        Row(
            BENCHMARK,
            "baseline: bare SQLite commits, before",
            before,
            "commits/s",
            before / baseline,
            f"{size}-byte rows, 1 thread",
        ),
        Row(
            BENCHMARK,
            "baseline: bare SQLite commits, after",
            after,
            "commits/s",
            after / baseline,
            f"{size}-byte rows, 1 thread",
        ),
        Row(
            BENCHMARK,
            "store_receipt() in this process",
            direct,
            "receipts/s",
            direct / baseline,
            "1 thread, no HTTP",
        ),
        Row(
            BENCHMARK,
            "POST to an unknown channel (404)",
            hub.floor.requests_per_second,
            "requests/s",
            hub.floor.requests_per_second / baseline,
            f"entrepot run, {options.connections} connections, nothing stored",
        ),
    ]
