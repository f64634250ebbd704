"""Workers' idle waits: until there is work, the process stops, or time is up."""

from __future__ import annotations

import asyncio


async def wait_for_work(wake: asyncio.Event, stopping: asyncio.Event, seconds: float) -> None:
    """Sleep up to ``seconds``, and return early when ``wake`` or ``stopping`` is set.

    ``wake`` is cleared first, so only a signal given after the call ends the wait.
    """
    wake.clear()
    waiters = [asyncio.create_task(wake.wait()), asyncio.create_task(stopping.wait())]
    _done, pending = await asyncio.wait(
        waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
    )
    for waiter in pending:
        waiter.cancel()
