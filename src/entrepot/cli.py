"""The ``entrepot`` command."""

from __future__ import annotations

import asyncio
import getpass
import importlib.util
import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from entrepot.cli_pushes import pushes_app
from entrepot.cli_tryton import tryton_server
from entrepot.config import Settings, load_settings
from entrepot.hub.lifecycle import OrderState
from entrepot.observability.logging import configure_logging
from entrepot.printable import printable
from entrepot.terminal import console, fail, print_rows

if TYPE_CHECKING:
    from entrepot.runtime import Runtime

app = typer.Typer(help="entrepot: orders from sales channels into ERPs.", no_args_is_help=True)
orders_app = typer.Typer(help="Where orders are.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: inspect, retry, discard.", no_args_is_help=True)
db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
app.add_typer(orders_app, name="orders")
app.add_typer(dlq_app, name="dlq")
app.add_typer(db_app, name="db")
app.add_typer(pushes_app, name="pushes")
app.command("tryton-server")(tryton_server)


class DeadLetterFilter(StrEnum):
    """Statuses to list dead letters by; ``all`` lists every one."""

    OPEN = "open"
    RETRIED = "retried"
    DISCARDED = "discarded"
    RESOLVED = "resolved"
    ALL = "all"


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML configuration file (else $ENTREPOT_CONFIG or ./entrepot.toml if present).",
        exists=True,
        dir_okay=False,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder of the embedded SQLite store.", file_okay=False),
]

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _settings(config: Path | None, data_dir: Path | None = None, **server: Any) -> Settings:
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["store"] = {"data_dir": data_dir}
    given = {key: value for key, value in server.items() if value is not None}
    if given:
        overrides["server"] = given
    try:
        settings = load_settings(config, **overrides)
    except ValidationError as exc:
        fail("Invalid configuration:\n" + _settings_errors(exc), code=2)
    except (FileNotFoundError, ValueError) as exc:
        fail(f"Invalid configuration: {exc}", code=2)
    configure_logging(settings.logging.level, settings.logging.format)
    return settings


def _settings_errors(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        path = ".".join(str(part) for part in error["loc"])
        lines.append(f"  {path}: {error['msg']}")
    return "\n".join(lines)


@app.command()
def run(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port to listen on.")] = None,
) -> None:
    """Run the HTTP server and the workers in one process."""
    from entrepot.api.server import serve

    runtime = _open_runtime(_settings(config, data_dir, host=host, port=port))
    try:
        asyncio.run(serve(runtime))
    finally:
        runtime.close()


@app.command()
def worker(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Run only the workers (intake and delivery), without the HTTP server."""
    from entrepot.runtime import run_workers_until_signal

    runtime = _open_runtime(_settings(config, data_dir))
    try:
        asyncio.run(run_workers_until_signal(runtime))
    finally:
        runtime.close()


@app.command("erp-sim")
def erp_sim(
    data_dir: Annotated[Path, typer.Option(help="Folder of the simulator's SQLite file.")] = Path(
        "data/erp-sim"
    ),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8090,
    concurrency: Annotated[int, typer.Option(help="Account concurrency limit.")] = 5,
    rate_limit: Annotated[float, typer.Option(help="Requests per second; 0 for none.")] = 0.0,
    latency_ms: Annotated[float, typer.Option(help="Added latency per request, in ms.")] = 0.0,
    latency_jitter_ms: Annotated[float, typer.Option(help="Random extra latency, in ms.")] = 0.0,
    token: Annotated[str | None, typer.Option(help="Bearer token to require.")] = None,
) -> None:
    """Run the NetSuite-style ERP simulator."""
    from entrepot.simulators.erp import ErpSimSettings, serve

    configure_logging()
    serve(
        ErpSimSettings(
            host=host,
            port=port,
            data_dir=data_dir,
            concurrency_limit=concurrency,
            rate_limit=rate_limit,
            latency_ms=latency_ms,
            latency_jitter_ms=latency_jitter_ms,
            token=token,
        )
    )


@app.command("shopify-sim")
def shopify_sim(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8091,
    access_token: Annotated[
        str, typer.Option(help="Value that requests must send in X-Shopify-Access-Token.")
    ] = "shpat_simulator",
    api_version: Annotated[
        str, typer.Option(help="Admin API version served, as in /admin/api/2024-10/.")
    ] = "2024-10",
    shop: Annotated[
        str, typer.Option(help="Domain of the simulated shop.")
    ] = "acme-fasteners.myshopify.com",
) -> None:
    """Run the Shopify REST Admin API simulator (in memory)."""
    from entrepot.simulators.shopify import ShopifySimSettings, ShopSettings, serve

    configure_logging()
    try:
        settings = ShopifySimSettings(
            host=host,
            port=port,
            api_version=api_version,
            shops=(ShopSettings(domain=shop, access_token=access_token),),
        )
    except ValueError as exc:
        fail(f"Invalid simulator option: {exc}", code=2)
    serve(settings)


class DemoErpKind(StrEnum):
    SIMULATOR = "simulator"
    TRYTON = "tryton"


@app.command()
def demo(
    orders: Annotated[
        Path | None,
        typer.Option(
            "--orders",
            help="Folder of Shopify order JSON files to replay instead of the built-in examples.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the outcome per order as JSON.")
    ] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the demo's data here instead of a temporary folder.")
    ] = None,
    erp: Annotated[
        DemoErpKind,
        typer.Option(
            help="The ERP to post to: the ERP simulator, or a real Tryton started here "
            "(needs the tryton extra: pip install 'entrepot\\[tryton]')."
        ),
    ] = DemoErpKind.SIMULATOR,
) -> None:
    """Replay signed Shopify webhooks into a hub posting to an ERP."""
    from entrepot.demo.runner import run_demo

    configure_logging("WARNING")
    if erp is DemoErpKind.TRYTON and importlib.util.find_spec("trytond") is None:
        fail(
            "Demo not started: --erp tryton needs Tryton; install it with "
            "pip install 'entrepot[tryton]', or run scripts/demo --erp tryton.",
            code=2,
        )
    try:
        passed = run_demo(
            orders_dir=orders,
            as_json=as_json,
            data_dir=data_dir,
            console=console,
            erp_kind=erp.value,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(f"Demo not started: {exc}", code=2)
    raise typer.Exit(0 if passed else 1)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Apply the store's migrations."""
    from entrepot.store.database import Database
    from entrepot.store.migrate import upgrade_to_head

    settings = _settings(config, data_dir)
    _create_data_dir(settings)
    database = Database(settings.store.database_url())
    try:
        with _store_opening(settings):
            upgrade_to_head(database)
    finally:
        database.dispose()
    console.print("Store is up to date.")


def _open_runtime(settings: Settings) -> Runtime:
    """Build the runtime, creating the data folder; a store that cannot be created
    or opened ends the command with a clear error."""
    from entrepot.runtime import Runtime

    _create_data_dir(settings)
    with _store_opening(settings):
        return Runtime(settings)


def _create_data_dir(settings: Settings) -> None:
    """Create the folder of the SQLite store, or fail with exit status 2."""
    from entrepot.store.database import sqlite_path

    path = sqlite_path(settings.store.database_url())
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(
            f"Invalid configuration: cannot create the data folder {path.parent}: "
            f"{exc.strerror or exc}; check --data-dir or [store] data_dir.",
            code=2,
        )


@contextmanager
def _store_opening(settings: Settings) -> Iterator[None]:
    """Turn a database that cannot be opened into an error message and status 1."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except OperationalError as exc:
        masked_url = make_url(settings.store.database_url()).render_as_string(hide_password=True)
        fail(
            f"Cannot open the store at {masked_url}: {exc.orig}; check --data-dir or [store] url."
        )


def _runtime_database(config: Path | None, data_dir: Path | None) -> Any:
    """Open an existing store; a store that is not there is an error, not a new one."""
    from entrepot.store.database import Database, sqlite_path
    from entrepot.store.migrate import upgrade_to_head

    settings = _settings(config, data_dir)
    url = settings.store.database_url()
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        fail(f"No store at {path}; check --data-dir, or start `entrepot run` there first.")
    with _store_opening(settings):
        database = Database(url)
        upgrade_to_head(database)
    _open_stores.append(database)
    return database


# The stores that commands opened. They are closed when the command ends, so that
# PostgreSQL records their sessions as ended, not as lost.
_open_stores: list[Any] = []


@app.callback()
def _close_stores_at_end(context: typer.Context) -> None:
    context.call_on_close(_close_stores)


def _close_stores() -> None:
    while _open_stores:
        _open_stores.pop().dispose()


@orders_app.command("list")
def orders_list(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    state: Annotated[OrderState | None, typer.Option(help="Only orders in this state.")] = None,
    limit: Annotated[int, typer.Option(help="Maximum number of orders.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List the newest orders."""
    from entrepot.hub import tracking

    database = _runtime_database(config, data_dir)
    with database.read() as session:
        orders = tracking.list_orders(session, state=state, limit=limit)
        views = [tracking.order_summary(order) for order in orders]
    if as_json:
        console.print_json(json.dumps(views))
        return
    columns = ("order", "account", "state", "total", "ERP id", "correlation id", "error")
    print_rows(columns, [_order_row(view) for view in views], blocks_when_narrow=True)


def _order_row(view: dict[str, Any]) -> tuple[str, ...]:
    total = f"{view['total']} {view['currency']}" if view["total"] is not None else ""
    return (
        view["order_number"] or view["channel_order_id"],
        view["account"],
        view["state"],
        total,
        view["erp_id"] or "",
        view["correlation_id"],
        view["last_error"] or "",
    )


@orders_app.command("show")
def orders_show(
    key: Annotated[
        str,
        typer.Argument(help="Correlation id, channel order id, or order number such as #1001."),
    ],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Show an order with its state, attempts, errors and history, as JSON."""
    from entrepot.hub import tracking

    database = _runtime_database(config, data_dir)
    with database.read() as session:
        try:
            view = tracking.look_up(session, key)
        except tracking.AmbiguousOrderKeyError as exc:
            fail(str(exc), code=2)
    if view is None:
        fail(f"No order or receipt found for {key!r}.")
    console.print_json(json.dumps(view))


@dlq_app.command("list")
def dlq_list(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    status: Annotated[
        DeadLetterFilter, typer.Option(help="Only dead letters with this status.")
    ] = DeadLetterFilter.OPEN,
    as_json: JsonOption = False,
) -> None:
    """List dead letters."""
    from entrepot.hub import tracking
    from entrepot.store.dead_letters import list_dead_letters

    database = _runtime_database(config, data_dir)
    with database.read() as session:
        wanted = None if status == DeadLetterFilter.ALL else status.value
        found = list_dead_letters(session, status=wanted)
        views = [tracking.dead_letter_view(item) for item in found]
    if as_json:
        console.print_json(json.dumps(views))
        return
    columns = ("id", "stage", "kind", "target", "status", "correlation id", "reason")
    rows = [
        (
            str(view["id"]),
            view["stage"],
            view["kind"],
            view["target"] or "",
            view["status"],
            view["correlation_id"],
            view["reason"],
        )
        for view in views
    ]
    print_rows(columns, rows, blocks_when_narrow=True)


@dlq_app.command("show")
def dlq_show(
    dead_letter_id: DeadLetterIdArgument,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Show a dead letter with the original input, as JSON."""
    from entrepot.hub import tracking

    database = _runtime_database(config, data_dir)
    with database.read() as session:
        view = tracking.dead_letter_detail(session, dead_letter_id)
    if view is None:
        fail(f"Dead letter {dead_letter_id} not found.")
    console.print_json(json.dumps(view))


ByOption = Annotated[str | None, typer.Option("--by", help="Who acts (default: your login).")]
# The largest id the store's 64-bit keys hold.
MAX_ID = 2**63 - 1
DeadLetterIdArgument = Annotated[int, typer.Argument(help="Dead letter id.", min=1, max=MAX_ID)]
# The maximum length of an operator name in the store.
MAX_OPERATOR_CHARS = 120


def operator_name(by: str | None) -> str:
    """Return who acts: ``--by``, checked, or else the login name."""
    if by is None:
        return getpass.getuser()[:MAX_OPERATOR_CHARS]
    name = by.strip()
    if not name or len(name) > MAX_OPERATOR_CHARS or printable(name) != name:
        fail(
            f"Invalid --by {by!r}: give a name of 1 to {MAX_OPERATOR_CHARS} characters, "
            "with no control characters.",
            code=2,
        )
    return name


@dlq_app.command("retry")
def dlq_retry(
    dead_letter_id: DeadLetterIdArgument,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    by: ByOption = None,
) -> None:
    """Replay a dead letter's original input through the current mapping."""
    from entrepot.delivery.dead_letters import retry_dead_letter

    _operate(retry_dead_letter, dead_letter_id, config, data_dir, by, "queued for replay")


@dlq_app.command("discard")
def dlq_discard(
    dead_letter_id: DeadLetterIdArgument,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    by: ByOption = None,
) -> None:
    """Close a dead letter without replaying it."""
    from entrepot.delivery.dead_letters import discard_dead_letter

    _operate(discard_dead_letter, dead_letter_id, config, data_dir, by, "discarded")


def _operate(
    operation: Any,
    dead_letter_id: int,
    config: Path | None,
    data_dir: Path | None,
    by: str | None,
    done: str,
) -> None:
    from entrepot.store.dead_letters import DeadLetterClosedError, DeadLetterNotFoundError

    database = _runtime_database(config, data_dir)
    try:
        operation(database, dead_letter_id, operator_name(by))
    except (DeadLetterNotFoundError, DeadLetterClosedError) as exc:
        fail(str(exc))
    console.print(f"Dead letter {dead_letter_id} {done}.")


def main() -> None:
    app()


import entrepot.cli_events  # noqa: E402, F401  (adds the replay and events commands)
