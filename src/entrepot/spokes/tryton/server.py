"""Run a trytond server for one SQLite database as a child process on 127.0.0.1."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from entrepot.demo.processes import free_port
from entrepot.spokes.tryton.template import (
    ADMIN_LOGIN,
    ADMIN_PASSWORD,
    executable,
    tryton_env,
)

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
VERSION_REQUEST = {"id": 0, "method": "common.server.version", "params": []}


class TrytonServer:
    """A ``trytond`` process serving the database ``<data_dir>/<database>.sqlite``.

    The port is chosen once (a free one when ``port`` is 0) and kept, so ``stop()``
    followed by ``start()`` brings the same server back on the same data, as after an
    outage. The server's output is appended to ``<data_dir>/trytond-<database>.log``.
    """

    def __init__(
        self,
        data_dir: Path,
        database: str,
        port: int = 0,
        *,
        startup_timeout: float = 60.0,
    ) -> None:
        self.data_dir = data_dir
        self.database = database
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.username = ADMIN_LOGIN
        self.password = ADMIN_PASSWORD
        self.log_path = data_dir / f"trytond-{database}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL; database calls go to ``<url>/<database>/rpc/``."""
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it responds to JSON-RPC.

        ``-d`` makes trytond load the database's modules before it listens, because a
        database loaded lazily by the first login fails to find ``res.user``. Raises
        RuntimeError with the end of the server's log if it exits or does not respond
        within ``startup_timeout`` seconds; the process is stopped in that case. Raises
        FileNotFoundError if the database file does not exist.
        """
        if self.running:
            return
        # trytond would log the missing database and serve anyway, failing every call
        # on it, so check before starting.
        database_file = self.data_dir / f"{self.database}.sqlite"
        if not database_file.is_file():
            raise FileNotFoundError(
                f"Tryton database {self.database!r} not found: {database_file} does not "
                "exist. Create it with template.copy_database()."
            )
        started = time.monotonic()
        self._log = self.log_path.open("ab")
        env = tryton_env(self.data_dir, TRYTOND_WEB__LISTEN=f"{HOST}:{self.port}")
        self._process = subprocess.Popen(
            [executable("trytond"), "-d", self.database, "-v"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.data_dir,
        )
        try:
            self._wait_until_ready(self._process)
        except BaseException:
            self.stop()
            raise
        logger.debug(
            "Tryton server for %r is up at %s after %.2f s",
            self.database,
            self.url,
            time.monotonic() - started,
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server with SIGTERM, or SIGKILL if it has not exited after
        ``timeout`` seconds. Does nothing when it is not running."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "Tryton server for %r ignored SIGTERM for %s s; killing it",
                    self.database,
                    timeout,
                )
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, max_chars: int = 3000) -> str:
        """Return the end of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except FileNotFoundError:
            return ""

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"trytond for database {self.database!r} exited with code "
                        f"{process.returncode} while starting. The end of "
                        f"{self.log_path}:\n{self.log_tail()}"
                    )
                if self._responds(client):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"trytond for database {self.database!r} did not respond at "
                        f"{self.url}/rpc/ within {self.startup_timeout} s. The end of "
                        f"{self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(0.1)

    def _responds(self, client: httpx.Client) -> bool:
        try:
            response = client.post(f"{self.url}/rpc/", json=VERSION_REQUEST)
            return response.status_code == 200 and "result" in response.json()
        except (httpx.HTTPError, ValueError):
            return False

    def __enter__(self) -> TrytonServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
