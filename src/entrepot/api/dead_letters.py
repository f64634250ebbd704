"""``/api/dead-letters``: list, inspect, retry and discard, recording who did it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from entrepot.delivery.dead_letters import discard_dead_letter, retry_dead_letter
from entrepot.hub import tracking
from entrepot.runtime import Runtime
from entrepot.store.dead_letters import (
    DeadLetterClosedError,
    DeadLetterNotFoundError,
    list_dead_letters,
)
from entrepot.store.tables import DeadLetter

# The ids the store's 64-bit keys hold.
DeadLetterId = Annotated[int, Path(ge=1, le=2**63 - 1)]

router = APIRouter(prefix="/api/dead-letters", tags=["operations"])


class OperatorAction(BaseModel):
    """The operator acting on a dead letter, stored with the action."""

    by: str = Field(min_length=1, max_length=120)


@router.get("")
def list_all(
    request: Request,
    status: Annotated[
        Literal["open", "retried", "discarded", "resolved", "all"],
        Query(description="Only dead letters with this status, or all"),
    ] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    runtime: Runtime = request.app.state.runtime
    wanted = None if status == "all" else status
    with runtime.database.read() as session:
        found = list_dead_letters(session, status=wanted, limit=limit)
        return [tracking.dead_letter_view(dead_letter) for dead_letter in found]


@router.get("/{dead_letter_id}")
def show(dead_letter_id: DeadLetterId, request: Request) -> dict[str, Any]:
    """Show a dead letter with the original input as the channel sent it."""
    runtime: Runtime = request.app.state.runtime
    with runtime.database.read() as session:
        view = tracking.dead_letter_detail(session, dead_letter_id)
    if view is None:
        raise HTTPException(status_code=404, detail=f"dead letter {dead_letter_id} not found")
    return view


@router.post("/{dead_letter_id}/retry")
async def retry(
    dead_letter_id: DeadLetterId, action: OperatorAction, request: Request
) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    dead_letter = await _act(retry_dead_letter, runtime, dead_letter_id, action.by)
    runtime.notify_receipt()
    return tracking.dead_letter_view(dead_letter)


@router.post("/{dead_letter_id}/discard")
async def discard(
    dead_letter_id: DeadLetterId, action: OperatorAction, request: Request
) -> dict[str, Any]:
    runtime: Runtime = request.app.state.runtime
    dead_letter = await _act(discard_dead_letter, runtime, dead_letter_id, action.by)
    return tracking.dead_letter_view(dead_letter)


async def _act(operation: Any, runtime: Runtime, dead_letter_id: int, by: str) -> DeadLetter:
    try:
        result: DeadLetter = await run_in_threadpool(
            operation, runtime.database, dead_letter_id, by
        )
    except DeadLetterNotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except DeadLetterClosedError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    return result
