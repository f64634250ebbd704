"""NATS JetStream as the event bus, through nats-py.

Layout. One stream (``ENTREPOT_EVENTS`` by default, file storage) contains every
event on ``<prefix>.<type>.<subject>``, where the event's type and its subject
(the aggregate key, split at ``/``) become subject tokens, each percent-encoded
so that ``.``, ``*``, ``>`` and spaces cannot reach NATS. The body is the
event's structured JSON. A second stream, ``<stream>_DEAD`` on
``<prefix>-dead.>``, contains dead letters. It also captures the server's
max-deliveries advisories for the main stream, which name the stream sequence
of an event whose last delivery was never acknowledged, such as when the
subscriber was killed while handling it.

Publishing. Each event is published with ``Nats-Msg-Id`` set to its id, and its
PubAck is awaited before the next event goes out. The server drops a second
message with the same id that arrives within the stream's duplicate window
(2 minutes by default), so a relay may publish an event again after a crash.
A republish after the window is stored twice, and the subscribers' inboxes
make the second copy have no effect.

Subscribing. Each `Subscription` is one durable pull consumer with explicit
acks, ``ack_wait`` and ``max_deliver`` from the subscription. Handling runs in
one lane per event subject: the events of one subject are handled one at a
time in stream order, and lanes of different subjects run concurrently, at most
the subscription's ``max_concurrency`` at a time.
While an event waits in its lane, or its handler runs, the subscriber sends
in-progress acks so the server does not redeliver it. A handler gets
``ack_wait_seconds`` to finish, and running out of time counts as `RetryLater`.

- Success (or `NothingToDo`): ack.
- `RetryLater` or any other exception: nak with a delay (the failure's
  ``retry_after``, else the subscription's ``redeliver_after_seconds``). The
  lane stays blocked until that event comes back, and the later events of its
  subject wait behind it.
- `PermanentFailure`, or a failure on the last allowed delivery: the original
  body is published to the dead-letter stream with headers that give the
  reason, then the event is terminated (``+TERM``) so it is not redelivered.

Resending. A replay or a retried dead letter publishes an event again, for one
subscriber, to the main stream on ``<prefix>.%resend.<subscriber>.<type>.<subject>``.
Only that subscriber's consumer handles it. It is a new message, so it comes
after the later events of its subject that were handled meanwhile. The workers
copy every message of the dead-letter stream into the store's event dead letters
(`entrepot.events.nats_dead_letters`), where operators list, retry and discard
them as on the database bus.

Ordering. Within one running `run_subscriber`, the events of one subject are
handled in stream order, including across `RetryLater` redeliveries. Three
cases can still reorder them. A blocked lane whose event does not come back
within its delay plus ``ack_wait`` (the event went to the dead letters through
the advisory, or to another process of the same durable consumer) is released.
After the subscriber restarts, or when an ack is lost during an outage,
redeliveries can arrive after later events of the same subject. And several
processes that run one subscription share its messages with no order between
them. Subscribers therefore compare ``sourceversion`` as well as keeping an
inbox.

Durability. JetStream acknowledges a publish once the message is written to
its file, before any fsync. nats-server fsyncs its files every two minutes by
default (the ``sync_interval`` setting), so a power loss or kernel crash can
lose the acknowledged events of that window. A killed server process loses
none of them, because the write has reached the OS page cache (the SIGKILL
test in tests/events/test_nats_bus.py checks this on 2.9.10). Production
therefore runs ``jetstream { sync_interval: always }``, which fsyncs every
write before the ack. That option came with nats-server 2.10.0: Debian's
2.9.10 rejects it as an unknown field and cannot fsync before it acknowledges.
The tests run the bus on both, the newer server with that setting. Until a
consumer has committed its effect, entrepot's database outbox, not the bus, is
the record of the event.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import NoStreamResponseError
from pydantic import ValidationError

from entrepot.config import redact_url
from entrepot.events.bus import MAX_REDELIVER_DELAY_SECONDS, Handler, Subscription
from entrepot.events.envelope import Event
from entrepot.spokes.failures import NothingToDo, PermanentFailure, RetryLater

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
DEAD_REASON_HEADER = "Entrepot-Dead-Reason"
DEAD_REMEDY_HEADER = "Entrepot-Dead-Remedy"
DEAD_SUBSCRIPTION_HEADER = "Entrepot-Subscription"
DEAD_STREAM_SEQUENCE_HEADER = "Entrepot-Stream-Sequence"
DEAD_DELIVERIES_HEADER = "Entrepot-Deliveries"

# The first token after the prefix of the events sent again to one subscriber.
# Percent-encoding never makes it, so no event type can take it.
RESEND_TOKEN = "%resend"

# Separates the subscriber's name from its event types in a consumer's description.
TYPES_MARK = "; types: "

# Attempts after the first one that connect() makes before it gives up.
INITIAL_CONNECT_RETRIES = 2

# Header values travel on one protocol line, so reasons are cut to this length.
MAX_HEADER_VALUE_CHARS = 1000

# Characters that a subscription name, used as a durable consumer name and a
# subject token, must not contain.
_NAME_FORBIDDEN = frozenset(" \t\r\n.*>/\\")


def subject_token(text: str) -> str:
    """Encode ``text`` as one NATS subject token.

    Letters, digits and ``_-~`` stay as they are and every other byte becomes
    ``%XX``, so the token never contains ``.``, ``*``, ``>`` or whitespace. An
    empty text becomes ``%``, which no other text encodes to.
    """
    if not text:
        return "%"
    return quote(text, safe="").replace(".", "%2E")


def subject_tokens(subject: str) -> str:
    """Encode an event subject such as ``order/shopify/acme/1001`` as dotted tokens."""
    return ".".join(subject_token(part) for part in subject.split("/"))


def type_tokens(event_type: str) -> str:
    """Encode an event type such as ``order.received`` as dotted tokens."""
    return ".".join(subject_token(part) for part in event_type.split("."))


@dataclass
class _Delivery:
    """One message in hand: its stream sequence, the NATS message and its event."""

    sequence: int
    msg: Msg
    event: Event


@dataclass
class _Lane:
    """The deliveries in hand of one event subject, handled one at a time."""

    subject: str
    pending: list[_Delivery] = field(default_factory=list)
    current: _Delivery | None = None
    blocker: int | None = None
    blocked_until: float = 0.0
    task: asyncio.Task[None] | None = None

    def add(self, delivery: _Delivery) -> None:
        """Insert ``delivery`` in stream order, replacing an older delivery of it."""
        sequences = [pending.sequence for pending in self.pending]
        index = bisect.bisect_left(sequences, delivery.sequence)
        if index < len(sequences) and sequences[index] == delivery.sequence:
            self.pending[index] = delivery
        else:
            self.pending.insert(index, delivery)
        if self.blocker == delivery.sequence:
            self.blocker = None

    def in_hand(self) -> list[_Delivery]:
        return self.pending if self.current is None else [self.current, *self.pending]


class NatsBus:
    """The event bus on NATS JetStream; see the module docstring for its guarantees.

    ``replicas`` is the streams' replica count (3 in a cluster).
    ``duplicate_window_seconds`` is how long the server remembers published ids.
    ``max_age_seconds`` is how long the main stream keeps an event, so a
    subscriber stopped for longer misses the older events unless they are
    published again. ``max_in_hand`` is the maximum number of unacknowledged
    messages one subscriber has in hand (it is also the consumer's
    ``max_ack_pending``), and ``fetch_batch`` the size of one pull request.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str = "ENTREPOT_EVENTS",
        subject_prefix: str = "entrepot.events",
        replicas: int = 1,
        duplicate_window_seconds: float = 120.0,
        max_age_seconds: float = 7 * 24 * 3600.0,
        dead_max_age_seconds: float = 30 * 24 * 3600.0,
        publish_timeout_seconds: float = 5.0,
        connect_timeout_seconds: float = 5.0,
        reconnect_wait_seconds: float = 1.0,
        fetch_batch: int = 32,
        max_in_hand: int = 256,
    ) -> None:
        self.url = url
        self.shown_url = redact_url(url)
        self._closing = False
        self._errors = 0
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.dead_stream = f"{stream}_DEAD"
        self.dead_prefix = f"{subject_prefix}-dead"
        self.replicas = replicas
        self.duplicate_window_seconds = duplicate_window_seconds
        self.max_age_seconds = max_age_seconds
        self.dead_max_age_seconds = dead_max_age_seconds
        self.publish_timeout_seconds = publish_timeout_seconds
        self.connect_timeout_seconds = connect_timeout_seconds
        self.reconnect_wait_seconds = reconnect_wait_seconds
        self.fetch_batch = fetch_batch
        self.max_in_hand = max_in_hand
        self._client: Client | None = None
        self._js: JetStreamContext | None = None

    # Connection and streams

    async def connect(self) -> None:
        """Connect, reconnecting forever after outages, and create or update both streams.

        Raises `RetryLater` when no server accepts a connection at ``url``.
        """
        try:
            self._client = await nats.connect(
                servers_of(self.url),
                name="entrepot",
                connect_timeout=self.connect_timeout_seconds,
                reconnect_time_wait=self.reconnect_wait_seconds,
                max_reconnect_attempts=INITIAL_CONNECT_RETRIES,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        except (nats.errors.NoServersError, OSError, TimeoutError) as error:
            raise RetryLater(
                f"NATS server at {self.shown_url} is unreachable: {error!r}"
            ) from error
        # nats-py uses one limit for the first connection and for reconnections,
        # and reads it at each attempt: once connected, reconnect without end.
        self._client.options["max_reconnect_attempts"] = -1
        self._js = self._client.jetstream(timeout=self.publish_timeout_seconds)
        await self.ensure_streams()

    async def ensure_streams(self) -> None:
        """Create both streams, or update them to this bus's configuration."""
        await self._put_stream(
            StreamConfig(
                name=self.stream,
                description="entrepot business events (CloudEvents JSON)",
                subjects=[f"{self.subject_prefix}.>"],
                storage=StorageType.FILE,
                num_replicas=self.replicas,
                duplicate_window=self.duplicate_window_seconds,
                max_age=self.max_age_seconds,
            )
        )
        await self._put_stream(
            StreamConfig(
                name=self.dead_stream,
                description=f"dead letters of the subscribers of {self.stream}",
                subjects=[
                    f"{self.dead_prefix}.>",
                    f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.*",
                ],
                storage=StorageType.FILE,
                num_replicas=self.replicas,
                duplicate_window=self.duplicate_window_seconds,
                max_age=self.dead_max_age_seconds,
            )
        )

    async def _put_stream(self, config: StreamConfig) -> None:
        js = self.jetstream()
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except nats.js.errors.NotFoundError:
            await js.add_stream(config)
            log.info("Created JetStream stream %s on %s", config.name, config.subjects)
        else:
            await js.update_stream(config)

    async def close(self) -> None:
        """Flush what is buffered and close the connection."""
        client, self._client, self._js = self._client, None, None
        self._closing = True
        if client is not None and not client.is_closed:
            # During an outage the connection may already be lost: close it anyway.
            with contextlib.suppress(nats.errors.Error, OSError):
                await client.drain()
            with contextlib.suppress(nats.errors.Error, OSError):
                await client.close()

    def jetstream(self) -> JetStreamContext:
        """Return the JetStream context of the connection."""
        if self._js is None:
            raise RuntimeError("NatsBus is not connected: call connect() first")
        return self._js

    async def _on_error(self, error: Exception) -> None:
        # One warning per outage: nats-py reports each failed reconnection attempt.
        self._errors += 1
        if self._errors == 1:
            log.warning("NATS connection error on %s: %r", self.shown_url, error)
        else:
            log.debug("NATS connection error on %s: %r", self.shown_url, error)

    async def _on_disconnected(self) -> None:
        if self._closing:
            log.debug("Disconnected from NATS at %s.", self.shown_url)
            return
        log.warning("Disconnected from NATS at %s; reconnecting", self.shown_url)

    async def _on_reconnected(self) -> None:
        log.info(
            "Reconnected to NATS at %s after %d connection errors.", self.shown_url, self._errors
        )
        self._errors = 0

    # Publishing

    def subject_for(self, event: Event) -> str:
        """Return the NATS subject of ``event`` in the main stream."""
        return f"{self.subject_prefix}.{type_tokens(event.type)}.{subject_tokens(event.subject)}"

    async def publish(self, events: Sequence[Event]) -> None:
        """Publish ``events`` in order, each acknowledged by the stream before the next.

        Raises `RetryLater` (``ambiguous`` where the server may have stored the
        event) when the server is unreachable or does not acknowledge in time.
        The events before the failed one are stored. Raises `PermanentFailure`
        for an event larger than the server's maximum payload.
        """
        js = self.jetstream()
        for event in events:
            await self._publish_one(js, event, self.subject_for(event), event.id)

    def resend_subject(self, subscriber: str, event: Event) -> str:
        """Return the subject on which ``event`` goes again to ``subscriber`` alone."""
        return (
            f"{self.resend_prefix(subscriber)}.{type_tokens(event.type)}"
            f".{subject_tokens(event.subject)}"
        )

    def resend_prefix(self, subscriber: str) -> str:
        """Return the subject prefix of the events sent again to ``subscriber``."""
        return f"{self.subject_prefix}.{RESEND_TOKEN}.{subscriber}"

    async def resend(self, subscriber: str, events: Sequence[Event], *, key: str) -> None:
        """Publish ``events`` again, in order, for ``subscriber`` alone.

        They are stored in the main stream on the subscriber's resend subject, which
        no other subscriber handles, each with ``Nats-Msg-Id`` set to
        ``<key>/<subscriber>/<event id>``: a resend repeated with the same key
        within the duplicate window is stored once. Raises as `publish` does.
        """
        check_subscription_name(subscriber)
        js = self.jetstream()
        for event in events:
            subject = self.resend_subject(subscriber, event)
            await self._publish_one(js, event, subject, f"{key}/{subscriber}/{event.id}")

    async def _publish_one(
        self, js: JetStreamContext, event: Event, subject: str, msg_id: str
    ) -> None:
        client = self._client
        if client is None or client.is_closed:
            raise RetryLater(f"NATS connection to {self.shown_url} is closed")
        if client.is_reconnecting:
            raise RetryLater(f"NATS server at {self.shown_url} is unreachable; reconnecting")
        try:
            ack = await js.publish(
                subject,
                event.to_json(),
                timeout=self.publish_timeout_seconds,
                stream=self.stream,
                headers={MSG_ID_HEADER: msg_id},
            )
        except nats.errors.MaxPayloadError as error:
            raise PermanentFailure(
                f"event {event.id} is larger than the NATS server's max_payload",
                remedy="raise max_payload on the server or make the event smaller",
            ) from error
        except nats.errors.TimeoutError as error:
            raise RetryLater(
                f"publish of event {event.id} timed out after "
                f"{self.publish_timeout_seconds} s without a JetStream ack",
                ambiguous=True,
            ) from error
        except nats.errors.NoRespondersError as error:
            raise RetryLater(
                f"no JetStream stream responded for event {event.id} "
                f"(is stream {self.stream} present?)"
            ) from error
        except nats.errors.Error as error:
            raise RetryLater(f"publish of event {event.id} failed: {error!r}") from error
        if ack.duplicate:
            log.debug("Event %s was already in stream %s at %s", event.id, ack.stream, ack.seq)

    # Subscribing

    async def run_subscriber(
        self, subscription: Subscription, handler: Handler, stopping: Callable[[], bool]
    ) -> None:
        """Deliver the subscription's events to ``handler`` until ``stopping()``.

        Server outages do not end it: it keeps pulling once the client has
        reconnected. It raises `ValueError` for a subscription name that cannot
        name a durable consumer, and `RuntimeError` when the server rejects the
        consumer's configuration.
        """
        check_subscription_name(subscription.name)
        run = _SubscriberRun(self, subscription, handler, stopping)
        await run.run()

    def consumer_config(
        self, subscription: Subscription, types: frozenset[str] | None = None
    ) -> ConsumerConfig:
        """Build the configuration of the durable pull consumer of ``subscription``,
        taking ``types`` (by default the subscription's). The description records
        them, so that other processes of the subscription can read them."""
        types = subscription.types if types is None else types
        filters = sorted(f"{self.subject_prefix}.{type_tokens(t)}.>" for t in types)
        filters.append(f"{self.resend_prefix(subscription.name)}.>")
        listed = ",".join(sorted(types))
        config = ConsumerConfig(
            durable_name=subscription.name,
            description=f"entrepot subscriber {subscription.name}{TYPES_MARK}{listed}",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=subscription.ack_wait_seconds,
            max_deliver=subscription.max_deliveries,
            max_ack_pending=self.max_in_hand,
        )
        if self._server_has_filter_subjects():
            config.filter_subjects = filters
        else:
            # Before 2.10 a consumer has at most one filter (and the server ignores
            # filter_subjects), so it takes the whole stream and the subscriber
            # acknowledges the events of other types, and those sent again to
            # other subscribers, without handling them.
            config.filter_subject = f"{self.subject_prefix}.>"
        return config

    def _server_has_filter_subjects(self) -> bool:
        if self._client is None:
            return False
        version = self._client.connected_server_version
        return (version.major, version.minor) >= (2, 10)

    def dead_subject(self, subscription: Subscription, event_type: str, subject: str) -> str:
        """Return the NATS subject of a dead letter of ``subscription``."""
        return (
            f"{self.dead_prefix}.{subscription.name}.{type_tokens(event_type)}"
            f".{subject_tokens(subject)}"
        )


async def fetch_messages(
    pull: JetStreamContext.PullSubscription, batch: int, wait_seconds: float
) -> list[Msg]:
    """Pull up to ``batch`` messages, waiting at most ``wait_seconds``; none when none
    came in time."""
    try:
        return await pull.fetch(batch, timeout=wait_seconds)
    except (nats.errors.TimeoutError, TimeoutError):
        # nats-py raises either kind when no message came. On Python 3.11 a cancel
        # that comes as the wait ends can arrive as a timeout, so pass it on.
        task = asyncio.current_task()
        if task is not None and task.cancelling() > 0:
            raise asyncio.CancelledError from None
        return []


def servers_of(url: str) -> list[str]:
    """Split a ``bus_url`` into its servers: one URL, or several separated by commas."""
    return [server.strip() for server in url.split(",") if server.strip()]


def check_subscription_name(name: str) -> None:
    """Raise `ValueError` unless ``name`` can be a durable consumer name and a token."""
    bad = sorted(set(name) & _NAME_FORBIDDEN)
    if not name or bad:
        raise ValueError(
            f"invalid subscription name {name!r}: it must be non-empty and contain none "
            f"of {bad or sorted(_NAME_FORBIDDEN)!r}"
        )


def _header_value(text: str) -> str:
    return " ".join(text.split())[:MAX_HEADER_VALUE_CHARS]


class _SubscriberRun:
    """One `NatsBus.run_subscriber` call: its consumer, lanes and background tasks."""

    def __init__(
        self,
        bus: NatsBus,
        subscription: Subscription,
        handler: Handler,
        stopping: Callable[[], bool],
    ) -> None:
        self.bus = bus
        self.subscription = subscription
        self.handler = handler
        self.stopping = stopping
        self.lanes: dict[str, _Lane] = {}
        self.side_tasks: set[asyncio.Task[None]] = set()
        self.room = asyncio.Event()
        self.pull: JetStreamContext.PullSubscription | None = None
        self.fetch_wait_seconds = 1.0
        self.heartbeat_seconds = max(0.2, subscription.ack_wait_seconds / 3)
        self.slots = asyncio.Semaphore(subscription.max_concurrency or bus.max_in_hand)
        # Events in hand of this process outside blocked lanes. A stop or a crash
        # costs each of them one delivery, so a subscriber with few slots keeps few.
        # The events that wait in a blocked lane do not count, so that one failing
        # subject does not hold up the others.
        self.in_hand_limit = bus.max_in_hand
        if subscription.max_concurrency:
            self.in_hand_limit = min(bus.max_in_hand, 2 * subscription.max_concurrency)
        self.shared_types = subscription.types
        self.warned_types: set[str] = set()
        self.resend_any = f"{bus.subject_prefix}.{RESEND_TOKEN}."
        self.resend_own = f"{bus.resend_prefix(subscription.name)}."

    async def run(self) -> None:
        await self._bind()
        heartbeat = asyncio.create_task(self._heartbeat())
        cancelled = False
        try:
            await self._fetch_loop()
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            heartbeat.cancel()
            await self._shut_down(graceful=not cancelled)

    async def _bind(self) -> None:
        """Create or update the consumer, taking the types that any process of the
        subscription recorded on it as well as this process's."""
        js = self.bus.jetstream()
        self.shared_types = self.subscription.types | await self._recorded_types()
        config = self.bus.consumer_config(self.subscription, self.shared_types)
        try:
            await js.add_consumer(self.bus.stream, config)
        except nats.js.errors.BadRequestError as error:
            raise RuntimeError(
                f"JetStream rejected the consumer {self.subscription.name!r} on stream "
                f"{self.bus.stream}: {error.description}. If it exists with another "
                "filter, delete it so that it is created again."
            ) from error
        self.pull = await js.pull_subscribe_bind(self.subscription.name, self.bus.stream)

    async def _recorded_types(self) -> frozenset[str]:
        """Return the event types recorded on the consumer, none if it does not exist."""
        try:
            info = await self.bus.jetstream().consumer_info(
                self.bus.stream, self.subscription.name
            )
        except nats.js.errors.NotFoundError:
            return frozenset()
        _, mark, listed = (info.config.description or "").partition(TYPES_MARK)
        return frozenset(filter(None, listed.split(","))) if mark else frozenset()

    async def _fetch_loop(self) -> None:
        failing = False
        while not self.stopping():
            room = min(
                self.in_hand_limit - self._count_in_hand(blocked=False),
                self.bus.max_in_hand - self._count_in_hand(blocked=True),
            )
            if room <= 0:
                self.room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.room.wait(), self.fetch_wait_seconds)
                continue
            try:
                msgs = await self._fetch(min(self.bus.fetch_batch, room))
            except (nats.errors.Error, OSError) as error:
                if not failing:
                    log.warning(
                        "Subscriber %s cannot fetch from %s: %r; retrying",
                        self.subscription.name,
                        self.bus.stream,
                        error,
                    )
                failing = True
                await asyncio.sleep(self.bus.reconnect_wait_seconds)
                continue
            if failing:
                log.info("Subscriber %s is fetching again", self.subscription.name)
                failing = False
            skipped: list[tuple[Msg, Event]] = []
            for msg in msgs:
                try:
                    self._dispatch(msg, skipped)
                except Exception:
                    # The message stays unacknowledged, so the server redelivers it
                    # after ack_wait, and the other messages go on.
                    log.exception(
                        "Subscriber %s cannot dispatch message %s",
                        self.subscription.name,
                        msg.reply,
                    )
            if skipped:
                await self._skip_all(skipped)

    async def _fetch(self, batch: int) -> list[Msg]:
        if self.pull is None:
            await self._bind()
        assert self.pull is not None
        try:
            return await fetch_messages(self.pull, batch, self.fetch_wait_seconds)
        except nats.js.errors.NotFoundError:
            # The consumer or its stream is gone (deleted by an operator, or a server
            # that lost its store): create both again on the next fetch.
            self.pull = None
            await self.bus.ensure_streams()
            raise

    def _count_in_hand(self, *, blocked: bool) -> int:
        """Count the events in hand, those of blocked lanes too when ``blocked``."""
        lanes = [lane for lane in self.lanes.values() if blocked or lane.blocker is None]
        return sum(len(lane.in_hand()) for lane in lanes) + len(self.side_tasks)

    def _dispatch(self, msg: Msg, skipped: list[tuple[Msg, Event]]) -> None:
        """Put the message in its subject's lane, or in ``skipped`` when this process
        does not take its type."""
        if msg.subject.startswith(self.resend_any) and not msg.subject.startswith(self.resend_own):
            self._side_task(self._settle(msg.ack, msg, "ack"))
            return
        try:
            event = Event.from_json(msg.data)
        except ValidationError as error:
            reason = f"the message is not a valid event: {error}"
            self._side_task(self._dead_letter(msg, None, reason, remedy=None))
            return
        if event.type not in self.subscription.types:
            skipped.append((msg, event))
            return
        self._add_to_lane(msg, event)

    def _add_to_lane(self, msg: Msg, event: Event) -> None:
        lane = self.lanes.get(event.subject)
        if lane is None:
            lane = self.lanes[event.subject] = _Lane(event.subject)
        lane.add(_Delivery(msg.metadata.sequence.stream, msg, event))
        self._start(lane)

    async def _skip_all(self, skipped: list[tuple[Msg, Event]]) -> None:
        """Settle events of types this process was not configured for.

        The consumer records the types of every process of the subscription. An
        event of a type that another process takes is handled here as well, because
        the server gives it to whichever process pulls first and acknowledging it
        unhandled would lose it. The recorded types are read again first when the
        batch has a type not known to be shared: a process may have just started.
        """
        shared = self.shared_types
        if any(event.type not in shared for _, event in skipped):
            try:
                shared = self.shared_types = self.subscription.types | await self._recorded_types()
            except nats.errors.Error:
                # Handle this batch rather than risk losing it for another process.
                shared = shared | {event.type for _, event in skipped}
        for msg, event in skipped:
            if event.type not in shared:
                self._side_task(self._settle(msg.ack, msg, "ack"))
                continue
            if event.type not in self.warned_types:
                self.warned_types.add(event.type)
                log.warning(
                    "Subscriber %s handles %s events too, because another of its "
                    "processes takes them. Give every process the same types.",
                    self.subscription.name,
                    event.type,
                )
            self._add_to_lane(msg, event)

    def _start(self, lane: _Lane) -> None:
        if lane.blocker is None and (lane.task is None or lane.task.done()):
            lane.task = asyncio.create_task(self._run_lane(lane))

    def _side_task(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        self.side_tasks.add(task)
        task.add_done_callback(self.side_tasks.discard)

    async def _run_lane(self, lane: _Lane) -> None:
        while lane.pending and lane.blocker is None and not self.stopping():
            lane.current = lane.pending.pop(0)
            try:
                await self._handle(lane, lane.current)
            finally:
                lane.current = None
                self.room.set()
        # No await between the loop's last check and here, so a delivery added
        # meanwhile either was seen by the loop or finds the task done.
        lane.task = None
        if not lane.pending and lane.blocker is None:
            self.lanes.pop(lane.subject, None)

    async def _handle(self, lane: _Lane, delivery: _Delivery) -> None:
        """Handle one delivery once a slot is free; put it back if stopping by then."""
        async with self.slots:
            if self.stopping():
                lane.pending.insert(0, delivery)
                return
            await self._handle_now(lane, delivery)

    async def _handle_now(self, lane: _Lane, delivery: _Delivery) -> None:
        subscription = self.subscription
        msg, event = delivery.msg, delivery.event
        delay = subscription.redeliver_after_seconds
        try:
            async with asyncio.timeout(subscription.ack_wait_seconds):
                await self.handler(event)
        except NothingToDo:
            await self._settle(msg.ack, msg, "ack")
            return
        except PermanentFailure as failure:
            await self._dead_letter(msg, event, failure.reason, remedy=failure.remedy)
            return
        except RetryLater as failure:
            if failure.retry_after is not None:
                delay = failure.retry_after
            reason = failure.reason
        except TimeoutError:
            reason = f"the handler did not finish within {subscription.ack_wait_seconds} s"
        except Exception as error:
            log.exception(
                "Subscriber %s failed on event %s (%s)", subscription.name, event.id, event.type
            )
            reason = f"the handler raised {error!r}"
        else:
            await self._settle(msg.ack, msg, "ack")
            return
        await self._retry(lane, delivery, reason, delay)

    async def _retry(self, lane: _Lane, delivery: _Delivery, reason: str, delay: float) -> None:
        """Nak the delivery and block its lane, or dead-letter it after its last delivery."""
        subscription = self.subscription
        msg, event = delivery.msg, delivery.event
        attempt = msg.metadata.num_delivered
        if 0 < subscription.max_deliveries <= attempt:
            reason = f"failed on all {attempt} deliveries; the last failure: {reason}"
            await self._dead_letter(msg, event, reason, remedy=None)
            return
        delay = min(delay, MAX_REDELIVER_DELAY_SECONDS)
        log.info(
            "Subscriber %s redelivers event %s of %s in %.1f s (delivery %d of %d): %s",
            subscription.name,
            event.id,
            event.subject,
            delay,
            attempt,
            subscription.max_deliveries,
            reason,
        )
        lane.blocker = delivery.sequence
        lane.blocked_until = time.monotonic() + delay + subscription.ack_wait_seconds
        await self._settle(lambda: msg.nak(delay=delay), msg, "nak")

    async def _dead_letter(
        self, msg: Msg, event: Event | None, reason: str, *, remedy: str | None
    ) -> None:
        """Publish the message's body to the dead-letter stream, then terminate it.

        A failed publish is tried again (the message stays in hand, kept alive by
        in-progress acks) until it succeeds or the subscriber stops.
        """
        subscription = self.subscription
        metadata = msg.metadata
        sequence = metadata.sequence.stream
        headers = {
            MSG_ID_HEADER: f"{subscription.name}/{sequence}",
            DEAD_REASON_HEADER: _header_value(reason),
            DEAD_SUBSCRIPTION_HEADER: subscription.name,
            DEAD_STREAM_SEQUENCE_HEADER: str(sequence),
            DEAD_DELIVERIES_HEADER: str(metadata.num_delivered),
        }
        if remedy:
            headers[DEAD_REMEDY_HEADER] = _header_value(remedy)
        if event is None:
            subject = f"{self.bus.dead_prefix}.{subscription.name}.invalid"
        else:
            subject = self.bus.dead_subject(subscription, event.type, event.subject)
        js = self.bus.jetstream()
        while True:
            try:
                await js.publish(
                    subject,
                    msg.data,
                    timeout=self.bus.publish_timeout_seconds,
                    stream=self.bus.dead_stream,
                    headers=headers,
                )
                break
            except nats.errors.Error as error:
                if self.stopping():
                    log.warning(
                        "Dead letter of stream sequence %d not stored before stopping: %r",
                        sequence,
                        error,
                    )
                    return
                log.warning(
                    "Cannot store dead letter of stream sequence %d yet: %r", sequence, error
                )
                if isinstance(error, nats.errors.NoRespondersError | NoStreamResponseError):
                    # The dead-letter stream is gone: create it again.
                    with contextlib.suppress(nats.errors.Error):
                        await self.bus.ensure_streams()
                await asyncio.sleep(self.bus.reconnect_wait_seconds)
        log.warning(
            "Subscriber %s sent stream sequence %d (event %s) to %s: %s",
            subscription.name,
            sequence,
            event.id if event else "invalid",
            self.bus.dead_stream,
            reason,
        )
        await self._settle(msg.term, msg, "term")

    async def _settle(self, send: Callable[[], Awaitable[None]], msg: Msg, kind: str) -> None:
        try:
            await send()
        except nats.errors.Error as error:
            # The server redelivers the message after ack_wait.
            log.warning(
                "Subscriber %s could not send %s for stream sequence %d: %r",
                self.subscription.name,
                kind,
                msg.metadata.sequence.stream,
                error,
            )

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self._beat()
            except Exception:
                log.exception("Subscriber %s heartbeat failed", self.subscription.name)

    async def _beat(self) -> None:
        """Release overdue blocked lanes, send in-progress acks for what is in hand, and
        read again the types that the subscription's processes recorded."""
        with contextlib.suppress(nats.errors.Error):
            self.shared_types = self.subscription.types | await self._recorded_types()
        now = time.monotonic()
        for lane in list(self.lanes.values()):
            if lane.blocker is not None and now > lane.blocked_until:
                log.warning(
                    "Subscriber %s: stream sequence %d of %s did not come back; "
                    "handling the later events of that subject",
                    self.subscription.name,
                    lane.blocker,
                    lane.subject,
                )
                lane.blocker = None
                self._start(lane)
            for delivery in lane.in_hand():
                await self._progress(delivery.msg)

    async def _progress(self, msg: Msg) -> None:
        # During an outage this fails for every message in hand, and the fetch
        # loop already logs the outage once.
        with contextlib.suppress(nats.errors.Error):
            await msg.in_progress()

    async def _shut_down(self, *, graceful: bool) -> None:
        tasks = [lane.task for lane in self.lanes.values() if lane.task is not None]
        tasks.extend(self.side_tasks)
        if not graceful:
            for task in tasks:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if graceful:
            # Offer the unstarted events of unblocked lanes again at once, in stream
            # order, and leave a blocked lane's events to ack_wait so that they do
            # not overtake the event they wait for.
            for lane in self.lanes.values():
                if lane.blocker is None:
                    for delivery in lane.pending:
                        await self._settle(delivery.msg.nak, delivery.msg, "nak")
        self.lanes.clear()
        if self.pull is not None:
            with contextlib.suppress(nats.errors.Error):
                await self.pull.unsubscribe()


__all__ = ["NatsBus", "subject_token", "subject_tokens", "type_tokens"]
