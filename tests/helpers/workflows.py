"""Recoveries without the HTTP API: ingest into the store and relay the outbox as the API
would, a worker with the real activities on a task queue of its own, a time-skipping
Temporal server, and the recovery workflow's state."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.relay import OutboxRelay
from recovery import constants as names
from recovery.models import ExpediteRequest, PaymentFailedIn, RecoveryState
from recovery.store import IngestOutcome, IngestResult, Store
from scripts.stack import STARTUP_TIMEOUT_SECONDS, venv_binary
from tests.helpers.bodies import failure_body
from tests.helpers.waiting import eventually
from worker.main import build_worker

# ---- servers and workers ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server with our search attributes: days of timers pass in
    milliseconds. ``RECOVERY_TEST_CLOCK_SKIP_DAYS=N`` starts it N days ahead of today, to
    check that no workflow test depends on the date it runs on."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(venv_binary("temporal-test-server")),
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


@dataclass(frozen=True)
class RunningWorker:
    """A worker that runs: the client it polls with and its task queue."""

    client: Client
    task_queue: str


@contextlib.asynccontextmanager
async def running_worker(
    client: Client, store: Store, task_queue: str | None = None, **options: Any
) -> AsyncIterator[RunningWorker]:
    """`build_worker` (with `options`: `settings`, `psps`) polling `task_queue`, by default a
    new one of its own."""
    task_queue = task_queue or f"tq-{uuid.uuid4()}"
    async with build_worker(client, store, task_queue, **options):
        yield RunningWorker(client, task_queue)


# ---- starting a recovery ----------------------------------------------------------------------


async def ingest(
    store: Store, merchant_id: str, body: dict[str, Any], key: str | None = None
) -> IngestResult:
    """Ingest a failure body into the store, as the API does (nothing is relayed yet)."""
    model = PaymentFailedIn.model_validate_json(json.dumps(body))
    return await store.ingest_failure(
        merchant_id, model, idempotency_key=key, request_hash=uuid.uuid4().hex
    )


async def recorded_receipt(store: Store, merchant_id: str, to: str) -> int:
    """A payment of a customer at `to` ingested, and its receipt recorded as the end of a
    recovery records one (`kind` receipt, queued, no link): the notification's id."""
    body = failure_body() | {"customer": {"id": "cus_r", "email": to}}
    await ingest(store, merchant_id, body)
    note_id: int = await store.pool.fetchval(
        "INSERT INTO customer_notifications (merchant_id, payment_ref, notification_key, kind,"
        " channel, recipient) VALUES ($1, $2, $3, 'receipt', 'email', $4) RETURNING id",
        merchant_id,
        body["payment_ref"],
        f"receipt:{uuid.uuid4()}",
        to,
    )
    return note_id


async def relay(store: Store, client: Client, task_queue: str) -> int:
    """Deliver every pending outbox row now, as the API's relay would."""
    r = OutboxRelay(store, client, dsn="unused", task_queue=task_queue)
    delivered, failed = await r.relay_once()
    assert failed == 0
    return delivered


async def start_recovery(
    store: Store, worker: RunningWorker, merchant: str, **body: Any
) -> WorkflowHandle:
    """Ingest a failure (`failure_body(**body)`) and relay it: the recovery's workflow."""
    res = await ingest(store, merchant, failure_body(**body))
    assert res.outcome is IngestOutcome.ACCEPTED
    assert await relay(store, worker.client, worker.task_queue) == 1
    return worker.client.get_workflow_handle(res.body["workflow_id"], result_type=RecoveryState)


# ---- the workflow's state ---------------------------------------------------------------------


async def workflow_state(handle: WorkflowHandle) -> RecoveryState:
    """The recovery workflow's `state` query."""
    return await handle.query(names.QUERY_STATE, result_type=RecoveryState)


async def wait_for_state(
    handle: WorkflowHandle, pred: Callable[[RecoveryState], bool], within: float = 10.0
) -> RecoveryState:
    """Query the workflow until its state matches `pred` (wall-clock bounded)."""

    async def matched() -> RecoveryState:
        state = await workflow_state(handle)
        assert pred(state), state
        return state

    return await eventually(matched, within, what="workflow state", interval=0.05)


async def expedited(handle: WorkflowHandle) -> None:
    """Expedite the first attempt once the workflow waits out its cooldown."""
    await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
    await handle.signal(names.SIGNAL_EXPEDITE, ExpediteRequest(actor="t"))


async def run_out(ts_env: WorkflowEnvironment, handle: WorkflowHandle) -> RecoveryState:
    """Let two months pass on the time-skipping server, then take the result."""
    await ts_env.sleep(timedelta(days=60))
    return await handle.result()


def activities_run(history: WorkflowHistory) -> list[str]:
    """The activity types a history ran, in order: regular ones (as scheduled) and local
    ones (as their markers record them)."""
    names: list[str] = []
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            names.append(event.activity_task_scheduled_event_attributes.activity_type.name)
        elif event.HasField("marker_recorded_event_attributes"):
            data = event.marker_recorded_event_attributes.details.get("data")
            if data is not None and data.payloads:
                names.append(json.loads(data.payloads[0].data)["activity_type"])
    return names
