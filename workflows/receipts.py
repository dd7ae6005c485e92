"""CustomerReceiptWorkflow: the receipt of a recovered payment, e-mailed once.

Started by the outbox relay: the transaction that ended the recovery `recovered` recorded the
receipt (when the merchant's policy sends receipts and the customer paid themselves) and
queued its start, so a crash loses no receipt, and the recovery's own run ends without
waiting for an SMTP server. Its one activity sends the message, retried as every e-mail is
while the server defers it; the record says how it ended. Deterministic code only.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from recovery import constants as names
    from recovery.activity_defs import NotificationActivityDefs
    from recovery.models import NotificationSent, SendNotification


@workflow.defn(name=names.RECEIPT_WORKFLOW)
class CustomerReceiptWorkflow:
    @workflow.run
    async def run(self, req: SendNotification) -> NotificationSent:
        try:
            return await workflow.execute_activity_method(
                NotificationActivityDefs.send_customer_email,
                req,
                start_to_close_timeout=names.EMAIL_TRY_TIMEOUT,
                heartbeat_timeout=names.EMAIL_HEARTBEAT_TIMEOUT,
                retry_policy=names.EMAIL_RETRY_POLICY,
            )
        except ActivityError as e:  # the last try marked it failed, saying why
            return NotificationSent(status="failed", error=str(e.cause or e)[:500])
