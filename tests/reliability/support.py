"""Shared pieces of the reliability suite: the figures each test reports, the bank of workflow
histories the suite produced (replayed at its end), Temporal servers that bank theirs, a
worker process that can be SIGKILLed, and the recoveries' rows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter

from recovery import constants as names
from recovery.models import FailureEvent
from scripts.stack import Process
from tests.helpers.stack import Stack
from tests.integration.servers import TemporalDevServer

BANK_TIMEOUT = 60.0  # seconds to fetch one server's histories; more fails the replay test

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


# ---- servers ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving_temporal(db_dir: Path, source: str) -> AsyncIterator[TemporalDevServer]:
    """A Temporal dev server on a database file in `db_dir`, which the test may stop and
    start; its recovery histories are banked for the replay test before it stops for good."""
    server = TemporalDevServer(db_dir / "temporal.db")
    await server.start()
    try:
        yield server
    finally:
        try:
            if server.env is None:  # left stopped by a failed test: bring it back to read it
                await server.start()
            await asyncio.wait_for(bank_histories(server.address, source), BANK_TIMEOUT)
        except Exception as e:
            BANK_ERRORS.append(f"{source}: {type(e).__name__}: {e}")
        finally:
            await server.stop()


# ---- recoveries in the database -----------------------------------------------------------------


async def recovery_statuses(api: Stack) -> dict[str, tuple[str, bool]]:
    """payment_ref -> (status, whether an attempt is scheduled) of the merchant's recoveries."""
    rows = await api.store.pool.fetch(
        "SELECT payment_ref, status, next_attempt_at IS NOT NULL AS scheduled FROM recoveries"
        " WHERE merchant_id = $1",
        api.merchant_id,
    )
    return {r["payment_ref"]: (r["status"], r["scheduled"]) for r in rows}


async def pending_attempts(api: Stack, refs: list[str]) -> int:
    """How many attempts of these payments are pending (a charge in flight)."""
    return await api.store.pool.fetchval(
        "SELECT count(*) FROM attempts a JOIN recoveries r ON r.id = a.recovery_id"
        " WHERE r.merchant_id = $1 AND r.payment_ref = ANY($2) AND a.status = 'pending'",
        api.merchant_id,
        refs,
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
