"""The API wired to real servers: the app (with its relay) in-process over ASGI, a worker on
its own task queue, PostgreSQL and a Temporal dev server."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from recovery.auth import generate_key, register_key
from recovery.settings import Settings
from recovery.store import Store
from recovery.temporal import connect_client
from tests.psp.localstripe_server import TEST_API_KEY, localstripe
from tests.psp.razorpay_server import FakeRazorpay, fake_razorpay
from worker.main import build_worker


@dataclass
class Stack:
    http: httpx.AsyncClient
    store: Store
    temporal: Client
    settings: Settings
    merchant_id: str
    key: str

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


# Seals merchants' PSP credentials in the tests' databases (32 bytes, base64).
TEST_CREDENTIALS_KEY = "dGVzdC1jcmVkZW50aWFscy1rZXktMDEyMzQ1Njc4OTA="


def stack_settings(dsn: str, temporal_address: str, task_queue: str, **extra: Any) -> Settings:
    defaults: dict[str, Any] = {
        "link_signing_secret": "test-link-signing-secret-0123456789",
        "outbox_sweep_seconds": 0.5,
        "temporal_rpc_timeout_seconds": 2,
        "auth_failure_burst": 10_000,
        "allow_simulator": True,
        "credentials_key": TEST_CREDENTIALS_KEY,
        "environment": "test",
    }
    return Settings(
        **(defaults | extra),
        database_url=dsn,
        temporal_address=temporal_address,
        temporal_task_queue=task_queue,
    )


async def add_merchant(store: Store, role: str = "support") -> tuple[str, str]:
    merchant_id = f"mer_{uuid.uuid4().hex[:10]}"
    await store.ensure_merchant(merchant_id, "Test Merchant")
    key = generate_key()
    await register_key(store, merchant_id, role, key)
    return merchant_id, key


@contextlib.asynccontextmanager
async def running_stack(
    store: Store, dsn: str, temporal_address: str, *, worker: bool = True, **extra: Any
) -> AsyncIterator[Stack]:
    """`extra` are more settings (e.g. PSP credentials)."""
    task_queue = f"tq-{uuid.uuid4()}"
    settings = stack_settings(dsn, temporal_address, task_queue, **extra)
    app = create_app(settings)
    merchant_id, key = await add_merchant(store)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        temporal = await connect_client(settings, lazy=not worker)
        if worker:
            await stack.enter_async_context(
                build_worker(temporal, store, task_queue, settings=settings)
            )
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")
        )
        yield Stack(http, store, temporal, settings, merchant_id, key)


@pytest.fixture
async def api(store: Store, pg_dsn: str, dev_env: WorkflowEnvironment) -> AsyncIterator[Stack]:
    address = dev_env.client.service_client.config.target_host
    async with running_stack(store, pg_dsn, address) as stack:
        yield stack


@pytest.fixture
def rzp() -> Iterator[FakeRazorpay]:
    with fake_razorpay(debit_delay=0) as fake:  # instant debits: see test_razorpay_debits
        yield fake


@pytest.fixture
async def rzp_api(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment, rzp: FakeRazorpay
) -> AsyncIterator[Stack]:
    address = dev_env.client.service_client.config.target_host
    async with running_stack(
        store,
        pg_dsn,
        address,
        razorpay_key_id=rzp.key_id,
        razorpay_key_secret=rzp.key_secret,
        razorpay_webhook_secret=rzp.webhook_secret,
        razorpay_api_base=rzp.base_url,
    ) as stack:
        yield stack


STRIPE_WHSEC = "whsec_test_end_to_end_0123456789"
RAZORPAY_WHSEC = "razorpay-webhook-secret-e2e"


@pytest.fixture(scope="module")
def stripe_base() -> Iterator[str]:
    with localstripe() as url:
        yield url


@pytest.fixture
async def psp_api(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment, stripe_base: str
) -> AsyncIterator[Stack]:
    address = dev_env.client.service_client.config.target_host
    async with running_stack(
        store,
        pg_dsn,
        address,
        stripe_api_key=TEST_API_KEY,
        stripe_api_base=stripe_base,
        stripe_webhook_secret=STRIPE_WHSEC,
        razorpay_key_id="rzp_test_e2e",
        razorpay_key_secret="rzp_secret_e2e",
        razorpay_webhook_secret=RAZORPAY_WHSEC,
    ) as stack:
        yield stack
