"""``entrepot tryton-server``: a local Tryton with the demo's data, to try the hub on."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from entrepot.terminal import console


def tryton_server(
    data_dir: Annotated[Path, typer.Option(help="Folder for the database and the log.")] = Path(
        "data/tryton"
    ),
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1; 0 picks a free one.")] = 8000,
    database: Annotated[str, typer.Option(help="Name of the Tryton database.")] = "tryton",
) -> None:
    """Run Tryton on 127.0.0.1 with a company, products, taxes and stock, until Ctrl-C.

    The first run builds the seeded database (about a minute) and caches it in
    .cache/tryton; a data folder that holds the database already is reused as it is.
    """
    from entrepot.spokes.tryton.server import TrytonServer
    from entrepot.spokes.tryton.template import copy_database, ensure_template

    target = data_dir / f"{database}.sqlite"
    if not target.is_file():
        console.print("Preparing the Tryton database (the first time takes about a minute).")
        copy_database(ensure_template(), data_dir, database)
    server = TrytonServer(data_dir, database, port)
    server.start()
    console.print(
        f"Tryton at {server.url}, database {database!r}, user admin, password admin. "
        "Ctrl-C stops it.",
        markup=False,
    )
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    try:
        stopped.wait()
    finally:
        server.stop()
        console.print("Tryton stopped.")
