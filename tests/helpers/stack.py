"""The API wired to real servers, in-process: the app (with its outbox relay) over ASGI, a
worker on a task queue of its own, PostgreSQL and a Temporal server; and the calls the tests
make on it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from temporalio.client import Client

from api.app import create_app
from recovery.auth import generate_key, register_key
from recovery.settings import Settings
from recovery.store import Store
from recovery.temporal import connect_client
from tests.helpers.bodies import INGEST, failure_body
from tests.helpers.waiting import eventually
from worker.main import build_worker

# Seals merchants' PSP credentials in the tests' databases (32 bytes, base64).
TEST_CREDENTIALS_KEY = "dGVzdC1jcmVkZW50aWFscy1rZXktMDEyMzQ1Njc4OTA="


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


def stack_settings(dsn: str, temporal_address: str, task_queue: str, **extra: Any) -> Settings:
    defaults: dict[str, Any] = {
        "link_signing_secret": "test-link-signing-secret-0123456789",
        "outbox_sweep_seconds": 0.5,
        "temporal_rpc_timeout_seconds": 2,
        "auth_failure_burst": 10_000,
        "allow_simulator": True,
        "credentials_key": TEST_CREDENTIALS_KEY,
        "environment": "test",  # a test may run in development (e.g. local webhook endpoints)
    }
    return Settings(
        **(defaults | extra),
        database_url=dsn,
        temporal_address=temporal_address,
        temporal_task_queue=task_queue,
    )


async def add_merchant(store: Store, role: str = "support") -> tuple[str, str]:
    """A new merchant and an API key of `role` for it: (merchant id, key)."""
    merchant_id = f"mer_{uuid.uuid4().hex[:10]}"
    await store.ensure_merchant(merchant_id, "Test Merchant")
    key = generate_key()
    await register_key(store, merchant_id, role, key)
    return merchant_id, key


@contextlib.asynccontextmanager
async def running_stack(
    store: Store,
    dsn: str,
    temporal_address: str,
    *,
    worker: bool = True,
    run_relay: bool = True,
    **extra: Any,
) -> AsyncIterator[Stack]:
    """`extra` are more settings (e.g. PSP credentials). Without `run_relay` the app's outbox
    relay neither listens nor sweeps: nothing is handed to Temporal unless a request does."""
    task_queue = f"tq-{uuid.uuid4()}"
    settings = stack_settings(dsn, temporal_address, task_queue, **extra)
    app = create_app(settings, run_relay=run_relay)
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


# ---- calls on the stack -----------------------------------------------------------------------


async def recovery(api: Stack, ref: str) -> dict[str, Any]:
    """`GET /v1/recoveries/by_ref/{ref}` (it must answer 200)."""
    r = await api.http.get(f"/v1/recoveries/by_ref/{ref}", headers=api.auth())
    assert r.status_code == 200, r.text
    return r.json()


async def has_next_attempt(api: Stack, ref: str) -> bool:
    rec = await recovery(api, ref)
    return rec["status"] == "active" and rec["next_attempt_at"] is not None


async def scheduled_recovery(api: Stack, body: dict[str, Any] | None = None, **kw: Any) -> str:
    """Post a failure (`body`, else `failure_body(**kw)`) and wait until its first attempt is
    scheduled; its payment_ref."""
    body = body or failure_body(**kw)
    r = await api.http.post(INGEST, json=body, headers=api.auth())
    assert r.status_code == 202, r.text
    await eventually(lambda: has_next_attempt(api, body["payment_ref"]))
    return body["payment_ref"]


async def counts(api: Stack, merchant_id: str) -> tuple[int, int, int]:
    """The merchant's (payment events, transactions, outbox rows)."""
    row = await api.store.pool.fetchrow(
        "SELECT (SELECT count(*) FROM payment_events WHERE merchant_id = $1) AS events,"
        " (SELECT count(*) FROM transactions WHERE merchant_id = $1) AS txs,"
        " (SELECT count(*) FROM outbox WHERE payload->>'merchant_id' = $1) AS outbox",
        merchant_id,
    )
    return row["events"], row["txs"], row["outbox"]


async def put_policy(api: Stack, **fields: Any) -> dict[str, Any]:
    r = await api.http.put("/v1/policy", json=fields, headers=api.auth())
    assert r.status_code == 200, r.text
    return r.json()


async def expedite(api: Stack, ref: str) -> None:
    """Expedite as a well-behaved client does: a 503 (the workflow's worker is just back and
    still replaying) is retried after its Retry-After."""
    for _ in range(10):
        r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/expedite", headers=api.auth())
        if r.status_code != 503:
            assert r.status_code == 200, r.text
            return
        await asyncio.sleep(int(r.headers.get("Retry-After", "1")))
    raise AssertionError(f"expedite of {ref} kept answering 503")


async def stripe_failure(api: Stack, customer: str, pm: str | None) -> str:
    """A Stripe funds failure of `customer` (on `pm`, else the customer's default card); its
    ref once its first attempt is scheduled."""
    body = failure_body(psp="stripe", decline_code="insufficient_funds", pm="x")
    body["customer"] = {"id": customer, "email": "c@example.com"}
    body["payment_method"] = {"type": "card", "id": pm}
    return await scheduled_recovery(api, body)


async def razorpay_failure(api: Stack, customer_id: str = "cust_e2e") -> str:
    """A Razorpay funds failure; its ref once its first attempt is scheduled."""
    body = failure_body(psp="razorpay", decline_code="insufficient_funds", pm="token_ok")
    body["currency"] = "inr"
    body["customer"] = {"id": customer_id, "email": "c@example.com"}
    return await scheduled_recovery(api, body)
