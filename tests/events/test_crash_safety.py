"""SIGKILL of a process that relays and delivers events, at a random moment of a
flow of orders, then a restart: each order reaches the ERP once, and each event
reaches the subscriber once in effect.

The hub (`entrepot run`) and one `entrepot worker` share the store, and both run
workers and the outbox relay, so either may hold a lease or be between publishing
an event and marking it published when it dies. Each trial kills one of them,
chosen with its kill time from the trial's seed.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from entrepot.store.database import Database
from tests.events.natsserver import NatsServer, running_nats_server
from tests.events.order_flow import post_until_acknowledged, wait_for_flow, write_flow_config
from tests.harness import ErpSim, HubProcess, order_body, webhook_headers
from tests.webhook_receiver import running_receiver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ORDERS = 16
FIRST_ORDER = 7001
SQLITE_TRIALS = 6
POSTGRES_TRIALS = 3


@dataclass(frozen=True)
class Trial:
    """When and which process a trial kills, drawn from its seed."""

    seed: int
    victim: str  # "hub" or "worker"
    kill_after: float  # seconds after the first webhook
    down_for: float  # seconds between the kill and the restart

    @classmethod
    def from_seed(cls, seed: int) -> Trial:
        rng = random.Random(seed)
        victim = "worker" if seed % 2 == 0 else "hub"
        return cls(seed, victim, rng.uniform(0.3, 1.8), rng.uniform(0.0, 0.5))


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server with JetStream of this test's own."""
    yield from running_nats_server(tmp_path_factory)


@pytest.mark.parametrize("seed", range(SQLITE_TRIALS))
def test_kill_on_sqlite(tmp_path: Path, erp: ErpSim, seed: int) -> None:
    run_trial(tmp_path, erp, Trial.from_seed(seed))


@pytest.mark.parametrize("seed", range(100, 100 + POSTGRES_TRIALS))
def test_kill_on_postgres_and_nats(
    tmp_path: Path, erp: ErpSim, postgres_url: str, nats_server: NatsServer, seed: int
) -> None:
    run_trial(
        tmp_path, erp, Trial.from_seed(seed), store_url=postgres_url, bus_url=nats_server.url
    )


def run_trial(
    tmp_path: Path, erp: ErpSim, trial: Trial, *, store_url: str = "", bus_url: str = ""
) -> None:
    data_dir = tmp_path / "hub"
    store_url = store_url or f"sqlite:///{data_dir / 'entrepot.db'}"
    # Slow ERP answers keep deliveries in flight when the kill comes.
    erp.fault(kind="slow", count=10_000, seconds=0.1)
    numbers = range(FIRST_ORDER, FIRST_ORDER + ORDERS)
    with running_receiver(delay=0.02) as receiver:
        config = write_flow_config(
            tmp_path / "hub.toml", erp.url, receiver.url, store_url=store_url, bus_url=bus_url
        )
        processes = {
            "hub": HubProcess(data_dir, config),
            "worker": HubProcess(data_dir, config, command="worker", log_name="worker.log"),
        }
        restarts = 0
        at_kill: dict[str, int] = {}

        def kill_and_restart() -> None:
            nonlocal restarts
            at_kill["events"] = len(receiver.unique_events())
            at_kill["erp_orders"] = len(erp.orders())
            at_kill["erp_in_flight"] = int(erp.stats()["in_flight"])
            processes[trial.victim].kill()
            time.sleep(trial.down_for)
            restarts += 1
            log_name = f"{trial.victim}-{restarts}.log"
            command = "run" if trial.victim == "hub" else "worker"
            processes[trial.victim] = HubProcess(
                data_dir, config, command=command, log_name=log_name
            )

        database = Database(store_url)
        try:
            start = time.monotonic()
            for number in numbers:
                if not restarts and time.monotonic() - start >= trial.kill_after:
                    kill_and_restart()
                raw = json.dumps(order_body(number)).encode()
                headers = webhook_headers(raw, webhook_id=f"w-{number}")
                response = post_until_acknowledged(lambda: processes["hub"].url, raw, headers)
                assert response.status_code == 200, response.text
                # Spread over about 2 s, so that every kill_after lands within the flow.
                time.sleep(0.12)
            if not restarts:
                time.sleep(max(0.0, start + trial.kill_after - time.monotonic()))
                kill_and_restart()
            state = wait_for_flow(database, erp, receiver, numbers)
        finally:
            for process in processes.values():
                process.stop()
            database.dispose()

    context = f"{trial}, at the kill {at_kill} (logs in {data_dir}): {state.describe()}"
    duplicates = state.requests - len(state.received_ids)
    print(f"{trial}, at the kill {at_kill}: {duplicates} repeated event deliveries")
    assert at_kill["events"] < 3 * ORDERS, f"the kill came after the flow ended: {context}"
    assert state.open_work == 0, context
    assert state.erp_refs == [f"#{number}" for number in numbers], context
    assert set(state.write_counts) == {1}, context
    assert len(state.outbox_ids) == 3 * ORDERS, context
    assert state.unpublished == 0, context
    assert state.received_ids == state.outbox_ids, context
