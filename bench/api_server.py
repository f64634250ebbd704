"""Serve the hub's HTTP API without its workers, like ``entrepot run`` otherwise.

The intake benchmark runs this beside ``entrepot run`` to show how much of the
acknowledgement rate the intake and delivery workers in the same process cost.

Usage: ``python -m bench.api_server CONFIG DATA_DIR PORT``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from entrepot.api.server import serve
from entrepot.config import load_settings
from entrepot.observability.logging import configure_logging
from entrepot.runtime import Runtime


def main(arguments: list[str]) -> None:
    if len(arguments) != 3:
        raise SystemExit("usage: python -m bench.api_server CONFIG DATA_DIR PORT")
    config, data_dir, port = Path(arguments[0]), Path(arguments[1]), int(arguments[2])
    settings = load_settings(
        config, store={"data_dir": data_dir}, server={"host": "127.0.0.1", "port": port}
    )
    configure_logging(settings.logging.level, settings.logging.format)
    runtime = Runtime(settings)
    try:
        asyncio.run(serve(runtime, with_workers=False))
    finally:
        runtime.close()


if __name__ == "__main__":
    main(sys.argv[1:])
