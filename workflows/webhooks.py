"""Merchant webhook delivery, at least once.

WebhookEndpointWorkflow: one per endpoint, delivering what its queue (`webhook_queue`) holds.
The outbox relay signals-with-start it (`webhooks_queued`) when deliveries are queued, once
per endpoint per batch of the relay, so a burst of events is one signal, not one workflow
each. Each pass is one activity that tries every delivery due (a try is a row in the delivery
log; a failed one is queued again 5 s later, doubling to at most an hour between tries, for
3 days: `recovery.constants`); then the run waits for the next one due or for a signal. Idle
for WEBHOOK_ENDPOINT_IDLE it ends (the next event starts it again); it continues as new after
WEBHOOK_PASSES_PER_RUN passes. A deleted endpoint's queue is dropped and its run ends.

WebhookDeliveryWorkflow: one event to one endpoint, retried by Temporal; how deliveries were
made before they went per endpoint, kept for the runs and outbox rows left from then (all are
over WEBHOOK_RETRY_FOR after the upgrade). Deterministic code only.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from recovery import constants as names
    from recovery.activity_defs import WebhookActivityDefs
    from recovery.models import (
        WebhookDeliveryRequest,
        WebhookDeliveryResult,
        WebhookEndpointInput,
        WebhookPassRequest,
    )


@workflow.defn(name=names.WEBHOOK_DELIVERY_WORKFLOW)
class WebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, req: WebhookDeliveryRequest) -> WebhookDeliveryResult:
        try:
            return await workflow.execute_activity_method(
                WebhookActivityDefs.deliver_webhook,
                req,
                start_to_close_timeout=names.WEBHOOK_TRY_START_TO_CLOSE,
                schedule_to_close_timeout=names.WEBHOOK_RETRY_FOR,
                retry_policy=names.WEBHOOK_RETRY_POLICY,
            )
        except ActivityError as e:
            # every try for WEBHOOK_RETRY_FOR failed: the delivery log says how
            workflow.logger.warning(
                "event %s never reached endpoint %s: %s", req.event_id, req.endpoint_id, e.cause
            )
            return WebhookDeliveryResult(status="gave_up", error=str(e.cause or e)[:500])


@workflow.defn(name=names.WEBHOOK_ENDPOINT_WORKFLOW)
class WebhookEndpointWorkflow:
    def __init__(self) -> None:
        self._queued = False

    @workflow.signal(name=names.SIGNAL_WEBHOOKS_QUEUED)
    def queued(self) -> None:
        """Deliveries were queued: pass over the queue (again) before waiting or ending."""
        self._queued = True

    @workflow.run
    async def run(self, endpoint: WebhookEndpointInput) -> None:
        for _ in range(names.WEBHOOK_PASSES_PER_RUN):
            self._queued = False  # a signal from here on asks for another pass
            passed = await workflow.execute_activity_method(
                WebhookActivityDefs.deliver_queued_webhooks,
                WebhookPassRequest(
                    merchant_id=endpoint.merchant_id,
                    endpoint_id=endpoint.endpoint_id,
                    now=workflow.now(),
                ),
                start_to_close_timeout=names.WEBHOOK_PASS_START_TO_CLOSE,
                retry_policy=names.WEBHOOK_PASS_RETRY_POLICY,
            )
            if passed.endpoint_deleted:
                return
            if passed.more_due:
                continue
            wait = names.WEBHOOK_ENDPOINT_IDLE
            if passed.next_try_at is not None:
                wait = max(passed.next_try_at - workflow.now(), timedelta(seconds=1))
            try:
                await workflow.wait_condition(lambda: self._queued, timeout=wait)
            except TimeoutError:
                # a signal taken in the same task as the timer still asks for a pass
                if passed.next_try_at is None and not self._queued:
                    return  # nothing queued: the next delivery queued starts a new run
        workflow.continue_as_new(endpoint)
