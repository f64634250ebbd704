"""Tryton benchmark: orders per second into a real Tryton 8.2, direct script versus the hub.

Every case starts ``trytond`` on 127.0.0.1 on its own copy of the cached template
database (see ``entrepot.spokes.tryton.template``) and posts the same orders: a few
example orders with their own ids, spread over a few customers. The cases are:

1. The baseline, ``bench/tryton_direct.py``: a plain script that posts the orders
   one after the other over the same JSON-RPC calls that the spoke makes.
2. The hub one order at a time, with 1, 2 and 4 requests in flight
   (``max_concurrency``; ``batch_size = 1``).
3. The hub in batches (``batch_size = 25``, ``max_concurrency = 2``).

For the hub, ``entrepot run`` first takes the orders as signed webhooks over HTTP
and maps them while the target is in a maintenance window. The orders then wait as
a backlog of pending deliveries, and the process is stopped. The measured drain starts just
before a new ``entrepot worker`` process starts, with the target open, and ends when
the last delivery is done. The target's ``requests_per_second`` is high enough never
to make a request wait.

The table gives the CPU that trytond, the client (the script, or the ``entrepot
worker`` process) and all other processes used over each timed interval, in cores.

After each case the benchmark reads the sales back from Tryton by reference: every
order must be there once, processed (confirmed, with its shipment and invoice
created), with the order's total.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.harness import SECRET, SHOP, HubProcess, order_body

from bench.common import ALWAYS_CLOSED_WINDOW, MachineCpu, format_value, process_cpu_seconds
from bench.tryton_direct import JsonRpc, post_orders
from entrepot.spokes.tryton.server import TrytonServer
from entrepot.spokes.tryton.template import copy_database, ensure_template

BENCHMARK = "tryton"
DATABASE = "bench"
# Example orders in USD without discounts: 1, 2 and 1 item lines, with and without
# tax and shipping. Customer n always orders BASE_ORDERS[n % 3].
BASE_ORDERS = ("order-1001", "order-1003", "order-1005")
FIRST_CUSTOMER_ID = 9_100_000
# Each case gets its own range of order ids.
FIRST_ORDER_ID = 8_000_000
ORDER_IDS_PER_CASE = 100_000
# High enough that the pacing bucket never makes a request wait: Tryton takes tens
# of milliseconds or more for every call.
REQUESTS_PER_SECOND = 1000
# Well above the few seconds that the confirm call of a batch of 25 takes here, so
# that no slow call times out and turns into a retry.
TIMEOUT_SECONDS = 120
# A sale that confirm has processed: its shipment and invoice exist.
PROCESSED_STATES = ("processing", "done")
POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Case:
    """One measured way of posting the orders. ``max_concurrency`` and ``batch_size``
    are the hub target's settings, which the baseline does not use."""

    name: str
    hub: bool
    max_concurrency: int = 1
    batch_size: int = 1


CASES = (
    Case("baseline: direct JSON-RPC script, sequential", hub=False),
    Case("entrepot, one by one, max_concurrency 1", hub=True, max_concurrency=1),
    Case("entrepot, one by one, max_concurrency 2", hub=True, max_concurrency=2),
    Case("entrepot, one by one, max_concurrency 4", hub=True, max_concurrency=4),
    Case("entrepot, batch_size 25, max_concurrency 2", hub=True, max_concurrency=2, batch_size=25),
)


@dataclass(frozen=True)
class TrytonOptions:
    orders: int
    customers: int


FULL = TrytonOptions(orders=200, customers=20)
QUICK = TrytonOptions(orders=50, customers=5)


@dataclass(frozen=True)
class Check:
    """The sales in Tryton of one case's orders, counted by sale reference."""

    orders: int
    once: int
    missing: int
    doubled: int
    wrong_total: int
    not_processed: int
    other_sales: int

    @property
    def passed(self) -> bool:
        return self.once == self.orders and not (
            self.wrong_total or self.not_processed or self.other_sales
        )

    def describe(self) -> str:
        if self.passed:
            return f"{self.once} of {self.orders} once, processed, totals right"
        problems = [
            f"{count} {label}"
            for count, label in (
                (self.missing, "missing"),
                (self.doubled, "more than once"),
                (self.wrong_total, "with a wrong total"),
                (self.not_processed, "not processed"),
                (self.other_sales, "other sales"),
            )
            if count
        ]
        return f"FAILED: {self.once} of {self.orders} once; " + ", ".join(problems)


@dataclass(frozen=True)
class CaseResult:
    case: Case
    orders: int
    seconds: float
    tryton_cores: float
    client_cores: float
    other_cores: float
    retries: int
    check: Check

    @property
    def per_second(self) -> float:
        return self.orders / self.seconds


def progress(message: str) -> None:
    print(f"[{BENCHMARK}] {message}", file=sys.stderr, flush=True)


def build_orders(options: TrytonOptions, first_order_id: int) -> list[dict[str, Any]]:
    """Build the Shopify order bodies of one case: order n is from customer
    n % customers, with ids from ``first_order_id`` on."""
    orders = []
    for n in range(options.orders):
        customer = n % options.customers
        body = order_body(first_order_id + n, base=BASE_ORDERS[customer % len(BASE_ORDERS)])
        body["customer"] = {
            **copy.deepcopy(body["customer"]),
            "id": FIRST_CUSTOMER_ID + customer,
            "first_name": "Customer",
            "last_name": str(customer),
            "email": f"customer-{customer}@example.com",
        }
        body["email"] = body["customer"]["email"]
        orders.append(body)
    return orders


def reference(order: dict[str, Any]) -> str:
    return f"shopify:{SHOP}:{order['id']}"


def tryton_pid() -> int:
    """Return the process id of this process's trytond child (Linux only)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"trytond" in command:
            return int(entry.name)
    raise RuntimeError("no trytond child process found")


def connect(server: TrytonServer) -> JsonRpc:
    rpc = JsonRpc(server.url, server.database, server.username, server.password)
    rpc.login()
    return rpc


def check_sales(server: TrytonServer, orders: Sequence[dict[str, Any]]) -> Check:
    """Count the sales of ``orders`` in Tryton by reference, and compare their totals."""
    rpc = connect(server)
    try:
        rows = rpc.model(
            "sale.sale",
            "search_read",
            [],
            0,
            None,
            None,
            ["reference", "total_amount", "state"],
        )
    finally:
        rpc.close()
    by_reference: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_reference.setdefault(row["reference"], []).append(row)
    expected = {reference(order): Decimal(order["total_price"]) for order in orders}
    counts = Counter({ref: len(by_reference.get(ref, [])) for ref in expected})
    found = [row for ref in expected for row in by_reference.get(ref, [])]
    return Check(
        orders=len(orders),
        once=sum(1 for count in counts.values() if count == 1),
        missing=sum(1 for count in counts.values() if count == 0),
        doubled=sum(1 for count in counts.values() if count > 1),
        wrong_total=sum(1 for row in found if row["total_amount"] != expected[row["reference"]]),
        not_processed=sum(1 for row in found if row["state"] not in PROCESSED_STATES),
        other_sales=len(rows) - len(found),
    )


def run_baseline(case: Case, server: TrytonServer, orders: Sequence[dict[str, Any]]) -> CaseResult:
    pid = tryton_pid()
    machine_cpu = MachineCpu.read()
    tryton_cpu = process_cpu_seconds(pid)
    client_cpu = time.process_time()
    started = time.monotonic()
    rpc = connect(server)
    try:
        post_orders(rpc, SHOP, orders)
    finally:
        rpc.close()
    seconds = time.monotonic() - started
    tryton_seconds = process_cpu_seconds(pid) - tryton_cpu
    client_seconds = time.process_time() - client_cpu
    others = MachineCpu.read().others_since(machine_cpu, tryton_seconds + client_seconds, seconds)
    return CaseResult(
        case=case,
        orders=len(orders),
        seconds=seconds,
        tryton_cores=tryton_seconds / seconds,
        client_cores=client_seconds / seconds,
        other_cores=others.value,
        retries=0,
        check=check_sales(server, orders),
    )


def hub_config(path: Path, case: Case, server: TrytonServer, *, closed: bool) -> Path:
    """Write the hub's configuration: one Tryton target with the case's settings, and
    the product's defaults for everything else."""
    lines = [
        "[shopify]",
        f"webhook_secret = {json.dumps(SECRET)}",
        "",
        "[targets.erp]",
        'kind = "tryton"',
        f"base_url = {json.dumps(server.url)}",
        f"requests_per_second = {REQUESTS_PER_SECOND}",
        f"max_concurrency = {case.max_concurrency}",
        f"batch_size = {case.batch_size}",
        f"timeout_seconds = {TIMEOUT_SECONDS}",
    ]
    if closed:
        lines.append(f"maintenance_windows = [{json.dumps(ALWAYS_CLOSED_WINDOW)}]")
    lines += [
        "",
        "[targets.erp.tryton]",
        f"database = {json.dumps(server.database)}",
        f"username = {json.dumps(server.username)}",
        f"password = {json.dumps(server.password)}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def count_rows(database_path: Path, query: str) -> int:
    with closing(sqlite3.connect(f"file:{database_path}?mode=ro", uri=True)) as connection:
        (count,) = connection.execute(query).fetchone()
    return int(count)


def wait_for(
    database_path: Path, query: str, expected: int, timeout: float, hub: HubProcess, what: str
) -> None:
    """Poll ``query`` until it returns ``expected``. Raise RuntimeError if ``hub`` exits
    first, and TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if count_rows(database_path, query) == expected:
            return
        if hub.process.process.poll() is not None:
            raise RuntimeError(
                f"the hub exited while waiting for {what}; see {hub.process.log_path}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout:.0f} s waiting for {what}; see the logs kept by --keep"
            )
        time.sleep(POLL_SECONDS)


def load_backlog(
    case: Case, folder: Path, server: TrytonServer, orders: Sequence[dict[str, Any]]
) -> None:
    """Post the orders as signed webhooks to ``entrepot run`` with the target closed,
    and wait until each is a pending delivery."""
    data_dir = folder / "hub"
    hub = HubProcess(
        data_dir,
        hub_config(folder / "intake.toml", case, server, closed=True),
        log_name="intake.log",
    )
    try:
        for order in orders:
            response = hub.post_webhook(order, webhook_id=f"bench-tryton-{order['id']}")
            if response.status_code != 200:
                raise RuntimeError(
                    f"the hub responded with {response.status_code} to the webhook of order "
                    f"{order['id']}: {response.text[:200]}"
                )
        wait_for(
            data_dir / "entrepot.db",
            "SELECT count(*) FROM deliveries WHERE status = 'pending'",
            len(orders),
            60 + len(orders) / 5,
            hub,
            f"{len(orders)} pending deliveries",
        )
    finally:
        hub.stop()


def last_finished_at(database_path: Path) -> float:
    """Return when the last delivery finished, in seconds since the epoch."""
    with closing(sqlite3.connect(f"file:{database_path}?mode=ro", uri=True)) as connection:
        (text,) = connection.execute("SELECT max(finished_at) FROM deliveries").fetchone()
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def run_hub(
    case: Case, folder: Path, server: TrytonServer, orders: Sequence[dict[str, Any]]
) -> CaseResult:
    progress(f"{case.name}: {len(orders)} webhooks into the hub, target closed")
    load_backlog(case, folder, server, orders)

    progress(f"{case.name}: draining {len(orders)} deliveries")
    database_path = folder / "hub" / "entrepot.db"
    pid = tryton_pid()
    machine_cpu = MachineCpu.read()
    tryton_cpu = process_cpu_seconds(pid)
    bench_cpu = time.process_time()
    started_at = time.time()
    worker = HubProcess(
        folder / "hub",
        hub_config(folder / "drain.toml", case, server, closed=False),
        command="worker",
        log_name="drain.log",
    )
    try:
        wait_for(
            database_path,
            "SELECT count(*) FROM deliveries WHERE status = 'done'",
            len(orders),
            120 + 3 * len(orders),
            worker,
            f"{len(orders)} deliveries done",
        )
        polled = time.time() - started_at
        worker_seconds = process_cpu_seconds(worker.process.process.pid)
        tryton_seconds = process_cpu_seconds(pid) - tryton_cpu
        own_seconds = worker_seconds + tryton_seconds + time.process_time() - bench_cpu
        others = MachineCpu.read().others_since(machine_cpu, own_seconds, polled)
    finally:
        worker.stop()
    retries = count_rows(database_path, "SELECT coalesce(sum(attempts - 1), 0) FROM deliveries")
    return CaseResult(
        case=case,
        orders=len(orders),
        seconds=last_finished_at(database_path) - started_at,
        tryton_cores=tryton_seconds / polled,
        client_cores=worker_seconds / polled,
        other_cores=others.value,
        retries=retries,
        check=check_sales(server, orders),
    )


def run_case(
    case: Case, folder: Path, template: Path, orders: Sequence[dict[str, Any]]
) -> CaseResult:
    copy_database(template, folder / "tryton", DATABASE)
    with TrytonServer(folder / "tryton", DATABASE) as server:
        if not case.hub:
            progress(f"{case.name}: posting {len(orders)} orders")
            return run_baseline(case, server, orders)
        return run_hub(case, folder, server, orders)


def format_results(results: Sequence[CaseResult]) -> str:
    """Return the results as a Markdown table, with ratios to the first row."""
    baseline = results[0].per_second
    header = (
        "case",
        "orders",
        "seconds",
        "orders/s",
        "ratio",
        "trytond CPU, cores",
        "client CPU, cores",
        "other CPU, cores",
        "retries",
        "sales in Tryton",
    )
    cells = [
        (
            result.case.name,
            str(result.orders),
            f"{result.seconds:.1f}",
            f"{result.per_second:.2f}",
            f"{result.per_second / baseline:.3f}",
            f"{result.tryton_cores:.2f}",
            f"{result.client_cores:.2f}",
            f"{result.other_cores:.2f}",
            format_value(result.retries),
            result.check.describe(),
        )
        for result in results
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    left_aligned = {0, len(header) - 1}

    def render(line: Sequence[str]) -> str:
        padded = [
            text.ljust(width) if i in left_aligned else text.rjust(width)
            for i, (text, width) in enumerate(zip(line, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        "-" * (width + 2) if i in left_aligned else "-" * (width + 1) + ":"
        for i, width in enumerate(widths)
    )
    return "\n".join([render(header), rule + "|", *(render(line) for line in cells)])


def summary(results: Sequence[CaseResult]) -> str:
    total = sum(result.orders for result in results)
    if all(result.check.passed for result in results):
        return (
            f"Check passed: in every case each order is in Tryton as exactly one processed "
            f"sale with the order's total ({total} orders over {len(results)} cases, "
            "counted by sale reference)."
        )
    failed = ", ".join(result.case.name for result in results if not result.check.passed)
    return f"Check FAILED in: {failed}. The last column says what is wrong."


def run(options: TrytonOptions, folder: Path) -> tuple[str, bool]:
    """Run every case in ``folder``, and return the results table with the check's
    summary, and whether every check passed."""
    progress("preparing the Tryton template (about 40 s if it is not cached yet)")
    template = ensure_template()
    results = []
    for index, case in enumerate(CASES):
        case_folder = folder / f"case-{index}"
        case_folder.mkdir()
        orders = build_orders(options, FIRST_ORDER_ID + index * ORDER_IDS_PER_CASE)
        result = run_case(case, case_folder, template, orders)
        progress(f"{case.name}: {result.per_second:.2f} orders/s; {result.check.describe()}")
        results.append(result)
    text = (
        f"{options.orders} orders from {options.customers} customers per case\n\n"
        f"{format_results(results)}\n\n{summary(results)}"
    )
    return text, all(result.check.passed for result in results)
