"""Signed HTTP webhooks to the event subscribers configured under ``[events]``.

Each event is POSTed in CloudEvents' structured JSON form
(``application/cloudevents+json``) with three headers:

- ``X-Entrepot-Event-Id``: the event's id, by which the subscriber drops a second
  delivery of the same event (after a retry, a redelivery or a replay).
- ``X-Entrepot-Timestamp``: when the request was signed, in Unix seconds.
- ``X-Entrepot-Signature``: ``v1=`` and the hex HMAC-SHA256, keyed with the
  subscriber's secret, of ``<timestamp>.<body>``.

A subscriber checks a request with `verify_signature`, which also rejects a
timestamp too far from its own clock, so that a captured request cannot be sent
again later. The response decides what happens to the event. A 2xx status
means it is done. A 429 or 5xx status, a timeout or a failed connection mean it
is sent again later, after ``Retry-After`` when the subscriber sends one. Any
other status means the subscriber rejected it, so it goes to the event dead
letters.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import re
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import httpx
from aiolimiter import AsyncLimiter

from entrepot import __version__
from entrepot.config import EventSubscriberSettings
from entrepot.events.bus import Subscription
from entrepot.events.envelope import Event
from entrepot.spokes.failures import PermanentFailure, RetryLater

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents+json"
EVENT_ID_HEADER = "X-Entrepot-Event-Id"
TIMESTAMP_HEADER = "X-Entrepot-Timestamp"
SIGNATURE_HEADER = "X-Entrepot-Signature"
SIGNATURE_SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300.0
# The maximum number of characters of a rejection's response body kept in its reason.
BODY_EXCERPT_CHARS = 200
# Time a handler call may take beyond its rate-limit wait and its request timeout.
LEASE_MARGIN_SECONDS = 30.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return the ``X-Entrepot-Signature`` value of ``body`` sent at ``timestamp``."""
    return f"{SIGNATURE_SCHEME}={_digest(secret, str(timestamp), body)}"


def verify_signature(
    secret: str,
    timestamp: str | int,
    body: bytes | str,
    header: str,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Check a webhook request from entrepot, as its subscriber receives it.

    Args:
        secret: The subscriber's ``secret`` from entrepot's configuration.
        timestamp: The ``X-Entrepot-Timestamp`` header, in Unix seconds.
        body: The request body exactly as received, before any JSON parsing.
        header: The ``X-Entrepot-Signature`` header. It may list several
            comma-separated ``v1=`` signatures, and one match is enough.
        tolerance_seconds: The largest difference allowed between ``timestamp``
            and ``now``, in either direction, in seconds.
        now: The current Unix time in seconds (default: the system clock).

    Returns:
        True when a signature matches and the timestamp is within the tolerance.
        False otherwise, including when the timestamp is not a whole number.
    """
    stamp = str(timestamp).strip()
    if not re.fullmatch(r"\d{1,12}", stamp):
        return False
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > tolerance_seconds:
        return False
    raw = body.encode() if isinstance(body, str) else body
    expected = _digest(secret, stamp, raw)
    for part in header.split(","):
        scheme, _, value = part.strip().partition("=")
        # As bytes, because compare_digest raises on a str that is not ASCII.
        if scheme == SIGNATURE_SCHEME and hmac.compare_digest(value.encode(), expected.encode()):
            return True
    return False


def _digest(secret: str, timestamp: str, body: bytes) -> str:
    signed = timestamp.encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def webhook_subscription(name: str, settings: EventSubscriberSettings) -> Subscription:
    """Return the bus subscription of the webhook subscriber ``name``."""
    return Subscription(
        name=name,
        types=frozenset(settings.types),
        max_deliveries=settings.max_deliveries,
        redeliver_after_seconds=settings.redeliver_after_seconds,
        ack_wait_seconds=settings.ack_wait_seconds
        or settings.pacing_seconds + settings.timeout_seconds + LEASE_MARGIN_SECONDS,
        max_concurrency=settings.max_concurrency,
    )


class WebhookSubscriber:
    """The `Handler` of one webhook subscriber: signs and POSTs each event to it.

    Requests keep to the subscriber's budget within this process:
    ``requests_per_second`` and ``max_concurrency`` requests at a time. The bus
    starts at most ``max_concurrency`` calls at a time and keeps the leases of the
    events waiting for one, so that waiting costs no attempt. An event whose
    worker dies may go to another worker as well, so the subscriber must drop
    repeats by ``X-Entrepot-Event-Id``.
    """

    def __init__(
        self,
        name: str,
        settings: EventSubscriberSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.settings = settings
        self.subscription = webhook_subscription(name, settings)
        self._secret = settings.secret.get_secret_value()
        self._clock = clock
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        # One request per 1/rate seconds: evenly spaced, with no burst.
        self._limiter = AsyncLimiter(1, 1 / settings.requests_per_second)
        self._client = httpx.AsyncClient(
            timeout=settings.timeout_seconds,
            limits=httpx.Limits(max_connections=settings.max_concurrency),
            headers={"User-Agent": f"entrepot/{__version__}"},
            transport=transport,
        )

    async def __call__(self, event: Event) -> None:
        """Deliver ``event``, raising `RetryLater` or `PermanentFailure` when that fails."""
        async with self._slots:
            await self._limiter.acquire()
            response = await self._post(event)
        self._check(event, response)
        log.debug(
            "Event %r delivered to subscriber %s (HTTP %d).",
            event.id,
            self.name,
            response.status_code,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def signed_headers(self, event: Event, body: bytes) -> dict[str, str]:
        """Return the headers of a request that carries ``body``, signed now."""
        timestamp = int(self._clock())
        return {
            "Content-Type": CONTENT_TYPE,
            EVENT_ID_HEADER: event.id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }

    async def _post(self, event: Event) -> httpx.Response:
        body = event.to_json()
        try:
            return await self._client.post(
                self.settings.url, content=body, headers=self.signed_headers(event, body)
            )
        except httpx.TimeoutException as exc:
            raise self._retry(event, f"timed out after {self.settings.timeout_seconds} s") from exc
        except httpx.HTTPError as exc:
            raise self._retry(event, f"failed: {exc!r}") from exc

    def _check(self, event: Event, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        excerpt = _excerpt(response.text)
        if status == 429 or status >= 500:
            raise self._retry(
                event,
                f"answered HTTP {status}: {excerpt}",
                retry_after=retry_after_seconds(response.headers.get("retry-after")),
                status_code=status,
            )
        log.warning(
            "Subscriber %s rejected event %r (%s) with HTTP %d: %s",
            self.name,
            event.id,
            event.type,
            status,
            excerpt,
        )
        raise PermanentFailure(
            f"subscriber {self.name} rejected the event with HTTP {status}: {excerpt}",
            remedy=f"fix the subscriber at {self.settings.url}, then retry the dead letter",
            status_code=status,
        )

    def _retry(
        self,
        event: Event,
        problem: str,
        *,
        retry_after: float | None = None,
        status_code: int | None = None,
    ) -> RetryLater:
        reason = f"POST to subscriber {self.name} {problem}"
        log.warning("Delivering event %r failed: %s", event.id, reason)
        return RetryLater(reason, retry_after=retry_after, status_code=status_code)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Read a ``Retry-After`` header as seconds to wait: either a number of seconds
    or an HTTP date. Return None when it is absent or invalid."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def _excerpt(text: str) -> str:
    collapsed = " ".join(text.split())
    if not collapsed:
        return "(empty body)"
    if len(collapsed) <= BODY_EXCERPT_CHARS:
        return collapsed
    return collapsed[:BODY_EXCERPT_CHARS] + "..."
