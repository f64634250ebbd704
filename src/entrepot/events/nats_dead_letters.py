"""Keeping the dead letters of the NATS bus in the store.

The subscribers of the NATS bus put their dead letters in the dead-letter
stream (see `entrepot.events.nats_bus`), and the server adds its max-deliveries
advisories there. The keeper reads that stream through one durable consumer,
shared by every worker process, and copies each message into the store's event
dead letters, where operators list, retry and discard them as on the database
bus. It acknowledges a message only after the copy is committed. Both kinds of
message name the subscriber and the event's stream sequence, which make the
row's ``source_key``, so a message copied twice, or a dead letter that also
produced an advisory, makes one row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError
from sqlalchemy.orm import Session

from entrepot.events.envelope import Event
from entrepot.events.nats_bus import (
    DEAD_DELIVERIES_HEADER,
    DEAD_REASON_HEADER,
    DEAD_REMEDY_HEADER,
    DEAD_STREAM_SEQUENCE_HEADER,
    DEAD_SUBSCRIPTION_HEADER,
    NatsBus,
    fetch_messages,
)
from entrepot.store.database import Database
from entrepot.store.inserts import insert_if_absent
from entrepot.store.tables import EventDeadLetter
from entrepot.store.types import utc_now

log = logging.getLogger(__name__)

KEEPER_NAME = "entrepot-dead-letter-keeper"
ADVISORY_PREFIX = "$JS.EVENT.ADVISORY."

# Seconds before a message whose copy failed is offered again.
RETRY_SECONDS = 5.0


class NatsDeadLetterKeeper:
    """Copies the messages of ``bus``'s dead-letter stream into ``database``."""

    def __init__(self, bus: NatsBus, database: Database, *, fetch_batch: int = 32) -> None:
        self._bus = bus
        self._database = database
        self._fetch_batch = fetch_batch
        self._pull: JetStreamContext.PullSubscription | None = None

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Copy dead letters until ``stopping()``. An outage of the server pauses it."""
        log.info("Dead-letter keeper started on %s.", self._bus.dead_stream)
        failing = False
        while not stopping():
            try:
                msgs = await self._fetch()
            except (nats.errors.Error, OSError) as error:
                if not failing:
                    log.warning("Dead-letter keeper failed to fetch: %r. Retrying.", error)
                failing = True
                with contextlib.suppress(nats.errors.Error):
                    await self._bus.ensure_streams()
                await asyncio.sleep(self._bus.reconnect_wait_seconds)
                continue
            failing = False
            for msg in msgs:
                await self._keep(msg)
        await self._unsubscribe()
        log.info("Dead-letter keeper stopped.")

    async def _fetch(self) -> list[Msg]:
        if self._pull is None:
            self._pull = await self._bind()
        try:
            return await fetch_messages(self._pull, self._fetch_batch, 1.0)
        except nats.js.errors.NotFoundError:
            self._pull = None
            raise

    async def _bind(self) -> JetStreamContext.PullSubscription:
        js = self._bus.jetstream()
        config = ConsumerConfig(
            durable_name=KEEPER_NAME,
            description="copies dead letters into the entrepot store",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=60.0,
            max_deliver=-1,
        )
        await js.add_consumer(self._bus.dead_stream, config)
        return await js.pull_subscribe_bind(KEEPER_NAME, self._bus.dead_stream)

    async def _unsubscribe(self) -> None:
        if self._pull is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._pull.unsubscribe()
            self._pull = None

    async def _keep(self, msg: Msg) -> None:
        """Copy one message into the store, then acknowledge it."""
        try:
            values = await self._row_of(msg)
            inserted = await asyncio.to_thread(self._database.write, lambda s: _insert(s, values))
        except Exception:
            log.exception(
                "Dead-letter keeper could not copy stream sequence %d; trying again in %.0f s.",
                msg.metadata.sequence.stream,
                RETRY_SECONDS,
            )
            await _settle(msg, delay=RETRY_SECONDS)
            return
        if inserted:
            log.info(
                "Event %s kept as a dead letter of subscriber %s: %s",
                values["event_id"] or "(not a valid event)",
                values["subscriber"],
                values["reason"],
            )
        await _settle(msg)

    async def _row_of(self, msg: Msg) -> dict[str, Any]:
        if msg.subject.startswith(ADVISORY_PREFIX):
            return await self._row_of_advisory(msg)
        headers = msg.headers or {}
        reason = headers.get(DEAD_REASON_HEADER, "no reason given")
        remedy = headers.get(DEAD_REMEDY_HEADER)
        if remedy:
            reason = f"{reason}. Remedy: {remedy}"
        return _row(
            subscriber=headers.get(DEAD_SUBSCRIPTION_HEADER, ""),
            sequence=headers.get(
                DEAD_STREAM_SEQUENCE_HEADER, f"dead-{msg.metadata.sequence.stream}"
            ),
            deliveries=int(headers.get(DEAD_DELIVERIES_HEADER, "0") or 0),
            body=msg.data,
            reason=reason,
            stream=self._bus.stream,
        )

    async def _row_of_advisory(self, msg: Msg) -> dict[str, Any]:
        advisory = json.loads(msg.data)
        stream, sequence = advisory["stream"], int(advisory["stream_seq"])
        deliveries = int(advisory.get("deliveries", 0))
        reason = (
            f"none of its {deliveries} deliveries was acknowledged: the subscriber stopped "
            "or was killed while handling it"
        )
        try:
            original = await self._bus.jetstream().get_msg(stream, sequence)
            body = original.data or b""
        except nats.js.errors.NotFoundError:
            body = b""
            reason += f"; the event is no longer in stream {stream}"
        return _row(
            subscriber=advisory["consumer"],
            sequence=str(sequence),
            deliveries=deliveries,
            body=body,
            reason=reason,
            stream=stream,
        )


def _row(
    *, subscriber: str, sequence: str, deliveries: int, body: bytes, reason: str, stream: str
) -> dict[str, Any]:
    """Build the event dead letter of one message. A body that is not a valid event
    is kept as text under ``unreadable``, with an empty event id, type and subject."""
    try:
        event = Event.from_json(body)
    except ValidationError as error:
        envelope: dict[str, Any] = {"unreadable": body.decode("utf-8", errors="replace")}
        event_id = event_type = subject = ""
        reason = f"{reason}; the message is not a valid event: {error.errors()[0]['msg']}"
    else:
        envelope = event.model_dump(mode="json", exclude_none=True)
        event_id, event_type, subject = event.id, event.type, event.subject
    return {
        "subscriber": subscriber,
        "event_id": event_id,
        "subject": subject,
        "type": event_type,
        "envelope": envelope,
        "reason": reason,
        "attempts": deliveries,
        "status": "open",
        "created_at": utc_now(),
        "source_key": f"nats:{stream}/{subscriber}/{sequence}",
    }


def _insert(session: Session, values: dict[str, Any]) -> bool:
    table = EventDeadLetter.__table__
    return insert_if_absent(session, table, values, ["source_key"])  # type: ignore[arg-type]


async def _settle(msg: Msg, *, delay: float | None = None) -> None:
    try:
        if delay is None:
            await msg.ack()
        else:
            await msg.nak(delay=delay)
    except nats.errors.Error as error:
        # The server offers the message again after ack_wait.
        log.warning(
            "Dead-letter keeper failed to settle stream sequence %d: %r",
            msg.metadata.sequence.stream,
            error,
        )
