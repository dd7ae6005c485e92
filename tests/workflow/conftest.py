"""Workflow tests: a time-skipping server of the test's own (`ts_env`) and a worker with the
real activities on it (`worker`), polling a task queue of its own. Start recoveries with
`tests.helpers.start_recovery(store, worker, merchant, ...)`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

from recovery.settings import Settings
from recovery.store import Store
from tests.helpers import RunningWorker, running_worker
from tests.helpers.workflows import time_skipping_server


@pytest.fixture
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server of the test's own (it starts in about 0.1 s), because its
    clock is shared by whatever runs on it: a test that skips weeks ahead would otherwise
    move every later test's calendar (and payday rules) by the order the tests happen to run
    in."""
    async with time_skipping_server() as env:
        yield env


@pytest.fixture
def worker_settings() -> Settings | None:
    """The worker's settings. None: `build_worker`'s development defaults, the simulator
    included. A module whose worker needs a PSP of its own overrides this fixture."""
    return None


@pytest.fixture
async def worker(
    ts_env: WorkflowEnvironment, store: Store, worker_settings: Settings | None
) -> AsyncIterator[RunningWorker]:
    """A running worker on `ts_env`, on a task queue of its own."""
    async with running_worker(ts_env.client, store, settings=worker_settings) as running:
        yield running


@pytest.fixture
async def dev_worker(dev_env: WorkflowEnvironment, store: Store) -> AsyncIterator[RunningWorker]:
    """A running worker on the Temporal dev server (for what the test server lacks)."""
    async with running_worker(dev_env.client, store) as running:
        yield running
