"""WatchPendingPaymentWorkflow: a payment still pending at the PSP when its recovery ended
(or a failed one the PSP may still authorise late) is watched until it settles, so that
nothing a customer pays is dropped.

Started by the outbox relay: the transaction that ends the recovery queues it (so it
survives any crash), for each payment the workflow names. It asks the PSP every few minutes
at first, less often later (at most every `POLL_MAX`), for up to `WATCH_FOR`; about a
failed payment that may be authorised late, until its `late_until`. The
`check_payment_status` activity records what it finds: a success is a payment received,
which on a recovered recovery is a duplicate (refunded through the outbox) and on a
cancelled or exhausted one is shown as paid after the end; a failure settles the attempt's
row. A webhook for the payment records it the same way, earlier. Deterministic code only.
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
    from recovery.models import ChargeResult, PaymentLookup

POLL_FIRST = timedelta(minutes=5)
POLL_MAX = timedelta(hours=2)
# Longer than any PSP keeps a payment pending: Razorpay's bank-mandate debits take days and
# an authorised payment nobody captures is refunded within 5 days; SEPA/ACH debits settle
# within a few business days.
WATCH_FOR = timedelta(days=14)


@workflow.defn(name=names.WATCH_WORKFLOW)
class WatchPendingPaymentWorkflow:
    @workflow.run
    async def run(self, req: PaymentLookup) -> ChargeResult:
        result = await poll(
            lambda: workflow.execute_activity_method(
                RecoveryActivityDefs.check_payment_status,
                req,
                start_to_close_timeout=timedelta(seconds=60),
                schedule_to_close_timeout=timedelta(days=1),
                retry_policy=RetryPolicy(
                    maximum_interval=timedelta(minutes=30),
                    non_retryable_error_types=["PSPNotConfigured"],
                ),
            ),
            lambda r: r.status != "processing" and not self._may_be_late(req, r),
            first=POLL_FIRST,
            most=POLL_MAX,
            until=workflow.now() + WATCH_FOR,
            what=f"payment {req.psp_payment_id}",
        )
        if result is None or result.status == "processing":
            workflow.logger.warning(
                "payment %s still pending after %s: no longer watched",
                req.psp_payment_id,
                WATCH_FOR,
            )
        return result or ChargeResult(status="processing", psp_payment_id=req.psp_payment_id)

    @staticmethod
    def _may_be_late(req: PaymentLookup, result: ChargeResult) -> bool:
        """A failed payment the PSP may still authorise late is watched until `late_until`."""
        return (
            result.status == "failed"
            and req.late_until is not None
            and workflow.now() < req.late_until
        )
