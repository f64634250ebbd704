"""``entrepot replay`` and ``entrepot events dlq``, on an embedded store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from entrepot import terminal
from entrepot.cli import app
from entrepot.config import EventSubscriberSettings, load_settings
from entrepot.events.bus import Subscription
from entrepot.events.envelope import Event
from entrepot.events.inbox import InboxOutcome
from entrepot.events.webhooks import WebhookSubscriber
from entrepot.spokes.failures import PermanentFailure
from entrepot.store.database import Database
from entrepot.store.tables import EventDeadLetter, EventDelivery, OutboxEvent
from tests.event_store import (
    ORDER_TYPES,
    drain,
    inbox_handler,
    order_subject_of,
    publish,
    store_in,
    write_order_events,
)
from tests.webhook_receiver import RECEIVER_SECRET, running_receiver

runner = CliRunner()
FEED = Subscription("feed", frozenset(ORDER_TYPES), redeliver_after_seconds=0.01)


def _deliveries(database: Database, subscriber: str) -> dict[str, tuple[str, int]]:
    """Return (status, attempts) of the subscriber's deliveries by event id."""
    with database.read() as session:
        rows = session.execute(
            select(OutboxEvent.event_id, EventDelivery.status, EventDelivery.attempts)
            .join(OutboxEvent, OutboxEvent.id == EventDelivery.outbox_id)
            .where(EventDelivery.subscriber == subscriber)
        ).all()
    return {event_id: (status, attempts) for event_id, status, attempts in rows}


def _replay(data_dir: Path, *args: str) -> str:
    result = runner.invoke(app, ["replay", "--data-dir", str(data_dir), "--by", "ops", *args])
    assert result.exit_code == 0, result.output
    return result.output


async def test_replay_twice_has_effect_once(tmp_path: Path) -> None:
    database = store_in(tmp_path)
    events = write_order_events(database, (1001, 1002))
    await publish(database, FEED, events)
    outcomes: list[tuple[str, InboxOutcome]] = []
    await drain(database, FEED, inbox_handler(database, "feed", outcomes))
    accepted = [event.id for event in events if event.type == "order.accepted"]

    first = _replay(tmp_path, "--subscriber", "feed", "--type", "order.accepted")
    after_first = _deliveries(database, "feed")
    await drain(database, FEED, inbox_handler(database, "feed", outcomes))
    second = _replay(tmp_path, "--subscriber", "feed", "--type", "order.accepted")
    await drain(database, FEED, inbox_handler(database, "feed", outcomes))

    expected = (
        "Replayed 2 of 2 matching events to feed: 2 deliveries put back to pending, "
        "0 created, 0 in flight, put back when they end."
    )
    assert expected in " ".join(first.split())
    assert expected in " ".join(second.split())
    assert {event_id: after_first[event_id] for event_id in accepted} == {
        event_id: ("pending", 0) for event_id in accepted
    }
    assert [outcome for _, outcome in outcomes[:6]] == [InboxOutcome.APPLIED] * 6
    assert sorted(outcomes[6:]) == sorted(
        [(event_id, InboxOutcome.DUPLICATE) for event_id in accepted] * 2
    )
    assert _deliveries(database, "feed") == {event.id: ("done", 1) for event in events}


async def test_replay_filters_to_new_webhook_subscriber(tmp_path: Path) -> None:
    database = store_in(tmp_path)
    events = write_order_events(database, (1001, 1002, 1003))
    with running_receiver() as receiver:
        config = tmp_path / "entrepot.toml"
        config.write_text(
            "[events.subscribers.hook]\n"
            f'url = "{receiver.url}"\n'
            f'secret = "{RECEIVER_SECRET}"\n'
            f"types = {json.dumps(list(ORDER_TYPES))}\n"
            "requests_per_second = 100\n"
        )
        options = ["--config", str(config), "--subscriber", "hook"]
        window = _replay(
            tmp_path, *options, "--since", "2026-12-04T10:02:00Z", "--until", "2026-12-04T10:03"
        )
        subject = _replay(tmp_path, *options, "--subject", order_subject_of(1001))
        correlated = _replay(tmp_path, *options, "--correlation-id", "corr-1001")
        hook = WebhookSubscriber("hook", _hook_settings(config))
        await drain(database, hook.subscription, hook)
        delivered_once = len(receiver.requests)
        _replay(tmp_path, *options, "--correlation-id", "corr-1001")
        await drain(database, hook.subscription, hook)
        await hook.aclose()

    by_id = {event.id: event for event in events}
    assert (
        "Replayed 3 of 3 matching events to hook: 0 deliveries put back to pending, 3 created"
        in (" ".join(window.split()))
    )
    assert (
        "Replayed 3 of 3 matching events to hook: 0 deliveries put back to pending, 3 created"
        in (" ".join(subject.split()))
    )
    assert "3 deliveries put back to pending, 0 created" in " ".join(correlated.split())
    received = [by_id[e["id"]].correlationid for e in receiver.unique_events()]
    assert sorted(received) == ["corr-1001"] * 3 + ["corr-1002"] * 3
    assert delivered_once == 6
    # The second replay of order 1001 reaches the receiver, which drops it by event id.
    assert len(receiver.requests) == 9
    assert len(receiver.unique_events()) == 6
    assert receiver.bad_signatures == 0


def _hook_settings(config: Path) -> EventSubscriberSettings:
    return load_settings(config).events.subscribers["hook"]


async def test_replay_reopens_dead_letter(tmp_path: Path) -> None:
    database = store_in(tmp_path)
    events = write_order_events(database, (1001,))
    await publish(database, FEED, events)

    async def reject_accepted(event: Event) -> None:
        if event.type == "order.accepted":
            raise PermanentFailure("the feed has no such order")

    await drain(database, FEED, reject_accepted)
    output = _replay(tmp_path, "--all-subscribers", "--correlation-id", "corr-1001")

    with database.read() as session:
        letter = session.scalars(select(EventDeadLetter)).one()
    assert "Replayed 3 of 3 matching events to feed" in " ".join(output.split())
    assert letter.status == "retried"
    assert letter.resolved_by == "ops"
    assert _deliveries(database, "feed")[events[2].id] == ("pending", 0)


def test_replay_option_errors(tmp_path: Path) -> None:
    database = store_in(tmp_path)
    write_order_events(database, (1001,))
    base = ["replay", "--data-dir", str(tmp_path)]

    neither = runner.invoke(app, base)
    both = runner.invoke(app, [*base, "--subscriber", "feed", "--all-subscribers"])
    unknown = runner.invoke(app, [*base, "--subscriber", "nobody"])
    bad_type = runner.invoke(app, [*base, "--all-subscribers", "--type", "order.shipped"])
    bad_time = runner.invoke(app, [*base, "--all-subscribers", "--since", "yesterday"])
    nothing = runner.invoke(app, [*base, "--all-subscribers"])
    far_past = runner.invoke(
        app, [*base, "--all-subscribers", "--since", "0001-01-01T00:00:00+01:00"]
    )
    backwards = runner.invoke(
        app, [*base, "--all-subscribers", "--since", "2030-01-01", "--until", "2020-01-01"]
    )
    long_by = runner.invoke(app, [*base, "--all-subscribers", "--by", "x" * 121])
    empty_by = runner.invoke(app, [*base, "--all-subscribers", "--by", " "])

    assert neither.exit_code == 2
    assert "Give either --subscriber NAME or --all-subscribers." in neither.output
    assert both.exit_code == 2
    assert unknown.exit_code == 1
    assert "Subscriber 'nobody' not found; known subscribers: none." in unknown.output
    assert bad_type.exit_code == 2
    assert "Unknown event type order.shipped; known types: inventory.changed" in bad_type.output
    assert bad_time.exit_code == 2
    assert "Invalid --since 'yesterday'" in bad_time.output
    assert nothing.exit_code == 1
    assert "No subscribers are configured or registered" in nothing.output
    assert far_past.exit_code == 2
    assert "Invalid --since '0001-01-01T00:00:00+01:00'" in " ".join(far_past.output.split())
    assert backwards.exit_code == 2
    assert "--since 2030-01-01 is not before --until 2020-01-01" in " ".join(
        backwards.output.split()
    )
    assert long_by.exit_code == 2
    assert "Invalid --by" in long_by.output
    assert empty_by.exit_code == 2


async def test_replay_without_matches(tmp_path: Path) -> None:
    database = store_in(tmp_path)
    events = write_order_events(database, (1001,))
    await publish(database, FEED, events)

    output = _replay(tmp_path, "--subscriber", "feed", "--since", "2027-01-01T00:00:00+01:00")

    assert "No events of the subscribers' types match; nothing was replayed." in output


async def test_event_dlq_commands(tmp_path: Path) -> None:
    database = store_in(tmp_path)
    events = write_order_events(database, (1001, 1002))
    await publish(database, FEED, events)

    async def reject_accepted(event: Event) -> None:
        if event.type == "order.accepted":
            raise PermanentFailure("the feed has no such order")

    await drain(database, FEED, reject_accepted)
    base = ["--data-dir", str(tmp_path)]
    listed = runner.invoke(app, ["events", "dlq", "list", "--json", *base])
    letters = json.loads(listed.output)
    first, second = sorted(letter["id"] for letter in letters)
    shown = runner.invoke(app, ["events", "dlq", "show", str(first), *base])
    retried = runner.invoke(app, ["events", "dlq", "retry", str(first), "--by", "alice", *base])
    again = runner.invoke(app, ["events", "dlq", "retry", str(first), "--by", "alice", *base])
    discarded = runner.invoke(app, ["events", "dlq", "discard", str(second), "--by", "bob", *base])
    missing = runner.invoke(app, ["events", "dlq", "show", "999", *base])
    huge = runner.invoke(app, ["events", "dlq", "retry", str(2**63), "--by", "x", *base])
    table = runner.invoke(app, ["events", "dlq", "list", "--status", "all", *base])
    still_open = runner.invoke(app, ["events", "dlq", "list", "--json", *base])

    detail = json.loads(shown.output)
    with database.read() as session:
        resolved = {
            row.id: (row.status, row.resolved_by)
            for row in session.scalars(select(EventDeadLetter))
        }
    accepted = {e.correlationid: e.id for e in events if e.type == "order.accepted"}
    assert listed.exit_code == 0
    assert [letter["subscriber"] for letter in letters] == ["feed", "feed"]
    assert {letter["correlation_id"] for letter in letters} == {"corr-1001", "corr-1002"}
    assert letters[0]["reason"] == "refused after 1 deliveries: the feed has no such order"
    assert detail["event"]["id"] == detail["event_id"]
    assert detail["delivery"] == {
        "status": "dead",
        "attempts": 1,
        "last_error": "the feed has no such order",
    }
    assert retried.exit_code == 0
    assert f"Event dead letter {first} retried by alice" in retried.output
    assert again.exit_code == 1
    assert f"Event dead letter {first} is already retried (by alice)." in again.output
    assert discarded.exit_code == 0
    assert resolved == {first: ("retried", "alice"), second: ("discarded", "bob")}
    assert _deliveries(database, "feed")[detail["event_id"]] == ("pending", 0)
    assert detail["event_id"] in accepted.values()
    assert missing.exit_code == 1
    assert "Event dead letter 999 not found." in missing.output
    assert huge.exit_code == 2
    assert "retried" in table.output
    assert "discarded" in table.output
    assert json.loads(still_open.output) == []


async def _one_dead_letter(data_dir: Path, reason: str) -> tuple[Database, Event]:
    """Make a store whose feed subscriber rejected the first event of order 1001 with
    ``reason``; return the store and the event."""
    database = store_in(data_dir)
    [event, *_] = write_order_events(database, (1001,))
    await publish(database, FEED, [event])

    async def reject(_event: Event) -> None:
        raise PermanentFailure(reason)

    await drain(database, FEED, reject)
    return database, event


async def test_event_dlq_retry_needs_subscriber(tmp_path: Path) -> None:
    """On the database bus a dead letter of an unsubscribed subscriber that no
    configuration names stays open, because no worker would take its event."""
    database, event = await _one_dead_letter(tmp_path, "the feed has no such order")
    base = ["--data-dir", str(tmp_path)]
    removed = runner.invoke(app, ["events", "unsubscribe", "feed", "--by", "ops", *base])
    retried = runner.invoke(app, ["events", "dlq", "retry", "1", "--by", "ops", *base])
    with database.read() as session:
        letter = session.get_one(EventDeadLetter, 1)

    assert removed.exit_code == 0, removed.output
    assert retried.exit_code == 1
    assert "Subscriber 'feed' is not in [events.subscribers]" in " ".join(retried.output.split())
    assert letter.status == "open"
    assert _deliveries(database, "feed") == {event.id: ("dead", 1)}


@pytest.mark.parametrize("name", ["[/x]", "[bold]Ann[/bold]", ":smile:"])
async def test_event_dlq_discard_names_operator(tmp_path: Path, name: str) -> None:
    """A --by name that reads as console markup or an emoji code prints as typed."""
    database, _ = await _one_dead_letter(tmp_path, "the feed has no such order")
    discarded = runner.invoke(
        app, ["events", "dlq", "discard", "1", "--by", name, "--data-dir", str(tmp_path)]
    )
    with database.read() as session:
        letter = session.get_one(EventDeadLetter, 1)

    assert discarded.exit_code == 0, discarded.output
    assert f"Event dead letter 1 discarded by {name} " in discarded.output
    assert letter.resolved_by == name


@pytest.mark.parametrize("width", [80, 200])
async def test_event_dlq_list_fits_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int
) -> None:
    """The listing shows each dead letter's whole reason, brackets included, in blocks
    of lines on a narrow terminal and in a table on a wide one."""
    reason = "HTTP 404 for [/orders/1001], [bold]see the feed's log[/bold]"
    recorded = f"refused after 1 deliveries: {reason}"
    await _one_dead_letter(tmp_path, reason)
    monkeypatch.setattr(terminal.console, "_width", width)
    listed = runner.invoke(app, ["events", "dlq", "list", "--data-dir", str(tmp_path)])
    lines = [line.rstrip() for line in listed.output.splitlines()]

    assert listed.exit_code == 0, listed.output
    assert max(len(line) for line in lines) <= width
    if width < terminal.NARROW_WIDTH:
        assert lines[0].split() == ["id", "1"]
        assert lines[3].split() == ["subject", order_subject_of(1001)]
        assert lines[6].startswith("reason")
        assert " ".join(" ".join(lines[6:]).split()) == f"reason {recorded}"
    else:
        header = [cell.strip() for cell in lines[1].strip("┃").split("┃")]
        row = [cell.strip() for cell in lines[3].strip("│").split("│")]
        assert header == ["id", "subscriber", "type", "subject", "status", "attempts", "reason"]
        assert row[3] == order_subject_of(1001)
        assert row[6] == recorded


async def test_unsubscribe_stops_new_deliveries(tmp_path: Path) -> None:
    database = store_in(tmp_path)
    first = write_order_events(database, (1001,))
    await publish(database, FEED, first)
    base = ["--data-dir", str(tmp_path)]
    feed_config = tmp_path / "feed.toml"
    feed_config.write_text(
        '[events.subscribers.feed]\nurl = "http://127.0.0.1:9/events"\nsecret = "s"\n'
        'types = ["order.accepted"]\n'
    )

    listed = runner.invoke(app, ["events", "subscribers", "--json", *base])
    still_configured = runner.invoke(
        app, ["events", "unsubscribe", "feed", "--config", str(feed_config), *base]
    )
    removed = runner.invoke(app, ["events", "unsubscribe", "feed", "--by", "ops", *base])
    again = runner.invoke(app, ["events", "unsubscribe", "feed", *base])
    later = write_order_events(database, (1002,))
    await publish(database, FEED, later, register=False)

    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output) == [
        {
            "name": "feed",
            "types": sorted(ORDER_TYPES),
            "configured": False,
            "deliveries": {"pending": 3},
        }
    ]
    assert still_configured.exit_code == 1
    assert "is still in [events.subscribers]" in " ".join(still_configured.output.split())
    assert removed.exit_code == 0, removed.output
    assert "Subscriber feed unsubscribed by ops: 3 pending deliveries deleted." in " ".join(
        removed.output.split()
    )
    assert again.exit_code == 1
    assert "Subscriber 'feed' is not registered with the database bus." in again.output
    assert _deliveries(database, "feed") == {}


async def test_replay_counts_only_subscriber_types(tmp_path: Path) -> None:
    database = store_in(tmp_path)
    events = write_order_events(database, (1001, 1002))
    narrow = Subscription("narrow", frozenset({"order.accepted"}))
    await publish(database, narrow, events)

    output = _replay(tmp_path, "--subscriber", "narrow")

    assert "Replayed 2 of 2 matching events to narrow" in " ".join(output.split())
