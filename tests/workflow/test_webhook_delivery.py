"""WebhookDeliveryWorkflow on the time-skipping server: days of retries pass in seconds, and
every try is a real POST to a receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import uuid

from standardwebhooks.webhooks import Webhook
from temporalio.testing import WorkflowEnvironment

from recovery import constants as names
from recovery.models import WebhookDeliveryRequest, WebhookDeliveryResult
from recovery.settings import Settings
from recovery.store import Store
from tests.helpers.stack import TEST_CREDENTIALS_KEY
from tests.helpers.webhooks import endpoint_with_event, webhook_receiver
from worker.main import build_worker

SETTINGS = Settings(
    environment="development", allow_simulator=True, credentials_key=TEST_CREDENTIALS_KEY
)


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
    tries = receiver.received
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
