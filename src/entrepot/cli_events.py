"""The ``entrepot replay`` and ``entrepot events`` commands: outbox events delivered
again, and the event dead letters, on either bus.

Importing this module adds the commands to `entrepot.cli.app`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from entrepot.cli import (
    MAX_ID,
    ByOption,
    ConfigOption,
    DataDirOption,
    JsonOption,
    _runtime_database,
    _settings,
    app,
    operator_name,
)
from entrepot.config import Settings
from entrepot.terminal import console, fail, print_rows

if TYPE_CHECKING:
    from entrepot.events.replay import ReplayCounts
    from entrepot.store.database import Database

events_app = typer.Typer(help="Business events and their subscribers.", no_args_is_help=True)
event_dlq_app = typer.Typer(
    help="Event dead letters: inspect, retry, discard.", no_args_is_help=True
)
events_app.add_typer(event_dlq_app, name="dlq")
app.add_typer(events_app, name="events")

log = logging.getLogger(__name__)

EventDeadLetterIdArgument = Annotated[
    int, typer.Argument(help="Event dead letter id.", min=1, max=MAX_ID)
]

# The statuses of event deliveries, in the order the subscribers table shows them.
DELIVERY_STATUSES = ("pending", "in_flight", "done", "dead")

# Events put back per write transaction, and per step of the progress bar.
REPLAY_BATCH = 200


class EventDeadLetterFilter(StrEnum):
    """Statuses to list event dead letters by; ``all`` lists every one."""

    OPEN = "open"
    RETRIED = "retried"
    DISCARDED = "discarded"
    ALL = "all"


@app.command("replay")
def replay(
    subscriber: Annotated[
        str | None, typer.Option("--subscriber", help="Subscriber to deliver the events to.")
    ] = None,
    all_subscribers: Annotated[
        bool,
        typer.Option(
            "--all-subscribers",
            help="Deliver to every subscriber, configured or registered with the bus.",
        ),
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only events created at or after this ISO 8601 time (UTC if no offset)."
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Only events created before this ISO 8601 time (UTC if no offset)."),
    ] = None,
    event_types: Annotated[
        list[str] | None,
        typer.Option(
            "--type", help="Only events of this type, such as order.accepted; repeatable."
        ),
    ] = None,
    subject: Annotated[
        str | None,
        typer.Option(
            help="Only events of this subject (aggregate), such as order/shopify/SHOP/ID."
        ),
    ] = None,
    correlation_id: Annotated[
        str | None, typer.Option("--correlation-id", help="Only events with this correlation id.")
    ] = None,
    by: ByOption = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Deliver outbox events again to subscribers.

    On the database bus each selected event's delivery is put back to pending with
    its attempts at 0, or created if the subscriber never had one. On NATS the
    event is published again for those subscribers alone. Subscribers drop events
    they have already handled by their id, so replaying twice has the effect of once.
    """
    from entrepot.events.envelope import EVENT_TYPES
    from entrepot.events.replay import EventFilter, matching_events

    operator = operator_name(by)
    settings = _settings(config, data_dir)
    unknown = sorted(set(event_types or ()) - EVENT_TYPES)
    if unknown:
        known = ", ".join(sorted(EVENT_TYPES))
        fail(f"Unknown event type {', '.join(unknown)}; known types: {known}.", code=2)
    since_time, until_time = _parse_time("--since", since), _parse_time("--until", until)
    if since_time is not None and until_time is not None and since_time >= until_time:
        fail(f"--since {since} is not before --until {until}; nothing could match.", code=2)
    event_filter = EventFilter(
        since=since_time,
        until=until_time,
        types=frozenset(event_types or ()),
        subject=subject,
        correlation_id=correlation_id,
    )
    database = _runtime_database(config, data_dir)
    with database.read() as session:
        targets = _replay_subscribers(settings, session, subscriber, all_subscribers)
        events = matching_events(session, event_filter)
    subscriber_types = frozenset().union(*targets.values())
    events = [(outbox_id, kind) for outbox_id, kind in events if kind in subscriber_types]
    if not events:
        console.print("No events of the subscribers' types match; nothing was replayed.")
        return

    counts = _replay_in_batches(settings, database, events, targets, operator)
    names = ", ".join(sorted(targets))
    log.info(
        "Replay by %s: %d events to %s, %d deliveries reset, %d created, %d in flight, "
        "%d published.",
        operator,
        len(counts.events),
        names,
        counts.reset,
        counts.created,
        counts.in_flight,
        counts.published,
    )
    outcome = (
        f"{counts.published} published again"
        if settings.events.bus_url
        else f"{counts.reset} deliveries put back to pending, {counts.created} created, "
        f"{counts.in_flight} in flight, put back when they end"
    )
    console.print(
        f"Replayed {len(counts.events)} of {len(events)} matching events to {names}: {outcome}."
    )


def _replay_in_batches(
    settings: Settings,
    database: Database,
    events: list[tuple[int, str]],
    targets: dict[str, frozenset[str]],
    operator: str,
) -> ReplayCounts:
    """Replay ``events`` a batch per transaction, with a progress bar; stop with the
    count so far when the bus fails."""
    from entrepot.events.replay import ReplayCounts, replay_events
    from entrepot.events.resend import opened_resend
    from entrepot.spokes.failures import DeliveryFailure

    counts = ReplayCounts()
    try:
        with opened_resend(settings.events.bus_url) as resend, _progress() as progress:
            task = progress.add_task("Replaying", total=len(events))
            for start in range(0, len(events), REPLAY_BATCH):
                batch = events[start : start + REPLAY_BATCH]
                work = partial(
                    replay_events, events=batch, subscribers=targets, by=operator, resend=resend
                )
                counts.merge(database.write(work))
                progress.advance(task, len(batch))
    except DeliveryFailure as failure:
        fail(
            f"Replay stopped after {len(counts.events)} of {len(events)} events: "
            f"{failure.reason}. Running it again is safe."
        )
    return counts


def _parse_time(option: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        fail(
            f"Invalid {option} {text!r}: expected an ISO 8601 time between the years 1 and "
            "9999, such as 2026-12-04T10:00:00Z.",
            code=2,
        )


def _replay_subscribers(
    settings: Settings, session: Any, name: str | None, every: bool
) -> dict[str, frozenset[str]]:
    """Return the subscribers to replay to, with the event types each takes. The
    configured types win over those registered with the bus."""
    from entrepot.events.replay import registered_subscribers

    if (name is None) == (not every):
        fail("Give either --subscriber NAME or --all-subscribers.", code=2)
    known = registered_subscribers(session)
    known.update(
        {key: frozenset(value.types) for key, value in settings.events.subscribers.items()}
    )
    if every:
        if not known:
            fail("No subscribers are configured or registered; nothing to replay to.")
        return known
    assert name is not None
    if name not in known:
        listed = ", ".join(sorted(known)) or "none"
        fail(f"Subscriber {name!r} not found; known subscribers: {listed}.")
    return {name: known[name]}


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        console=console,
    )


@events_app.command("subscribers")
def subscribers(
    as_json: JsonOption = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """List the subscribers registered with the database bus and their deliveries."""
    from entrepot.events.subscriptions import registered

    database = _runtime_database(config, data_dir)
    configured = set(_settings(config, data_dir).events.subscribers)
    with database.read() as session:
        found = registered(session)
    if as_json:
        views = [
            {
                "name": item.name,
                "types": list(item.types),
                "configured": item.name in configured,
                "deliveries": item.deliveries,
            }
            for item in found
        ]
        console.print_json(json.dumps(views))
        return
    columns = ("name", "configured", "types", "pending", "in flight", "done", "dead")
    rows = [
        (
            item.name,
            "yes" if item.name in configured else "no",
            ", ".join(item.types),
            *(str(item.deliveries.get(status, 0)) for status in DELIVERY_STATUSES),
        )
        for item in found
    ]
    print_rows(columns, rows)


@events_app.command("unsubscribe")
def unsubscribe(
    name: Annotated[str, typer.Argument(help="Subscriber to remove from the database bus.")],
    by: ByOption = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Stop queueing events for a subscriber that was removed from the configuration.

    Its pending deliveries are deleted. Deliveries in flight finish, and those that
    fail are deleted too, with no retry or dead letter. Its dead letters stay. A
    worker whose configuration still names it registers it again when it starts.
    """
    from entrepot.events.subscriptions import SubscriberNotFoundError
    from entrepot.events.subscriptions import unsubscribe as remove

    operator = operator_name(by)
    if name in _settings(config, data_dir).events.subscribers:
        fail(
            f"Subscriber {name!r} is still in [events.subscribers]; remove it there and "
            "restart the workers first, or they register it again."
        )
    database = _runtime_database(config, data_dir)
    try:
        removed = database.write(lambda session: remove(session, name))
    except SubscriberNotFoundError as exc:
        fail(f"{str(exc)[0].upper()}{str(exc)[1:]}.")
    log.info(
        "Subscriber %s unsubscribed by %s; %d pending deliveries deleted.",
        name,
        operator,
        removed,
    )
    console.print(
        f"Subscriber {name} unsubscribed by {operator}: {removed} pending deliveries deleted."
    )


@event_dlq_app.command("list")
def dlq_list(
    status: Annotated[
        EventDeadLetterFilter, typer.Option(help="Only event dead letters with this status.")
    ] = EventDeadLetterFilter.OPEN,
    subscriber: Annotated[str | None, typer.Option(help="Only those of this subscriber.")] = None,
    limit: Annotated[int, typer.Option(help="Maximum number of dead letters.", min=1)] = 100,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """List event dead letters, newest first."""
    from entrepot.events.dead_letters import event_dead_letter_view, list_event_dead_letters

    database = _runtime_database(config, data_dir)
    status_filter = None if status is EventDeadLetterFilter.ALL else status.value
    with database.read() as session:
        found = list_event_dead_letters(
            session, status=status_filter, subscriber=subscriber, limit=limit
        )
        views = [event_dead_letter_view(letter) for letter in found]
    if as_json:
        console.print_json(json.dumps(views))
        return
    columns = ("id", "subscriber", "type", "subject", "status", "attempts", "reason")
    rows = [
        (
            str(view["id"]),
            view["subscriber"],
            view["type"],
            view["subject"],
            view["status"],
            str(view["attempts"]),
            view["reason"],
        )
        for view in views
    ]
    print_rows(columns, rows, blocks_when_narrow=True)


@event_dlq_app.command("show")
def dlq_show(
    dead_letter_id: EventDeadLetterIdArgument,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Show an event dead letter with its event and its delivery, as JSON."""
    from entrepot.events.dead_letters import event_dead_letter_detail

    database = _runtime_database(config, data_dir)
    with database.read() as session:
        view = event_dead_letter_detail(session, dead_letter_id)
    if view is None:
        fail(f"Event dead letter {dead_letter_id} not found.")
    console.print_json(json.dumps(view))


@event_dlq_app.command("retry")
def dlq_retry(
    dead_letter_id: EventDeadLetterIdArgument,
    by: ByOption = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Deliver the event again to its subscriber, with the attempts starting at 0."""
    from entrepot.events.dead_letters import retry_event_dead_letter
    from entrepot.events.resend import opened_resend

    events = _settings(config, data_dir).events
    configured = frozenset(events.subscribers)

    def resend_and_retry(database: Any, letter_id: int, operator: str) -> Any:
        with opened_resend(events.bus_url, configured) as resend:
            return retry_event_dead_letter(database, letter_id, operator, resend)

    _act(resend_and_retry, dead_letter_id, by, config, data_dir, "retried")


@event_dlq_app.command("discard")
def dlq_discard(
    dead_letter_id: EventDeadLetterIdArgument,
    by: ByOption = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Close an event dead letter without delivering the event again."""
    from entrepot.events.dead_letters import discard_event_dead_letter

    _act(discard_event_dead_letter, dead_letter_id, by, config, data_dir, "discarded")


def _act(
    operation: Callable[[Any, int, str], Any],
    dead_letter_id: int,
    by: str | None,
    config: Path | None,
    data_dir: Path | None,
    done: str,
) -> None:
    from entrepot.events.dead_letters import (
        EventDeadLetterClosedError,
        EventDeadLetterNotFoundError,
    )
    from entrepot.events.resend import SubscriberNotConfiguredError
    from entrepot.spokes.failures import DeliveryFailure

    database = _runtime_database(config, data_dir)
    operator = operator_name(by)
    try:
        letter = operation(database, dead_letter_id, operator)
    except (
        EventDeadLetterNotFoundError,
        EventDeadLetterClosedError,
        SubscriberNotConfiguredError,
    ) as exc:
        fail(f"{str(exc)[0].upper()}{str(exc)[1:]}.")
    except DeliveryFailure as failure:
        fail(f"The event bus is unavailable: {failure.reason}.")
    console.print(
        f"Event dead letter {dead_letter_id} {done} by {operator} "
        f"(event {letter.event_id} to subscriber {letter.subscriber})."
    )
