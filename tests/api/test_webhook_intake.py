"""Webhook intake under concurrency: every acknowledgement is committed, repeats count."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select

from entrepot.store.tables import Receipt
from tests.harness import hub_settings, order_body, running_hub

NOWHERE = "http://127.0.0.1:9"


async def test_concurrent_webhooks_all_stored(tmp_path: Path) -> None:
    async with running_hub(hub_settings(tmp_path, NOWHERE), workers=False) as hub:
        responses = await asyncio.gather(
            *(hub.post_webhook(order_body(n), webhook_id=f"w-{n}") for n in range(60_000, 60_050))
        )
        with hub.runtime.database.read() as session:
            stored = session.scalar(select(func.count()).select_from(Receipt))

    assert [response.status_code for response in responses] == [200] * 50
    assert len({response.json()["correlation_id"] for response in responses}) == 50
    assert stored == 50


async def test_concurrent_repeats_stored_once(tmp_path: Path) -> None:
    body = json.dumps(order_body(60_100)).encode()
    async with running_hub(hub_settings(tmp_path, NOWHERE), workers=False) as hub:
        responses = await asyncio.gather(
            *(hub.post_webhook(body, webhook_id="w-same") for _ in range(50))
        )
        with hub.runtime.database.read() as session:
            receipts = list(session.scalars(select(Receipt)))

    assert [response.status_code for response in responses] == [200] * 50
    assert sorted(response.json()["duplicate"] for response in responses) == [False] + [True] * 49
    assert len({response.json()["correlation_id"] for response in responses}) == 1
    assert len(receipts) == 1
    assert receipts[0].duplicate_count == 49


async def test_failed_commit_acknowledges_nothing(tmp_path: Path) -> None:
    def fail_inserts(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO RECEIPTS"):
            raise sqlite3.OperationalError("disk I/O error")

    settings = hub_settings(tmp_path, NOWHERE)
    async with running_hub(settings, workers=False, raise_app_exceptions=False) as hub:
        event.listen(hub.runtime.database.engine, "before_cursor_execute", fail_inserts)
        failed = await hub.post_webhook(order_body(60_200), webhook_id="w-fail")
        event.remove(hub.runtime.database.engine, "before_cursor_execute", fail_inserts)
        retried = await hub.post_webhook(order_body(60_200), webhook_id="w-fail")
        with hub.runtime.database.read() as session:
            stored = session.scalar(select(func.count()).select_from(Receipt))

    assert failed.status_code == 500
    assert retried.status_code == 200
    assert retried.json()["duplicate"] is False
    assert stored == 1
