"""Orders flowing through real processes, for the crash and outage tests of events.

An `entrepot run` process takes signed webhooks, `entrepot worker` processes do
the work, the ERP simulator is the target, and a `WebhookReceiver` subscribes to
the order events. The helpers here write that configuration, start a private
PostgreSQL cluster, and read back what reached the ERP and the receiver.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import func, select

from entrepot.demo.processes import free_port
from entrepot.events.envelope import ORDER_ACCEPTED, ORDER_RECEIVED, ORDER_VALIDATED
from entrepot.store.database import Database
from entrepot.store.tables import Delivery, OutboxEvent, Receipt
from tests.harness import ErpSim, write_config
from tests.webhook_receiver import RECEIVER_SECRET, WebhookReceiver

EVENT_TYPES = (ORDER_RECEIVED, ORDER_VALIDATED, ORDER_ACCEPTED)
SUBSCRIBER = "receiver"
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")

# Short leases, so that the work of a killed process passes to another one quickly.
LEASE_SECONDS = 1.5
ACK_WAIT_SECONDS = 2.0


def write_flow_config(
    path: Path,
    erp_url: str,
    receiver_url: str,
    *,
    store_url: str = "",
    bus_url: str = "",
) -> Path:
    """Write a hub configuration with the receiver subscribed to ``EVENT_TYPES``."""
    write_config(
        path,
        erp_url,
        store_url=store_url,
        target={"max_concurrency": 4, "requests_per_second": 100},
        workers={"lease_seconds": LEASE_SECONDS, "poll_interval_seconds": 0.05},
    )
    lines = ["", "[events]", "relay_interval_seconds = 0.1"]
    if bus_url:
        lines.append(f'bus_url = "{bus_url}"')
    lines += [
        "",
        f"[events.subscribers.{SUBSCRIBER}]",
        f'url = "{receiver_url}"',
        f'secret = "{RECEIVER_SECRET}"',
        f"types = {json.dumps(list(EVENT_TYPES))}",
        "requests_per_second = 500",
        "max_concurrency = 8",
        "timeout_seconds = 1",
        f"ack_wait_seconds = {ACK_WAIT_SECONDS}",
        "redeliver_after_seconds = 0.2",
        "max_deliveries = 100",
    ]
    with path.open("a") as config:
        config.write("\n".join(lines) + "\n")
    return path


@dataclass
class FlowState:
    """What the store, the ERP and the receiver contain at one moment."""

    outbox_ids: set[str]
    unpublished: int
    open_work: int
    received_ids: set[str]
    requests: int
    erp_refs: list[str]
    write_counts: list[int]

    def describe(self) -> str:
        missing = sorted(self.outbox_ids - self.received_ids)
        return (
            f"{len(self.outbox_ids)} outbox events ({self.unpublished} unpublished), "
            f"{len(self.received_ids)} received in {self.requests} requests, "
            f"{len(missing)} missing (first {missing[:3]}), {self.open_work} open receipts "
            f"or deliveries, {len(self.erp_refs)} orders in the ERP"
        )


def flow_state(database: Database, erp: ErpSim, receiver: WebhookReceiver) -> FlowState:
    with database.read() as session:
        outbox = list(
            session.execute(
                select(OutboxEvent.event_id, OutboxEvent.published_at).where(
                    OutboxEvent.type.in_(EVENT_TYPES)
                )
            )
        )
        open_receipts = session.scalar(
            select(func.count()).where(Receipt.status.in_(("received", "processing")))
        )
        open_deliveries = session.scalar(
            select(func.count()).where(Delivery.status.in_(("pending", "in_flight")))
        )
    orders = erp.orders()
    return FlowState(
        outbox_ids={event_id for event_id, _ in outbox},
        unpublished=sum(1 for _, published in outbox if published is None),
        open_work=(open_receipts or 0) + (open_deliveries or 0),
        received_ids={event["id"] for event in receiver.unique_events()},
        requests=len(receiver.requests),
        erp_refs=sorted(order["otherRefNum"] for order in orders),
        write_counts=[order["writeCount"] for order in orders],
    )


def wait_for_flow(
    database: Database,
    erp: ErpSim,
    receiver: WebhookReceiver,
    numbers: Iterable[int],
    *,
    within: float = 40.0,
) -> FlowState:
    """Wait until every order of ``numbers`` is in the ERP, no work is open, and the
    receiver has every outbox event. Return the state then, or at the deadline."""
    expected = sorted(f"#{number}" for number in numbers)
    deadline = time.monotonic() + within
    while True:
        state = flow_state(database, erp, receiver)
        settled = (
            state.open_work == 0
            and set(expected) <= set(state.erp_refs)
            and len(state.outbox_ids) >= 3 * len(expected)
            and state.outbox_ids <= state.received_ids
        )
        if settled or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


class PostgresCluster:
    """A PostgreSQL 15 cluster of its own on a loopback port, with trust
    authentication and fsync off, which tests stop and start again.

    PostgreSQL refuses to run as root, so under root the cluster belongs to the
    ``postgres`` user, in a folder of its own under the system's temp folder.
    """

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="entrepot-pg-"))
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self._as_owner = ["runuser", "-u", "postgres", "--"]
        self.data = self.folder / "data"
        self.log_path = self.folder / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/entrepot"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        settings = (
            f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
            f"unix_socket_directories = '{self.folder}'\nfsync = off\n"
            "synchronous_commit = off\nfull_page_writes = off\n"
        )
        self._run("sh", "-c", f'printf %s "$0" >> {self.data}/postgresql.conf', settings)
        self.start()
        address = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        self._run("createdb", *address, "entrepot")

    def start(self) -> None:
        self._run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.log_path))

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "stop", "-w", "-D", str(self.data), "-m", mode)

    def running(self) -> bool:
        status = self._command("pg_ctl", "status", "-D", str(self.data))
        return subprocess.run(status, capture_output=True).returncode == 0

    def remove(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def _command(self, program: str, *args: str) -> list[str]:
        path = POSTGRES_BIN / program
        return [*self._as_owner, str(path) if path.exists() else program, *args]

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run(self._command(program, *args), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr}")


def post_until_acknowledged(
    url: Callable[[], str], body: bytes, headers: dict[str, str], *, within: float = 30.0
) -> httpx.Response:
    """POST a webhook to ``url()/webhooks/shopify`` again until the response is 200,
    as Shopify retries. ``url`` is called at each try, so the hub may move."""
    deadline = time.monotonic() + within
    while True:
        try:
            response = httpx.post(
                f"{url()}/webhooks/shopify", content=body, headers=headers, timeout=5
            )
            if response.status_code == 200 or time.monotonic() > deadline:
                return response
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)
