"""Events benchmark: events per second from the outbox to a subscriber's committed effect.

Each case runs in fresh processes on a fresh store. A producer process appends the
events to the outbox, one transaction per event as the hub writes them. Worker
processes run one subscriber each, and the first of them the outbox relay. The
subscriber's handler calls `apply_once` with an effect that upserts one row per
event subject. A case ends when the last inbox entry commits. Backends:

- the database bus on SQLite, and on PostgreSQL;
- NATS JetStream (a nats-server of the benchmark's own) with the outbox and the
  inbox on PostgreSQL.

The baseline is Celery 5 on Redis with ``acks_late``: its producer sends each event
as a task, and its workers run the same `apply_event` into the same kind of store.
N worker processes are N ``celery worker --pool=solo`` processes, so each process
both takes messages and runs tasks, as an entrepot worker process does.

After each case the benchmark counts the inbox entries, their distinct event ids
and the applications recorded in the state rows: each must equal the events sent.
It also counts the relay's batches, by the distinct times that marked events published.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text

from bench.common import LOOPBACK, MachineCpu, format_value, process_cpu_seconds, repository_root
from bench.events_worker import CREATE_STATE_TABLE, STATE_TABLE, SUBSCRIBER
from entrepot.store.database import Database, sqlite_url
from entrepot.store.migrate import upgrade_to_head

BENCHMARK = "events"
NATS_SERVER = "/usr/sbin/nats-server"
POSTGRES_ADMIN_URL = f"postgresql://postgres@{LOOPBACK}:5432/postgres"
REDIS_PORT = 6379
# A Redis database that nothing else here uses, so that kombu's shared keys
# (``unacked``, bindings) do not mix with anyone else's.
REDIS_DB = 11
READY_TIMEOUT_SECONDS = 60.0
# A case fails when no new inbox entry commits for this long.
STALL_SECONDS = 60.0
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class EventsOptions:
    events: int
    subjects: int


FULL = EventsOptions(events=3000, subjects=600)
QUICK = EventsOptions(events=600, subjects=120)


@dataclass(frozen=True)
class Case:
    """One measured pipeline. ``bus`` is ``database``, ``nats`` or ``celery``."""

    bus: str
    store: str
    workers: int

    @property
    def label(self) -> str:
        if self.bus == "database":
            return f"database bus on {self.store}"
        if self.bus == "nats":
            return f"NATS JetStream, store on {self.store}"
        return f"Celery + Redis, store on {self.store}"


CASES = tuple(
    Case(bus, store, workers)
    for workers in (1, 2)
    for bus, store in (
        ("celery", "sqlite"),
        ("database", "sqlite"),
        ("celery", "postgresql"),
        ("database", "postgresql"),
        ("nats", "postgresql"),
    )
)


@dataclass
class Result:
    case: Case
    events: int
    seconds: float = float("nan")
    producer_seconds: float = float("nan")
    cpu_seconds: float = float("nan")
    other_cores: float = float("nan")
    check: str = "not run"
    passed: bool = False
    processes: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def run(options: EventsOptions, folder: Path) -> tuple[str, bool]:
    """Run every case; return the results table and whether every check passed."""
    results = []
    for number, case in enumerate(CASES):
        case_folder = folder / f"{number}-{case.bus}-{case.store}-{case.workers}"
        case_folder.mkdir()
        print(f"events: {case.label}, {case.workers} worker(s)...", file=sys.stderr)
        result = run_case(case, options, case_folder, number)
        print(f"events: {describe(result)}", file=sys.stderr)
        results.append(result)
    return format_results(results), all(result.passed for result in results)


def describe(result: Result) -> str:
    return f"{result.events / result.seconds:.0f} events/s; {result.check}"


def run_case(case: Case, options: EventsOptions, folder: Path, number: int) -> Result:
    result = Result(case, options.events)
    name = f"entrepot_bench_events_{os.getpid()}_{number}"
    url = prepare_store(case.store, folder, name)
    environment = dict(os.environ, PYTHONPATH=str(repository_root()))
    processes: list[subprocess.Popen[bytes]] = []
    nats: subprocess.Popen[bytes] | None = None
    redis_keys_before = redis_keys() if case.bus == "celery" else set()
    try:
        broker_pid = None
        if case.bus == "nats":
            nats, nats_url = start_nats(folder)
            broker_pid = nats.pid
        ready = folder / "ready"
        ready.mkdir()
        if case.bus == "celery":
            broker_pid = redis_pid()
            environment.update(
                BENCH_EVENTS_BROKER=f"redis://{LOOPBACK}:{REDIS_PORT}/{REDIS_DB}",
                BENCH_EVENTS_QUEUE=f"entrepot-bench-events-{os.getpid()}-{number}",
                BENCH_EVENTS_STORE=url,
                BENCH_EVENTS_READY_DIR=str(ready),
            )
        for index in range(case.workers):
            log = (folder / f"worker-{index}.log").open("wb")
            if case.bus == "celery":
                command = celery_worker_command(index)
            else:
                command = [sys.executable, "-m", "bench.events_worker", "worker"]
                command += ["--store", url, "--bus", case.bus]
                command += ["--ready-file", str(ready / f"worker-{index}")]
                if case.bus == "nats":
                    command += ["--nats-url", nats_url]
                if index == 0:
                    command.append("--relay")
            processes.append(subprocess.Popen(command, env=environment, stdout=log, stderr=log))
        wait_ready(ready, case.workers, processes)
        measure(case, options, url, environment, processes, broker_pid, result)
    finally:
        stop(processes)
        if nats is not None:
            stop([nats])
        if case.bus == "celery":
            delete_new_redis_keys(redis_keys_before)
    verify(url, case, options, result)
    if case.store == "postgresql":
        drop_database(name)
    return result


def measure(
    case: Case,
    options: EventsOptions,
    url: str,
    environment: dict[str, str],
    workers: list[subprocess.Popen[bytes]],
    broker_pid: int | None,
    result: Result,
) -> None:
    """Run the producer, wait for the last inbox entry, and record times and CPU."""
    database = Database(url)
    try:
        worker_cpu = {process.pid: tree_cpu_seconds(process.pid) for process in workers}
        broker_cpu = process_cpu_seconds(broker_pid) if broker_pid else 0.0
        backend_cpu = backends_cpu_seconds(database)
        machine_cpu = MachineCpu.read()
        wall_started = time.monotonic()
        command = "celery-produce" if case.bus == "celery" else "produce"
        arguments = ["--store", url, "--events", str(options.events)]
        arguments += ["--subjects", str(options.subjects)]
        producer = subprocess.run(
            [sys.executable, "-m", "bench.events_worker", command, *arguments],
            env=environment,
            capture_output=True,
            check=True,
        )
        timings = json.loads(producer.stdout.decode().strip().splitlines()[-1])
        last_applied = wait_for_inbox(database, options.events)
        wall = time.monotonic() - wall_started
        cpu = {
            f"worker {index}": tree_cpu_seconds(process.pid) - worker_cpu[process.pid]
            for index, process in enumerate(workers)
        }
        cpu["producer"] = timings["cpu_seconds"]
        if broker_pid:
            cpu["broker"] = process_cpu_seconds(broker_pid) - broker_cpu
        if database.is_postgresql:
            cpu["PostgreSQL backends"] = backends_cpu_seconds(database) - backend_cpu
        own = sum(cpu.values())
        others = MachineCpu.read().others_since(machine_cpu, own, wall)
    finally:
        database.dispose()
    result.seconds = last_applied - timings["started"]
    result.producer_seconds = timings["finished"] - timings["started"]
    result.cpu_seconds = own
    result.other_cores = others.value
    result.processes = cpu


def wait_for_inbox(database: Database, expected: int) -> float:
    """Wait until ``expected`` inbox entries exist; return the last one's time."""
    count, progressed = -1, time.monotonic()
    while True:
        with database.read() as session:
            current = session.scalar(
                text("SELECT count(*) FROM inbox WHERE subscriber = :s"), {"s": SUBSCRIBER}
            )
        if current != count:
            count, progressed = current, time.monotonic()
        if count >= expected:
            break
        if time.monotonic() - progressed > STALL_SECONDS:
            raise RuntimeError(f"only {count} of {expected} events applied, and no progress")
        time.sleep(POLL_SECONDS)
    with database.read() as session:
        newest = session.execute(
            text("SELECT max(processed_at) FROM inbox WHERE subscriber = :s"), {"s": SUBSCRIBER}
        ).scalar()
    return parse_time(newest)


def parse_time(value: object) -> float:
    from datetime import UTC, datetime

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def verify(url: str, case: Case, options: EventsOptions, result: Result) -> None:
    """Check that every event was applied exactly once, by the inbox and the state rows."""
    database = Database(url)
    try:
        with database.read() as session:
            entries, distinct, applied_entries = session.execute(
                text(
                    "SELECT count(*), count(DISTINCT event_id), "
                    "sum(CASE WHEN outcome = 'applied' THEN 1 ELSE 0 END) "
                    "FROM inbox WHERE subscriber = :s"
                ),
                {"s": SUBSCRIBER},
            ).one()
            rows, applications = session.execute(
                text(f"SELECT count(*), coalesce(sum(applied), 0) FROM {STATE_TABLE}")
            ).one()
            unpublished, relay_batches = session.execute(
                text(
                    "SELECT count(*) - count(published_at), count(DISTINCT published_at) "
                    "FROM outbox_events"
                )
            ).one()
    finally:
        database.dispose()
    expected = options.events
    result.passed = (
        entries == distinct == applied_entries == applications == expected
        and rows == options.subjects
        and unpublished == 0
    )
    verdict = "exactly once" if result.passed else "FAILED"
    result.check = (
        f"{verdict}: {entries} inbox entries, {distinct} distinct, "
        f"{applications} applications in {rows} subject rows"
    )
    # mark_published stamps a whole batch with one time.
    if case.bus != "celery":
        result.check += f"; {relay_batches} relay batches"


def prepare_store(store: str, folder: Path, name: str) -> str:
    """Create a migrated store with the state table; return its URL."""
    if store == "sqlite":
        url = sqlite_url(folder / "store.sqlite")
    else:
        admin = Database(POSTGRES_ADMIN_URL)
        with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin_db:
            admin_db.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = f"postgresql://postgres@{LOOPBACK}:5432/{name}"
    database = Database(url)
    upgrade_to_head(database)
    database.write(lambda session: session.execute(CREATE_STATE_TABLE))
    database.dispose()
    return url


def drop_database(name: str) -> None:
    admin = Database(POSTGRES_ADMIN_URL)
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin_db:
        admin_db.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def backends_cpu_seconds(database: Database) -> float:
    """Return the CPU seconds of the PostgreSQL backends on this database, but ours."""
    if not database.is_postgresql:
        return 0.0
    with database.read() as session:
        pids = session.scalars(
            text(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).all()
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += process_cpu_seconds(int(pid))
    return total


def tree_cpu_seconds(pid: int) -> float:
    """Return the CPU seconds of process ``pid`` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            total += process_cpu_seconds(current)
        pending.extend(children.get(current, []))
    return total


def celery_worker_command(index: int) -> list[str]:
    celery = str(Path(sys.executable).with_name("celery"))
    return [
        celery,
        "-A",
        "bench.events_celery",
        "worker",
        "--pool=solo",
        "--loglevel=WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        f"--hostname=bench{index}@%h",
    ]


def start_nats(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    store = folder / "jetstream"
    log = (folder / "nats-server.log").open("wb")
    command = [NATS_SERVER, "-js", "-sd", str(store), "-p", str(port), "-a", LOOPBACK]
    process = subprocess.Popen(command, stdout=log, stderr=log)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.5):
            return process, f"nats://{LOOPBACK}:{port}"
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"nats-server did not accept connections on port {port}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_ready(folder: Path, count: int, processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while len(list(folder.iterdir())) < count:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"worker {process.args!r} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers not ready after {READY_TIMEOUT_SECONDS:.0f} s")
        time.sleep(0.05)


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def redis_client():  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis(LOOPBACK, REDIS_PORT, db=REDIS_DB)


def redis_pid() -> int:
    return int(redis_client().info("server")["process_id"])


def redis_keys() -> set[bytes]:
    return set(redis_client().keys("*"))


def delete_new_redis_keys(before: set[bytes]) -> None:
    """Delete the keys that the case's queue and kombu added to the benchmark's database."""
    client = redis_client()
    new = redis_keys() - before
    if new:
        client.delete(*new)


def format_results(results: list[Result]) -> str:
    """Return the results as a Markdown table, with ratios to Celery on the same store."""
    celery = {
        (result.case.store, result.case.workers): result.rate
        for result in results
        if result.case.bus == "celery" and result.passed
    }
    header = (
        "backend",
        "workers",
        "events",
        "seconds",
        "events/s",
        "CPU ms/event",
        "wall ms/event",
        "ratio to Celery",
        "producer s",
        "other CPU, cores",
        "check",
    )
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- | " + " | ".join(["---:"] * (len(header) - 2)) + " | --- |",
    ]
    for result in results:
        baseline = celery.get((result.case.store, result.case.workers))
        ratio = result.rate / baseline if baseline else float("nan")
        cells = (
            result.case.label,
            str(result.case.workers),
            f"{result.events:,}",
            f"{result.seconds:.2f}",
            format_value(result.rate),
            f"{result.cpu_seconds * 1000 / result.events:.2f}",
            f"{result.seconds * 1000 / result.events:.2f}",
            "n/a" if ratio != ratio else f"{ratio:.3f}",
            f"{result.producer_seconds:.2f}",
            f"{result.other_cores:.2f}",
            result.check,
        )
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("CPU seconds by process:")
    for result in results:
        parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in result.processes.items())
        lines.append(f"- {result.case.label}, {result.case.workers} worker(s): {parts}")
    return "\n".join(lines)
