"""Group commit of receipts: the webhooks that arrive together share one commit.

Each request still waits until the transaction holding its receipt has
committed, so an acknowledged webhook is as durable as with a commit of its own.
A burst of webhooks costs one transaction instead of one each.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

from entrepot.spokes.protocols import WebhookEnvelope
from entrepot.store.database import Database
from entrepot.store.receipts import StoredReceipt, add_receipt

log = logging.getLogger(__name__)

MAX_BATCH = 200  # receipts in one transaction at most


@dataclass
class _Waiting:
    envelope: WebhookEnvelope
    body: bytes
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[StoredReceipt]


class ReceiptWriter:
    """Commits the receipts of concurrent requests from one thread of its own."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._waiting: list[_Waiting] = []
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    async def store(self, envelope: WebhookEnvelope, body: bytes) -> StoredReceipt:
        """Store a receipt; return once the transaction holding it has committed."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(envelope, body, loop, loop.create_future())
        with self._condition:
            if self._closed:
                raise RuntimeError("the receipt writer is closed")
            self._waiting.append(waiting)
            self._start_thread()
            self._condition.notify()
        return await waiting.future

    def close(self) -> None:
        """Commit what is waiting, then stop the thread."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        if self._thread is not None:
            self._thread.join()

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="receipt-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._waiting and not self._closed:
                    self._condition.wait()
                if not self._waiting:
                    return
                batch = self._waiting[:MAX_BATCH]
                del self._waiting[:MAX_BATCH]
            self._commit(batch)

    def _commit(self, batch: list[_Waiting]) -> None:
        try:
            stored = self._database.write(
                lambda session: [add_receipt(session, w.envelope, w.body) for w in batch]
            )
        except Exception as exc:
            log.exception("Storing %d receipts failed; their requests get an error.", len(batch))
            for waiting in batch:
                waiting.loop.call_soon_threadsafe(_fail, waiting.future, exc)
            return
        for waiting, result in zip(batch, stored, strict=True):
            waiting.loop.call_soon_threadsafe(_succeed, waiting.future, result)


def _succeed(future: asyncio.Future[StoredReceipt], result: StoredReceipt) -> None:
    # A request whose client went away was cancelled; its receipt is stored anyway.
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[StoredReceipt], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
