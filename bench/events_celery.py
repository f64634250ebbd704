"""The Celery baseline of the events benchmark: one task that applies one event.

The task runs the same `apply_event` as the entrepot subscribers, into the same kind
of store, with ``acks_late`` so that a worker that dies mid-task leaves the message
to be delivered again, as the buses do. The environment sets the broker
(``BENCH_EVENTS_BROKER``), the queue (``BENCH_EVENTS_QUEUE``), the store's URL
(``BENCH_EVENTS_STORE``) and the folder where each worker creates a file once it
is ready (``BENCH_EVENTS_READY_DIR``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_ready

from bench.events_worker import apply_event
from entrepot.events.envelope import Event
from entrepot.store.database import Database

QUEUE = os.environ.get("BENCH_EVENTS_QUEUE", "entrepot-bench-events")

app = Celery("bench_events", broker=os.environ.get("BENCH_EVENTS_BROKER", ""))
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)

_database: Database | None = None


def database() -> Database:
    """Return the store of this worker process, opened at its first task."""
    global _database
    if _database is None:
        _database = Database(os.environ["BENCH_EVENTS_STORE"])
    return _database


@app.task(name="bench.apply_event")
def apply_event_task(envelope: dict[str, Any]) -> None:
    apply_event(database(), Event.model_validate(envelope))


@worker_ready.connect
def _announce_ready(sender: Any = None, **_kwargs: Any) -> None:
    folder = os.environ.get("BENCH_EVENTS_READY_DIR")
    if folder:
        Path(folder, f"celery-{os.getpid()}").touch()
