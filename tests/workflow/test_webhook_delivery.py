"""Merchant webhook delivery on the time-skipping server: days of retries pass in seconds, and
every try is a real POST to a receiver on 127.0.0.1. WebhookEndpointWorkflow (one per
endpoint, draining its queue in passes) first; then WebhookDeliveryWorkflow (one per event,
kept for the runs started before deliveries went per endpoint)."""

from __future__ import annotations

import asyncio
import uuid

from standardwebhooks.webhooks import Webhook
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from recovery import constants as names
from recovery.models import WebhookDeliveryRequest, WebhookDeliveryResult, WebhookEndpointInput
from recovery.settings import Settings
from recovery.store import Store
from tests.helpers.stack import TEST_CREDENTIALS_KEY
from tests.helpers.webhooks import (
    Received,
    endpoint_with_event,
    recovery_started,
    webhook_receiver,
)
from worker.main import build_worker

SETTINGS = Settings(
    environment="development", allow_simulator=True, credentials_key=TEST_CREDENTIALS_KEY
)


async def _drain(
    ts_env: WorkflowEnvironment, store: Store, merchant: str, endpoint_id: str
) -> WorkflowHandle[object, object]:
    """Start the endpoint's workflow as the relay does (signal-with-start) and wait until it
    ends: it ends once its queue has been empty for WEBHOOK_ENDPOINT_IDLE."""
    task_queue = f"tq-{uuid.uuid4()}"
    async with build_worker(ts_env.client, store, task_queue, settings=SETTINGS):
        handle = await ts_env.client.start_workflow(
            names.WEBHOOK_ENDPOINT_WORKFLOW,
            WebhookEndpointInput(merchant_id=merchant, endpoint_id=endpoint_id),
            id=names.webhook_endpoint_workflow_id(endpoint_id),
            task_queue=task_queue,
            start_signal=names.SIGNAL_WEBHOOKS_QUEUED,
        )
        await asyncio.wait_for(handle.result(), timeout=120)
        return handle


async def _queued(store: Store, endpoint_id: str) -> int:
    return int(
        await store.pool.fetchval(
            "SELECT count(*) FROM webhook_queue WHERE endpoint_id = $1", endpoint_id
        )
    )


async def _tried_for_three_days(
    store: Store, tries: list[Received], event_id: str, secret: str
) -> None:
    """Every try of the event, the same bytes and id, each signed afresh, logged in order,
    the last with no next try."""
    assert 75 < len(tries) < 90, len(tries)  # 5 s, 10 s, ... hourly, for 3 days
    assert {t.headers["webhook-id"] for t in tries} == {event_id}
    assert {t.body for t in tries} == {tries[0].body}
    for t in tries[-3:]:  # each try signed afresh (its own timestamp)
        Webhook(secret).verify(t.body, t.headers)
    log = await store.pool.fetch(
        "SELECT attempt, next_retry_at FROM webhook_deliveries WHERE event_id = $1"
        " ORDER BY attempt",
        event_id,
    )
    assert [r["attempt"] for r in log] == list(range(1, len(tries) + 1))
    assert log[-1]["next_retry_at"] is None and log[0]["next_retry_at"] is not None


async def test_an_endpoint_that_never_takes_a_delivery_is_tried_for_three_days(
    ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with webhook_receiver(default=503) as receiver:
        endpoint_id, event_id, secret = await endpoint_with_event(
            store, merchant, receiver.url, SETTINGS
        )
        await _drain(ts_env, store, merchant, endpoint_id)
    await _tried_for_three_days(store, receiver.received, event_id, secret)
    assert await _queued(store, endpoint_id) == 0  # given up: off the queue


async def test_a_failed_try_is_retried_5_s_later_then_the_run_ends_when_idle(
    ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with webhook_receiver([500]) as receiver:
        endpoint_id, event_id, _ = await endpoint_with_event(
            store, merchant, receiver.url, SETTINGS
        )
        handle = await _drain(ts_env, store, merchant, endpoint_id)
    assert [t.headers["webhook-id"] for t in receiver.received] == [event_id, event_id]
    log = await store.pool.fetch(
        "SELECT attempt, status_code, next_retry_at FROM webhook_deliveries"
        " WHERE event_id = $1 ORDER BY attempt",
        event_id,
    )
    assert [(r["attempt"], r["status_code"]) for r in log] == [(1, 500), (2, 200)]
    assert log[1]["next_retry_at"] is None
    assert await _queued(store, endpoint_id) == 0
    timers = [
        e.timer_started_event_attributes.start_to_fire_timeout.ToSeconds()
        async for e in handle.fetch_history_events()
        if e.HasField("timer_started_event_attributes")
    ]
    # the retry's wait (5 s from the pass), then idle until the run ends
    assert len(timers) == 2 and timers[0] <= 5 and timers[1] == 600, timers


async def test_a_burst_of_deliveries_to_one_endpoint_is_one_pass_of_one_run(
    ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    """More deliveries than one round takes (WEBHOOK_PASS_SIZE): every one delivered once,
    by one activity of one run (two rounds), not a workflow each."""
    n = names.WEBHOOK_PASS_SIZE + 10
    with webhook_receiver() as receiver:
        endpoint_id, first, _ = await endpoint_with_event(store, merchant, receiver.url, SETTINGS)
        events = {first} | {await recovery_started(store, merchant) for _ in range(n - 1)}
        handle = await _drain(ts_env, store, merchant, endpoint_id)
    sent = [t.headers["webhook-id"] for t in receiver.received]
    assert sorted(sent) == sorted(events) and len(sent) == n
    passes = [
        e
        async for e in handle.fetch_history_events()
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert len(passes) == 1
    log = await store.pool.fetch(
        "SELECT attempt FROM webhook_deliveries WHERE endpoint_id = $1", endpoint_id
    )
    assert len(log) == n and {r["attempt"] for r in log} == {1}
    assert await _queued(store, endpoint_id) == 0


async def test_a_deleted_endpoints_queue_is_dropped_and_its_run_ends(
    ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with webhook_receiver(default=500) as receiver:
        endpoint_id, _, _ = await endpoint_with_event(store, merchant, receiver.url, SETTINGS)
        assert await _queued(store, endpoint_id) == 1
        await store.delete_webhook_endpoint(merchant, endpoint_id)
        assert await _queued(store, endpoint_id) == 0
        await _drain(ts_env, store, merchant, endpoint_id)
    assert receiver.received == []


async def _deliver(
    ts_env: WorkflowEnvironment, store: Store, req: WebhookDeliveryRequest
) -> WebhookDeliveryResult:
    task_queue = f"tq-{uuid.uuid4()}"
    async with build_worker(ts_env.client, store, task_queue, settings=SETTINGS):
        handle = await ts_env.client.start_workflow(
            names.WEBHOOK_DELIVERY_WORKFLOW,
            req,
            id=names.webhook_workflow_id(req.endpoint_id, req.event_id),
            task_queue=task_queue,
            result_type=WebhookDeliveryResult,
        )
        return await asyncio.wait_for(handle.result(), timeout=120)


async def test_an_endpoint_that_never_takes_it_is_tried_for_three_days(
    ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with webhook_receiver(default=503) as receiver:
        endpoint_id, event_id, secret = await endpoint_with_event(
            store, merchant, receiver.url, SETTINGS
        )
        req = WebhookDeliveryRequest(
            merchant_id=merchant, endpoint_id=endpoint_id, event_id=event_id
        )
        result = await _deliver(ts_env, store, req)
    assert result.status == "gave_up" and "HTTP 503" in (result.error or "")
    await _tried_for_three_days(store, receiver.received, event_id, secret)


async def test_a_delivery_stops_when_its_endpoint_is_deleted(
    ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with webhook_receiver(default=500) as receiver:
        endpoint_id, event_id, _ = await endpoint_with_event(
            store, merchant, receiver.url, SETTINGS
        )
        await store.delete_webhook_endpoint(merchant, endpoint_id)
        req = WebhookDeliveryRequest(
            merchant_id=merchant, endpoint_id=endpoint_id, event_id=event_id
        )
        result = await _deliver(ts_env, store, req)
    assert result.status == "endpoint_deleted" and receiver.received == []
