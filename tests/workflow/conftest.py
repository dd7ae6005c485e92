"""Workflow tests: a worker with the real activities on a time-skipping server of the
test's own (see `ts_env`), polling a task queue of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from recovery.store import Store
from worker.main import build_worker


@pytest.fixture
async def env(ts_env: WorkflowEnvironment, store: Store) -> AsyncIterator[tuple[Client, str]]:
    """(client, task queue) of a running worker."""
    task_queue = f"tq-{uuid.uuid4()}"
    async with build_worker(ts_env.client, store, task_queue):
        yield ts_env.client, task_queue
