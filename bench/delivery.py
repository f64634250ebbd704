"""Delivery benchmark: orders per second into the ERP simulator within the target's budget.

Each scenario starts ``entrepot erp-sim`` with ``--rate-limit R --concurrency C`` and
a fixed latency, and configures the hub's target with ``requests_per_second = R`` and
``max_concurrency = C``. The backlog is written straight into the hub's database
with ``store_receipt``, one orders/create receipt per order, all for one customer.
The first order writes the customer, and every order after it costs one ERP
request. Then:

1. ``entrepot worker`` maps the receipts into orders and pending deliveries while the
   target is in a maintenance window, so nothing is sent yet. Then it is stopped.
2. A new ``entrepot worker`` with the target open drains the deliveries.

Rates come from the simulator's request log: successful ``PUT …/salesOrder/eid:…``
requests per second, over the steady middle of the drain (the requests between the
10th and the 90th percentile of start times) and over the whole drain. The ratio is
the rate divided by R. The baseline is a bare client measured against the same
simulator first. It paces GETs, which the simulator responds to with 404, with
aiolimiter at capacity 1 and R per second, and keeps at most C in flight. It shows
the rate that strictly even spacing reaches from a client that does nothing else.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from aiolimiter import AsyncLimiter
from tests.harness import EXAMPLE_SKUS, SHOP, ErpSim, HubProcess, order_body, write_config

from bench.common import ALWAYS_CLOSED_WINDOW, MachineCpu, Row, process_cpu_seconds
from entrepot.spokes.protocols import WebhookEnvelope
from entrepot.store.database import Database, sqlite_url
from entrepot.store.migrate import upgrade_to_head
from entrepot.store.receipts import store_receipt

BENCHMARK = "delivery"
# Every order of the backlog is this example order, with its own id: one customer.
BASE_ORDER = "order-1002"
FIRST_ORDER_ID = 7_000_000
ORDER_PATH = "/services/rest/record/v1/salesOrder/"
CUSTOMER_PATH = "/services/rest/record/v1/customer/"
PROBE_PATH = "/services/rest/record/v1/salesOrder/eid:bench-probe-missing"
# Fraction of the successful order requests left out at each end for the steady rate.
STEADY_TRIM = 0.1
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Scenario:
    """One drain: ``rate`` is R in requests per second, ``concurrency`` is C."""

    name: str
    orders: int
    rate: float
    concurrency: int
    latency_ms: float

    @property
    def label(self) -> str:
        return (
            f"{self.name} (R={self.rate:g}/s, C={self.concurrency}, "
            f"{self.latency_ms:g} ms latency)"
        )


@dataclass(frozen=True)
class DeliveryOptions:
    scenarios: tuple[Scenario, ...]
    probe_seconds: float


FULL = DeliveryOptions(
    scenarios=(
        Scenario("budget", orders=1200, rate=20, concurrency=4, latency_ms=50),
        Scenario("backlog", orders=10_000, rate=100, concurrency=8, latency_ms=5),
    ),
    probe_seconds=10,
)
QUICK = DeliveryOptions(
    scenarios=(
        Scenario("budget", orders=300, rate=20, concurrency=4, latency_ms=50),
        Scenario("backlog", orders=1000, rate=100, concurrency=8, latency_ms=5),
    ),
    probe_seconds=4,
)


@dataclass(frozen=True)
class Throughput:
    """Successful requests per second, from the simulator's request log."""

    count: int
    steady_per_second: float
    whole_per_second: float
    first_started_at: float
    last_finished_at: float


@dataclass(frozen=True)
class ScenarioResult:
    scenario: Scenario
    probe: Throughput
    probe_throttled: int
    orders: Throughput
    statuses: dict[str, int]
    customer_writes: int
    drain_seconds: float
    mapped_per_second: float
    worker_cores: float
    erp_cores: float
    other_cpu: Row
    max_in_flight: int
    orders_in_erp: int
    deliveries_done: int


def progress(message: str) -> None:
    print(f"[{BENCHMARK}] {message}", file=sys.stderr, flush=True)


def throughput(entries: Sequence[dict[str, Any]]) -> Throughput:
    """Measure the rate of ``entries``, which are successful requests of the log."""
    if len(entries) < 2:
        raise ValueError(
            f"need at least 2 successful requests to measure a rate, got {len(entries)}"
        )
    starts = sorted(entry["started_at"] for entry in entries)
    first = int(len(starts) * STEADY_TRIM)
    last = len(starts) - 1 - first
    steady = (last - first) / (starts[last] - starts[first])
    finished = max(entry["finished_at"] for entry in entries)
    whole = len(entries) / (finished - starts[0])
    return Throughput(len(entries), steady, whole, starts[0], finished)


async def probe_erp(url: str, rate: float, concurrency: int, seconds: float) -> None:
    """Send GETs for a missing order for ``seconds``, evenly spaced at ``rate`` per second."""
    limiter = AsyncLimiter(1, 1.0 / rate)
    slots = asyncio.Semaphore(concurrency)
    count = max(int(rate * seconds), 2)

    async with httpx.AsyncClient(
        base_url=url, limits=httpx.Limits(max_connections=concurrency + 2), timeout=10.0
    ) as client:

        async def send() -> None:
            async with slots:
                await limiter.acquire()
                await client.get(PROBE_PATH)

        await asyncio.gather(*(send() for _ in range(count)))


def load_backlog(database_path: Path, orders: int) -> None:
    """Store one orders/create receipt per order, as the webhook endpoint would."""
    database = Database(sqlite_url(database_path))
    try:
        upgrade_to_head(database)
        for n in range(orders):
            order_id = FIRST_ORDER_ID + n
            body = json.dumps(order_body(order_id, base=BASE_ORDER)).encode()
            envelope = WebhookEnvelope(
                channel="shopify",
                account=SHOP,
                topic="orders/create",
                webhook_id=f"bench-delivery-{order_id}",
                event_id=None,
                triggered_at=None,
                headers={"x-shopify-topic": "orders/create", "x-shopify-shop-domain": SHOP},
            )
            store_receipt(database, envelope, body)
    finally:
        database.dispose()


def count_rows(database_path: Path, query: str) -> int:
    with closing(sqlite3.connect(f"file:{database_path}?mode=ro", uri=True)) as connection:
        (count,) = connection.execute(query).fetchone()
    return int(count)


def wait_for(
    database_path: Path, query: str, expected: int, timeout: float, description: str
) -> None:
    """Poll ``query`` until it returns ``expected``, or raise TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count_rows(database_path, query) == expected:
            return
        time.sleep(POLL_SECONDS)
    raise TimeoutError(
        f"timed out after {timeout:.0f} s waiting for {description}; see the logs kept by --keep"
    )


def hub_config(path: Path, scenario: Scenario, erp_url: str, *, closed: bool) -> Path:
    target: dict[str, Any] = {
        "requests_per_second": scenario.rate,
        "max_concurrency": scenario.concurrency,
    }
    if closed:
        target["maintenance_windows"] = [ALWAYS_CLOSED_WINDOW]
    # The product's worker defaults, in place of the short intervals that the tests use.
    workers = {"poll_interval_seconds": 0.5, "lease_seconds": 30}
    return write_config(path, erp_url, target=target, workers=workers)


def run_scenario(scenario: Scenario, folder: Path, probe_seconds: float) -> ScenarioResult:
    erp = ErpSim(
        folder / "erp",
        concurrency=scenario.concurrency,
        rate_limit=scenario.rate,
        latency_ms=scenario.latency_ms,
    )
    try:
        progress(f"{scenario.label}: bare client against the simulator for {probe_seconds:g} s")
        asyncio.run(probe_erp(erp.url, scenario.rate, scenario.concurrency, probe_seconds))
        probe_entries = erp.requests()
        probe = throughput([entry for entry in probe_entries if entry["status"] != 429])
        probe_throttled = sum(1 for entry in probe_entries if entry["status"] == 429)
        erp.admin.post("/_sim/reset").raise_for_status()
        erp.add_items(*EXAMPLE_SKUS)
        return drain(scenario, folder, erp, probe, probe_throttled)
    finally:
        erp.close()


def drain(
    scenario: Scenario, folder: Path, erp: ErpSim, probe: Throughput, probe_throttled: int
) -> ScenarioResult:
    data_dir = folder / "hub"
    database_path = data_dir / "entrepot.db"
    progress(f"{scenario.label}: storing {scenario.orders} receipts")
    load_backlog(database_path, scenario.orders)

    progress(f"{scenario.label}: mapping the receipts, target closed")
    mapping_started = time.monotonic()
    intake = HubProcess(
        data_dir,
        hub_config(folder / "intake.toml", scenario, erp.url, closed=True),
        command="worker",
        log_name="intake-worker.log",
    )
    try:
        wait_for(
            database_path,
            "SELECT count(*) FROM deliveries WHERE status = 'pending'",
            scenario.orders,
            timeout=60 + scenario.orders / 10,
            description=f"{scenario.orders} pending deliveries",
        )
        mapped_per_second = scenario.orders / (time.monotonic() - mapping_started)
    finally:
        intake.stop()

    progress(f"{scenario.label}: draining {scenario.orders} deliveries")
    erp_pid = erp.process.process.pid
    erp_cpu = process_cpu_seconds(erp_pid)
    machine_cpu = MachineCpu.read()
    bench_cpu = time.process_time()
    started_at = time.time()
    sender = HubProcess(
        data_dir,
        hub_config(folder / "delivery.toml", scenario, erp.url, closed=False),
        command="worker",
        log_name="delivery-worker.log",
    )
    try:
        wait_for(
            database_path,
            "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'in_flight')",
            0,
            timeout=60 + 3 * scenario.orders / scenario.rate,
            description="an empty delivery queue",
        )
        drain_wall = time.time() - started_at
        worker_seconds = process_cpu_seconds(sender.process.process.pid)
        erp_seconds = process_cpu_seconds(erp_pid) - erp_cpu
        own_seconds = worker_seconds + erp_seconds + time.process_time() - bench_cpu
        other_cpu = MachineCpu.read().others_since(machine_cpu, own_seconds, drain_wall)
    finally:
        sender.stop()

    entries = erp.requests()
    # Kept with --keep, for a closer look at the spacing of the requests.
    (folder / "erp-requests.json").write_text(json.dumps(entries))
    orders = [
        entry
        for entry in entries
        if entry["method"] == "PUT"
        and entry["path"].startswith(ORDER_PATH)
        and 200 <= entry["status"] < 300
    ]
    stats = erp.stats()
    measured = throughput(orders)
    return ScenarioResult(
        scenario=scenario,
        probe=probe,
        probe_throttled=probe_throttled,
        orders=measured,
        statuses=dict(stats["by_status"]),
        customer_writes=sum(1 for entry in entries if entry["path"].startswith(CUSTOMER_PATH)),
        drain_seconds=measured.last_finished_at - started_at,
        mapped_per_second=mapped_per_second,
        worker_cores=worker_seconds / drain_wall,
        erp_cores=erp_seconds / drain_wall,
        other_cpu=other_cpu,
        max_in_flight=int(stats["max_in_flight"]),
        orders_in_erp=len({entry["externalId"] for entry in orders}),
        deliveries_done=count_rows(
            database_path, "SELECT count(*) FROM deliveries WHERE status = 'done'"
        ),
    )


def scenario_rows(result: ScenarioResult) -> list[Row]:
    scenario = result.scenario
    rate = scenario.rate
    label = scenario.label
    statuses = Counter(result.statuses)
    throttled = statuses["429"]
    others = [
        f"{count} x {status}"
        for status, count in sorted(statuses.items())
        if status not in ("204", "429")
    ]
    others_note = "other statuses: " + (", ".join(others) or "none; all the rest were 204")
    ideal = scenario.orders / rate
    return [
        Row(
            BENCHMARK,
            f"{label}: bare client, steady",
            result.probe.steady_per_second,
            "requests/s",
            result.probe.steady_per_second / rate,
            f"baseline; {result.probe_throttled} responses were 429",
        ),
        Row(
            BENCHMARK,
            f"{label}: orders, steady middle",
            result.orders.steady_per_second,
            "orders/s",
            result.orders.steady_per_second / rate,
            "ratio = rate / R",
        ),
        Row(
            BENCHMARK,
            f"{label}: orders, whole drain",
            result.orders.whole_per_second,
            "orders/s",
            result.orders.whole_per_second / rate,
            "first request to last response",
        ),
        Row(BENCHMARK, f"{label}: 429 responses", throttled, "responses", note=others_note),
        Row(
            BENCHMARK,
            f"{label}: time to drain {scenario.orders:,} orders",
            result.drain_seconds,
            "s",
            result.drain_seconds / ideal,
            f"ratio = time / (orders / R) = time / {ideal:g} s; from process start",
        ),
        Row(
            BENCHMARK,
            f"{label}: most requests in flight at the ERP",
            result.max_in_flight,
            "requests",
            note=f"limit C = {scenario.concurrency}",
        ),
        Row(
            BENCHMARK,
            f"{label}: customer writes",
            result.customer_writes,
            "requests",
            note="one customer for every order",
        ),
        Row(
            BENCHMARK,
            f"{label}: orders in the ERP",
            result.orders_in_erp,
            f"of {scenario.orders:,}",
            note=f"{result.deliveries_done:,} deliveries done",
        ),
        Row(
            BENCHMARK,
            f"{label}: delivery worker CPU",
            result.worker_cores,
            "cores",
            note="entrepot worker process, start to empty queue",
        ),
        Row(
            BENCHMARK,
            f"{label}: simulator CPU",
            result.erp_cores,
            "cores",
            note="entrepot erp-sim process, same interval",
        ),
        replace(
            result.other_cpu,
            benchmark=BENCHMARK,
            measure=f"{label}: CPU of other processes, same interval",
        ),
        Row(
            BENCHMARK,
            f"{label}: intake worker mapping, before the drain",
            result.mapped_per_second,
            "receipts/s",
            note="target closed; not part of the drain time",
        ),
    ]


def run(options: DeliveryOptions, folder: Path) -> tuple[list[Row], bool]:
    """Run every scenario in ``folder``, and return the rows and whether the checks passed."""
    rows: list[Row] = []
    passed = True
    for scenario in options.scenarios:
        scenario_folder = folder / scenario.name
        scenario_folder.mkdir()
        result = run_scenario(scenario, scenario_folder, options.probe_seconds)
        rows += scenario_rows(result)
        passed = passed and result.orders_in_erp == result.deliveries_done == scenario.orders
    return rows, passed
