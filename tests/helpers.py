"""Small builders shared by the tests."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from api.relay import OutboxRelay
from recovery import constants as names
from recovery.models import PaymentFailedIn, RecoveryState
from recovery.store import IngestOutcome, IngestResult, Store


def failure_body(
    ref: str | None = None,
    *,
    pm: str = "pm_sim_succeed_on_3",
    decline_code: str | None = "insufficient_funds",
    code: str | None = "card_declined",
    message: str | None = "declined",
    event_id: str | None = None,
    amount: int = 4999,
    psp: str = "simulator",
    network_advice_code: str | None = None,
    psp_payment_id: str | None = None,
) -> dict[str, Any]:
    """A valid ingest body (JSON-ready dict)."""
    extra = {"psp_payment_id": psp_payment_id} if psp_payment_id else {}
    return extra | {
        "event_id": event_id or f"evt_{uuid.uuid4().hex[:12]}",
        "payment_ref": ref or f"order_{uuid.uuid4().hex[:10]}",
        "psp": psp,
        "amount": amount,
        "currency": "usd",
        "customer": {"id": "cus_1", "email": "a@example.com"},
        "payment_method": {"type": "card", "id": pm},
        "failure": {
            "code": code,
            "decline_code": decline_code,
            "message": message,
            "network_advice_code": network_advice_code,
        },
        "occurred_at": datetime.now(UTC).isoformat(),
        "metadata": {"plan": "pro"},
    }


async def ingest(
    store: Store, merchant_id: str, body: dict[str, Any], key: str | None = None
) -> IngestResult:
    model = PaymentFailedIn.model_validate_json(json.dumps(body))
    return await store.ingest_failure(
        merchant_id, model, idempotency_key=key, request_hash=uuid.uuid4().hex
    )


async def relay(store: Store, client: Client, task_queue: str) -> int:
    """Deliver every pending outbox row now, as the API's relay would."""
    r = OutboxRelay(store, client, dsn="unused", task_queue=task_queue)
    delivered, failed = await r.relay_once()
    assert failed == 0
    return delivered


async def workflow_state(handle: WorkflowHandle) -> RecoveryState:
    """The recovery workflow's `state` query."""
    return await handle.query(names.QUERY_STATE, result_type=RecoveryState)


async def wait_for_state(
    handle: WorkflowHandle, pred: Callable[[RecoveryState], bool], within: float = 10.0
) -> RecoveryState:
    """Query the workflow until its state matches `pred` (wall-clock bounded)."""
    deadline = time.monotonic() + within
    while True:
        s = await workflow_state(handle)
        if pred(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"state never matched: {s}")
        await asyncio.sleep(0.05)


async def start_recovery(
    store: Store, env: tuple[Client, str], merchant: str, **body: Any
) -> WorkflowHandle:
    """Ingest a failure (`failure_body(**body)`) and relay it: the recovery's workflow."""
    client, task_queue = env
    res = await ingest(store, merchant, failure_body(**body))
    assert res.outcome is IngestOutcome.ACCEPTED
    assert await relay(store, client, task_queue) == 1
    return client.get_workflow_handle(res.body["workflow_id"], result_type=RecoveryState)


async def run_out(ts_env: WorkflowEnvironment, handle: WorkflowHandle) -> RecoveryState:
    """Let two months pass on the time-skipping server, then take the result."""
    await ts_env.sleep(timedelta(days=60))
    return await handle.result()


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 15.0) -> Any:
    """Poll `check` until it returns something truthy without raising; else fail with the
    last answer or error."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            if last:
                return last
        except Exception as e:  # not there yet (assertion, workflow not found, ...)
            last = e
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met in {within}s; last: {last!r}")
