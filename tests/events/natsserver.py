"""A nats-server process of the tests' own, with JetStream, on a free loopback port."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

NATS_SERVER = Path("/usr/sbin/nats-server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class NatsServer:
    """A nats-server process with JetStream that can be stopped and started again on
    the same port and store directory."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = store_dir.parent / "nats-server.log"

    def start(self) -> None:
        assert self.process is None, "the server is already running"
        command = [str(NATS_SERVER), "-js", "-sd", str(self.store_dir)]
        command += ["-p", str(self.port), "-a", "127.0.0.1"]
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


def running_nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """Start a server for a module's fixture, stop it afterwards; skip without the binary."""
    if not NATS_SERVER.exists():
        pytest.skip(f"nats-server not found at {NATS_SERVER}")
    server = NatsServer(tmp_path_factory.mktemp("nats") / "store")
    server.start()
    yield server
    server.stop()
