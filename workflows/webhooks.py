"""WebhookDeliveryWorkflow: one merchant event delivered to one endpoint, at least once.

Started by the outbox relay (the transaction that wrote the event queued it, so a crash loses
no delivery), once per (endpoint, event): its id is derived from both; a redelivery asked for
by people is a workflow of its own. Its one activity makes one try per attempt and Temporal
retries it: the first retry 5 s after a failed try, doubling to at most an hour between
tries, for 3 days (`recovery.constants`); each try is a row in the delivery log and costs
no history events. A deleted endpoint gets nothing more (each try checks). Deterministic
code only.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from recovery import constants as names
    from recovery.activity_defs import WebhookActivityDefs
    from recovery.models import WebhookDeliveryRequest, WebhookDeliveryResult


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
