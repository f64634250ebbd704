"""Workers' idle waits: until there is work, the process stops, or time is up."""

from __future__ import annotations

import asyncio


async def wait_for_work(wake: asyncio.Event, stopping: asyncio.Event, seconds: float) -> None:
    """Sleep up to ``seconds``, and return early when ``wake`` or ``stopping`` is set.

    ``wake`` is cleared when the wait ends. A signal given while the worker was busy
    therefore ends the next wait at once, because the work it announces may have
    been committed after the worker last read the store.
    """
    waiters = [asyncio.create_task(wake.wait()), asyncio.create_task(stopping.wait())]
    _done, pending = await asyncio.wait(
        waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
    )
    for waiter in pending:
        waiter.cancel()
    wake.clear()
