"""RefundDuplicatePaymentWorkflow: a payment a customer made twice is refunded, once.

Started by the outbox relay when the store records a duplicate payment (so it survives any
crash between recording and refunding). The refund's PSP idempotency key comes from the
payment, so retries never refund twice. A refund the PSP answers `pending` is checked
until it settles. Deterministic code only.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():  # deterministic, stateless: see recovery.py
    from workflows.polling import poll

with workflow.unsafe.imports_passed_through():
    from recovery import constants as names
    from recovery.activity_defs import RecoveryActivityDefs
    from recovery.models import RefundOutcome, RefundRequest


# Refunds after this patch that the PSP answers `pending` are checked until they settle
# (Razorpay's normal refunds take 5-7 working days), so `refund_status` ends `succeeded` or
# `failed` (a failed refund leaves the customer paid twice: an operator must see it).
REFUND_SETTLES_PATCH = "refund-settles"
CHECK_FIRST = timedelta(minutes=5)
CHECK_MAX = timedelta(hours=6)
SETTLE_FOR = timedelta(days=21)


@workflow.defn(name=names.REFUND_WORKFLOW)
class RefundDuplicatePaymentWorkflow:
    @workflow.run
    async def run(self, req: RefundRequest) -> RefundOutcome:
        # Transient PSP errors are retried for up to a week; a refusal is an outcome.
        outcome = await workflow.execute_activity_method(
            RecoveryActivityDefs.refund_duplicate_payment,
            req,
            start_to_close_timeout=timedelta(minutes=2),
            schedule_to_close_timeout=timedelta(days=7),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=30)),
        )
        if outcome.status != "pending" or not workflow.patched(REFUND_SETTLES_PATCH):
            return outcome
        settled = await poll(
            lambda: workflow.execute_activity_method(
                RecoveryActivityDefs.check_refund,
                req,
                start_to_close_timeout=timedelta(minutes=1),
                schedule_to_close_timeout=timedelta(days=1),
                retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=30)),
            ),
            lambda o: o.status != "pending",
            first=CHECK_FIRST,
            most=CHECK_MAX,
            until=workflow.now() + SETTLE_FOR,
            what=f"refund of {req.received_payment_id}",
        )
        return settled or outcome
