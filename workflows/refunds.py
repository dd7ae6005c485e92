"""RefundDuplicatePaymentWorkflow: a payment a customer made twice is refunded, once.

Started by the outbox relay when the store records a duplicate payment (so it survives any
crash between recording and refunding). The refund's PSP idempotency key comes from the
payment, so retries never refund twice. Deterministic code only.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from recovery import constants as names
    from recovery.activity_defs import RecoveryActivityDefs
    from recovery.models import RefundOutcome, RefundRequest


@workflow.defn(name=names.REFUND_WORKFLOW)
class RefundDuplicatePaymentWorkflow:
    @workflow.run
    async def run(self, req: RefundRequest) -> RefundOutcome:
        # Transient PSP errors are retried for up to a week; a refusal is an outcome.
        return await workflow.execute_activity_method(
            RecoveryActivityDefs.refund_duplicate_payment,
            req,
            start_to_close_timeout=timedelta(minutes=2),
            schedule_to_close_timeout=timedelta(days=7),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=30)),
        )
