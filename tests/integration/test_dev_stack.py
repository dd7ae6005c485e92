"""Smoke test of the README's `make dev` path: `python -m scripts.dev` on a fresh data dir.

Starts the whole stack (embedded PostgreSQL, Temporal dev server, worker, API) as a newcomer
would, posts one failure and waits until its workflow has classified it (which needs the
outbox relay, Temporal and the worker all running), stops it with Ctrl-C and checks nothing is
left behind; then starts it again on the same data dir and checks the key and the data
survived.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import uuid
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.helpers import eventually, failure_body, free_port

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY_LINE = re.compile(r"^API key: (rk_test_\S+)$")
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
CLASSIFY_TIMEOUT = 60.0


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class DevStack:
    """One run of `python -m scripts.dev` in the background, its output collected."""

    def __init__(self, data_dir: Path, ports: dict[str, int], metrics: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.ports = ports
        self.metrics = metrics
        self.lines: list[str] = []
        self.api_key: str | None = None
        self._key_seen = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['API_PORT']}"

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def process(self) -> asyncio.subprocess.Process:
        assert self._process is not None, "not started"
        return self._process

    async def start(self) -> str:
        """Start it and wait for the banner; returns the API key it printed."""
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")}
        env.update({name: str(port) for name, port in self.ports.items()})
        env.update(self.metrics)
        env.update(RECOVERY_DATA_DIR=str(self.data_dir), PYTHONUNBUFFERED="1")
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "scripts.dev",
            cwd=REPO_ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read_output())
        exited = asyncio.create_task(self.process.wait())
        key_seen = asyncio.create_task(self._key_seen.wait())
        await asyncio.wait(
            {exited, key_seen}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        exited.cancel()
        key_seen.cancel()
        if self.api_key is None:
            state = (
                f"it exited with code {self.process.returncode}"
                if self.process.returncode is not None
                else f"no 'API key:' line within {START_TIMEOUT:.0f} s"
            )
            pytest.fail(f"scripts.dev did not start: {state}; its output:\n{self.output}")
        return self.api_key

    async def _read_output(self) -> None:
        assert self.process.stdout is not None
        # Keep reading until EOF: the children write into the same pipe and must never block.
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if self.api_key is None and (match := KEY_LINE.match(line)):
                self.api_key = match.group(1)
                self._key_seen.set()

    def processes(self) -> list[psutil.Process]:
        """Every process of the stack: our child's descendants and the embedded postmaster."""
        found = psutil.Process(self.process.pid).children(recursive=True)
        pid_file = self.data_dir / "pg" / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            found.append(psutil.Process(int(pid_file.read_text().split()[0])))
        return found

    async def interrupt(self) -> tuple[int, list[psutil.Process]]:
        """Ctrl-C; returns its exit code and the processes it had running."""
        processes = self.processes()
        self.process.send_signal(signal.SIGINT)
        try:
            code = await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            pytest.fail(f"scripts.dev did not exit within {STOP_TIMEOUT:.0f} s of SIGINT")
        await self._finish_reading()
        return code, processes

    async def _finish_reading(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reader, 5)

    async def kill(self) -> None:
        """Last-resort cleanup: kill whatever of the stack is still running."""
        if self._process is None:
            return
        leftovers: list[psutil.Process] = []
        running = self.process.returncode is None
        if running:
            with contextlib.suppress(psutil.Error):
                leftovers = self.processes()
            self.process.kill()
        else:
            with contextlib.suppress(OSError, ValueError, psutil.Error):
                pid_file = self.data_dir / "pg" / "postmaster.pid"
                leftovers = [psutil.Process(int(pid_file.read_text().split()[0]))]
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(leftovers, timeout=10)
        if running:  # after its children: one left holding its output pipe keeps Python
            # 3.11's `Process.wait()` from returning
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        await self._finish_reading()


def describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline()[:3])}"
    except psutil.Error:
        return str(proc.pid)


def is_gone(proc: psutil.Process) -> bool:
    """Exited; a zombie counts, as it waits only for its (new) parent to reap it."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def assert_all_stopped(stack: DevStack, processes: list[psutil.Process]) -> None:
    seen = [describe(p) for p in processes]
    assert len(processes) >= 4, f"expected temporal, worker, api and postgres, saw {seen}"

    async def all_gone() -> bool:
        alive = [p for p in processes if not is_gone(p)]
        assert not alive, f"left running after Ctrl-C: {[describe(p) for p in alive]}"
        return True

    await eventually(all_gone, within=10, what="the stack stopped", interval=0.2)
    busy = [name for name, port in stack.ports.items() if not port_is_free(port)]
    assert not busy, f"ports still in use after Ctrl-C: {busy}\n{stack.output}"


async def cli_beside(checkout: Path, *args: str) -> str:
    """`recovery ...` run in a subdirectory of `checkout`, with no DATABASE_URL."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "RECOVERY_DATA_DIR")}
    cwd = checkout / "somewhere"
    cwd.mkdir(exist_ok=True)
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "recovery.cli",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 0, err.decode()
    return out.decode()


async def assert_metrics_apart(stack: DevStack, metrics: dict[str, str]) -> None:
    """Both metrics URLs are in the banner and answer; the API port has no /metrics."""
    api, worker = (f"http://{metrics[name]}/metrics" for name in metrics)
    banner = [line for line in stack.lines if line.strip().startswith("Metrics:")]
    assert banner and api in banner[0] and worker in banner[0], stack.output
    async with httpx.AsyncClient(timeout=10) as http:
        assert "recovery_recoveries" in (await http.get(api)).text
        assert (await http.get(worker)).status_code == 200
        assert (await http.get(f"{stack.api_url}/metrics")).status_code == 404


async def assert_customer_emailed(stack: DevStack, headers: dict[str, str]) -> None:
    """A hard decline e-mails the customer: `make dev` keeps the message in `.data/mail` and
    says so in a line of its own, as the README tells a newcomer."""
    body = failure_body(decline_code="lost_card")
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=10) as http:
        response = await http.post("/v1/events/payment_failed", json=body)
        assert response.status_code == 202, response.text

    async def kept() -> list[Path]:
        return list((stack.data_dir / "mail").glob("*.eml"))

    [message] = await eventually(kept, CLASSIFY_TIMEOUT, what="the e-mail in .data/mail")
    parsed = message_from_bytes(message.read_bytes(), policy=policy.default)
    text = parsed.get_body(("plain",))
    assert text is not None and f"{stack.api_url}/pay/retry/" in text.get_content()

    async def said() -> list[str]:  # the line may come through the pipe after the file
        return [ln for ln in stack.lines if ln.startswith("mail ") and "a@example.com" in ln]

    lines = await eventually(said, 10, what="the `mail |` line")
    assert lines and str(message) in lines[0], stack.output


async def test_make_dev_runs_the_stack_and_keeps_its_data(tmp_path: Path) -> None:
    data_dir = tmp_path / ".data"  # as in a checkout: the CLI below finds it by itself
    ports = {"API_PORT": free_port(), "TEMPORAL_PORT": free_port(), "TEMPORAL_UI_PORT": free_port()}
    metrics = {
        "METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "WORKER_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    ref = f"order_smoke_{uuid.uuid4().hex[:8]}"

    first = DevStack(data_dir, ports, metrics)
    try:
        key = await first.start()
        assert (data_dir / "dev-api-key").stat().st_mode & 0o777 == 0o600
        assert (data_dir / "link-signing-secret").stat().st_mode & 0o777 == 0o600
        assert (data_dir / "credentials-key").stat().st_mode & 0o777 == 0o600
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=first.api_url, headers=headers, timeout=10) as http:
            body = failure_body(ref, pm="pm_sim_succeed_on_2")
            response = await http.post("/v1/events/payment_failed", json=body)
            assert response.status_code == 202, response.text
            ingested = response.json()
            assert set(ingested) >= {
                "recovery_id",
                "workflow_id",
                "payment_ref",
                "status",
                "duplicate",
            }
            assert ingested["payment_ref"] == ref
            assert ingested["duplicate"] is False

            async def classified() -> dict[str, Any]:
                """Its workflow has classified it and planned an attempt."""
                response = await http.get(f"/v1/recoveries/by_ref/{ref}")
                assert response.status_code == 200, response.text
                found = response.json()
                assert found["category"] is not None and found["next_attempt_at"] is not None
                return found

            recovery = await eventually(
                classified, CLASSIFY_TIMEOUT, what=f"recovery {ref} classified", interval=0.5
            )
        assert recovery["category"] == "funds"
        assert recovery["recovery_id"] == ingested["recovery_id"]
        await assert_customer_emailed(first, headers)
        assert "mer_demo" in await cli_beside(tmp_path, "merchants", "list", "--json")
        await assert_metrics_apart(first, metrics)

        code, processes = await first.interrupt()
        assert code == 0, first.output
        await assert_all_stopped(first, processes)
        assert not (data_dir / "dev-stack.json").exists(), "a stopped stack is not found"
    finally:
        await first.kill()

    second = DevStack(data_dir, ports, metrics)
    try:
        assert await second.start() == key, "a restart on the same data dir must keep the key"
        async with httpx.AsyncClient(base_url=second.api_url, headers=headers, timeout=10) as http:
            response = await http.get(f"/v1/recoveries/by_ref/{ref}")
        assert response.status_code == 200, response.text
        assert response.json()["recovery_id"] == ingested["recovery_id"]

        code, processes = await second.interrupt()
        assert code == 0, second.output
        await assert_all_stopped(second, processes)
    finally:
        await second.kill()
