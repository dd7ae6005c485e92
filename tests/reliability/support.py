"""Shared pieces of the reliability suite: the figures each test reports, the bank of workflow
histories the suite produced (replayed at its end), a worker process that can be SIGKILLed,
and small helpers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter

from recovery import constants as names
from recovery.models import FailureEvent
from scripts.stack import Process
from tests.integration.conftest import Stack

INGEST = "/v1/events/payment_failed"
T = TypeVar("T")

# ---- figures ----------------------------------------------------------------------------------

FIGURES: dict[str, dict[str, Any]] = {}
_figures_dir: Path | None = None


def figures_file() -> Path:
    """Where this run's figures are written as JSON (a fresh temporary directory)."""
    global _figures_dir
    if _figures_dir is None:
        _figures_dir = Path(tempfile.mkdtemp(prefix="recovery-reliability-"))
    return _figures_dir / "figures.json"


def record(test: str, **figures: Any) -> None:
    """Keep a test's figures for the summary line and the JSON file."""
    FIGURES.setdefault(test, {}).update(figures)
    figures_file().write_text(json.dumps(FIGURES, indent=2, sort_keys=True, default=str))


def summary_line(test: str) -> str:
    figures = " ".join(f"{k}={v}" for k, v in FIGURES[test].items())
    return f"reliability {test}: {figures}"


# ---- workflow histories -----------------------------------------------------------------------

HISTORIES: list[tuple[str, WorkflowHistory]] = []
"""(source test, history) of every recovery workflow run the suite's servers saw."""
BANK_ERRORS: list[str] = []
"""Servers whose histories could not be fetched (the replay test fails on any)."""

RECOVERY_RUNS = f'WorkflowType="{names.RECOVERY_WORKFLOW}"'


async def fetch_histories(client: Client, query: str = RECOVERY_RUNS) -> list[WorkflowHistory]:
    return [h async for h in client.list_workflows(query).map_histories()]


async def bank_histories(address: str, source: str) -> int:
    """Fetch every recovery workflow history from the Temporal server at `address`."""
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    histories = await fetch_histories(client)
    HISTORIES.extend((source, h) for h in histories)
    return len(histories)


def payment_failed_signals(history: WorkflowHistory) -> list[FailureEvent]:
    """The `payment_failed` events signalled into one workflow run (signal-with-start too)."""
    converter = pydantic_data_converter.payload_converter
    found = []
    for event in history.events:
        if not event.HasField("workflow_execution_signaled_event_attributes"):
            continue
        attrs = event.workflow_execution_signaled_event_attributes
        if attrs.signal_name == names.SIGNAL_PAYMENT_FAILED:
            (failure,) = converter.from_payloads(attrs.input.payloads, [FailureEvent])
            found.append(failure)
    return found


async def delivered_events(client: Client, merchant_id: str) -> dict[str, list[str]]:
    """Event id -> the workflow ids it was signalled into, over every run of the merchant."""
    where: dict[str, list[str]] = defaultdict(list)
    for history in await fetch_histories(client, f'MerchantId="{merchant_id}"'):
        for failure in payment_failed_signals(history):
            where[failure.event_id].append(history.workflow_id)
    return where


# ---- waiting ----------------------------------------------------------------------------------


async def wait_until(
    check: Callable[[], Awaitable[T]], *, within: float, what: str, interval: float = 0.2
) -> T:
    """Poll `check` until it returns something truthy (exceptions count as not yet)."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except Exception as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {within:.0f}s; last: {last!r}")
        await asyncio.sleep(interval)


# ---- the API ----------------------------------------------------------------------------------


async def put_policy(api: Stack, **fields: Any) -> dict[str, Any]:
    r = await api.http.put("/v1/policy", json=fields, headers=api.auth())
    assert r.status_code == 200, r.text
    return r.json()


def is_envelope(body: Any) -> bool:
    """`{"error": {"code": str, "message": str, "field"?: str}}` and nothing else."""
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return False
    err = body["error"]
    return (
        {"code", "message"} <= set(err) <= {"code", "message", "field"}
        and isinstance(err["code"], str)
        and bool(err["code"])
        and isinstance(err["message"], str)
        and bool(err["message"])
        and isinstance(err.get("field", ""), str)
    )


# ---- a worker process -------------------------------------------------------------------------


class WorkerProcess:
    """`python -m worker` as a child process (`scripts.stack.Process`), logging to a file;
    killed with SIGKILL."""

    def __init__(self, dsn: str, address: str, task_queue: str, log_dir: Path) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_TASK_QUEUE": task_queue,
            "ENVIRONMENT": "development",
            "ALLOW_SIMULATOR": "true",
            "LOG_FORMAT": "text",
        }
        self.log_dir = log_dir
        self.proc: Process | None = None
        self.starts = 0
        self.kills = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def start(self) -> None:
        assert not self.running
        self.starts += 1
        log = self.log_dir / f"worker-{self.starts}.log"
        self.proc = Process("worker", [sys.executable, "-m", "worker"], self.env, log=log)

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, activities in flight are abandoned."""
        assert self.running, f"the worker exited on its own:\n{self.log_tail()}"
        self.kills += 1
        self.stop()

    def stop(self) -> None:
        """Make sure the process is gone (cleanup: also SIGKILL, not counted as a trial)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc = None

    def log_tail(self, chars: int = 3000) -> str:
        logs = sorted(self.log_dir.glob("worker-*.log"))
        return logs[-1].read_text(errors="replace")[-chars:] if logs else ""
