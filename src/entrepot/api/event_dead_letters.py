"""``/api/event-dead-letters``: the event dead letters of either bus, to list,
inspect, retry and discard, recording who did it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from entrepot.api.dead_letters import DeadLetterId, OperatorAction
from entrepot.events.dead_letters import (
    EventDeadLetterClosedError,
    EventDeadLetterNotFoundError,
    discard_event_dead_letter,
    event_dead_letter_detail,
    event_dead_letter_view,
    list_event_dead_letters,
    retry_event_dead_letter,
)
from entrepot.events.resend import SubscriberNotConfiguredError, opened_resend
from entrepot.runtime import Runtime
from entrepot.spokes.failures import DeliveryFailure
from entrepot.store.database import Database
from entrepot.store.tables import EventDeadLetter

router = APIRouter(prefix="/api/event-dead-letters", tags=["operations"])

Operation = Callable[[Database, int, str], EventDeadLetter]


@router.get("")
def list_all(
    request: Request,
    status: Annotated[
        Literal["open", "retried", "discarded", "all"],
        Query(description="Only event dead letters with this status, or all"),
    ] = "open",
    subscriber: Annotated[str | None, Query(description="Only those of this subscriber")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    runtime: Runtime = request.app.state.runtime
    status_filter = None if status == "all" else status
    with runtime.database.read() as session:
        found = list_event_dead_letters(
            session, status=status_filter, subscriber=subscriber, limit=limit
        )
        return [event_dead_letter_view(letter) for letter in found]


@router.get("/{dead_letter_id}")
def show(dead_letter_id: DeadLetterId, request: Request) -> dict[str, Any]:
    """Show an event dead letter with its event and its delivery's current state."""
    runtime: Runtime = request.app.state.runtime
    with runtime.database.read() as session:
        view = event_dead_letter_detail(session, dead_letter_id)
    if view is None:
        raise HTTPException(
            status_code=404, detail=f"event dead letter {dead_letter_id} not found"
        )
    return view


@router.post("/{dead_letter_id}/retry")
async def retry(
    dead_letter_id: DeadLetterId, action: OperatorAction, request: Request
) -> dict[str, Any]:
    """Send the event again to its subscriber, with its attempts at 0."""
    runtime: Runtime = request.app.state.runtime
    events = runtime.settings.events
    configured = frozenset(events.subscribers)

    def resend_and_retry(database: Database, letter_id: int, by: str) -> EventDeadLetter:
        with opened_resend(events.bus_url, configured) as resend:
            return retry_event_dead_letter(database, letter_id, by, resend)

    return await _act(resend_and_retry, request, dead_letter_id, action.by)


@router.post("/{dead_letter_id}/discard")
async def discard(
    dead_letter_id: DeadLetterId, action: OperatorAction, request: Request
) -> dict[str, Any]:
    return await _act(discard_event_dead_letter, request, dead_letter_id, action.by)


async def _act(
    operation: Operation, request: Request, dead_letter_id: int, by: str
) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    try:
        letter = await run_in_threadpool(operation, runtime.database, dead_letter_id, by)
    except EventDeadLetterNotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except (EventDeadLetterClosedError, SubscriberNotConfiguredError) as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    except DeliveryFailure as failure:
        raise HTTPException(
            status_code=503, detail=f"the event bus is unavailable: {failure.reason}"
        ) from failure
    return event_dead_letter_view(letter)
