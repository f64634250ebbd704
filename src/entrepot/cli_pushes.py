"""``entrepot pushes``: the fulfillments and inventory levels on their way to shops."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from entrepot.terminal import console, fail, print_rows

pushes_app = typer.Typer(
    help="Pushes back to channels: fulfillments and inventory levels.", no_args_is_help=True
)


class PushFilter(StrEnum):
    DEAD = "dead"
    PENDING = "pending"
    DONE = "done"
    ALL = "all"


@pushes_app.command("list")
def pushes_list(
    config: Annotated[Path | None, typer.Option(help="Configuration file.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Folder of the store.")] = None,
    status: Annotated[PushFilter, typer.Option(help="Only pushes with this status.")] = (
        PushFilter.DEAD
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List pushes; by default those that failed for good."""
    from entrepot.cli import _runtime_database
    from entrepot.store.pushes import list_pushes

    database = _runtime_database(config, data_dir)
    with database.read() as session:
        wanted = None if status is PushFilter.ALL else status.value
        views = [_view(row) for row in list_pushes(session, status=wanted)]
    if as_json:
        console.print_json(json.dumps(views))
        return
    columns = ("id", "kind", "shop", "key", "status", "attempts", "error")
    rows = [
        (
            str(view["id"]),
            view["kind"],
            view["account"],
            view["key"],
            view["status"],
            str(view["attempts"]),
            view["last_error"] or "",
        )
        for view in views
    ]
    print_rows(columns, rows, blocks_when_narrow=True)


@pushes_app.command("retry")
def pushes_retry(
    push_id: Annotated[int, typer.Argument(help="Push id.")],
    config: Annotated[Path | None, typer.Option(help="Configuration file.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Folder of the store.")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who acts (default: your login).")] = None,
) -> None:
    """Send a push that failed for good once more."""
    from entrepot.cli import _runtime_database, operator_name
    from entrepot.store.pushes import PushNotRetryableError, retry_push

    database = _runtime_database(config, data_dir)
    operator = operator_name(by)
    try:
        database.write(lambda session: retry_push(session, push_id, operator))
    except PushNotRetryableError as exc:
        fail(f"Push not retried: {exc}.")
    console.print(f"Push {push_id} queued again.")


def _view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "channel": row.channel,
        "account": row.account,
        "key": row.key,
        "status": row.status,
        "attempts": row.attempts,
        "payload": row.payload,
        "last_error": row.last_error,
        "outcome": row.outcome,
        "order_id": row.order_id,
    }
