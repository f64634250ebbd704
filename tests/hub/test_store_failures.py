"""Workers outlive a store that fails for a while, even beyond its retries."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event

from tests.harness import ErpSim, hub_settings, order_body, running_hub


async def test_workers_survive_failing_store(tmp_path: Path, erp: ErpSim) -> None:
    def fail_every_update(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            raise sqlite3.OperationalError("disk I/O error")

    async with running_hub(hub_settings(tmp_path, erp.url)) as hub:
        engine = hub.runtime.database.engine
        event.listen(engine, "before_cursor_execute", fail_every_update)
        await hub.post_webhook(order_body(9401), webhook_id="w-9401")
        await asyncio.sleep(1.5)
        event.remove(engine, "before_cursor_execute", fail_every_update)

        await hub.post_webhook(order_body(9402), webhook_id="w-9402")
        await hub.wait_drained(within=30)
        states = [(await hub.order(key))["state"] for key in ("9401", "9402")]

    assert states == ["accepted", "accepted"]
    assert {order["otherRefNum"] for order in erp.orders()} == {"#9401", "#9402"}
