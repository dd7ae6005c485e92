"""Razorpay recurring debits are waited out for as long as Razorpay can take, and charged
once; a debit still pending at the end is watched; a pending refund is checked until it
settles (time-skipping server, real activities and Postgres, the real `razorpay` SDK against
the local fake, whose debits stay `created` for a while as in production: a 24 h pre-debit
notice, then the debit, "24-36 hours" on cards and UPI, days on bank mandates).

Reproduced bug: the workflow read every pending charge as a 30-minute `payment_pending`,
then wrote it off, showed a next attempt a day later and reserved it on the card, and so on
every day until the debit settled: nothing but the re-check stood between a debit still
pending and a second one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from recovery import constants as names
from recovery.models import (
    ChargeRequest,
    ChargeResult,
    Customer,
    Failure,
    PaymentMethod,
    RecoveryState,
    RefundOutcome,
    WebhookEvent,
)
from recovery.policy import RetryPolicy
from recovery.psp.razorpay import RazorpayAdapter
from recovery.settings import Settings
from recovery.store import Store
from tests.helpers import (
    RunningWorker,
    expedited,
    failure_body,
    ingest,
    relay,
    run_out,
    wait_for_state,
    workflow_state,
)
from tests.psp.razorpay_server import FakeRazorpay, fake_razorpay

RECURRING = r"/v1/payments/create/recurring"
HOUR = 3600.0


@pytest.fixture
def rzp() -> Iterator[FakeRazorpay]:
    with fake_razorpay() as fake:  # the realistic default: debits take a while
        yield fake


@pytest.fixture
def worker_settings(rzp: FakeRazorpay) -> Settings:
    """The worker charges at the local Razorpay (`worker` in tests/workflow/conftest.py)."""
    return Settings(
        environment="development",
        razorpay_key_id=rzp.key_id,
        razorpay_key_secret=rzp.key_secret,
        razorpay_api_base=rzp.base_url,
    )


async def expedited_first_debit(
    store: Store, worker: RunningWorker, merchant: str, token: str, outcome: str = "processing"
) -> WorkflowHandle:
    """A Razorpay funds failure on `token`, expedited: its first debit has `outcome`
    (by default it is pending)."""
    client, task_queue = worker.client, worker.task_queue
    await store.save_policy(merchant, RetryPolicy(payday_snap_days=0), "test")
    body = failure_body(psp="razorpay", decline_code="insufficient_funds", pm=token)
    body["currency"] = "inr"
    body["customer"] = {"id": "cust_Debit0000001", "email": "c@example.com"}
    res = await ingest(store, merchant, body)
    await relay(store, client, task_queue)
    handle = client.get_workflow_handle(res.body["workflow_id"], result_type=RecoveryState)
    await expedited(handle)
    await wait_for_state(handle, lambda s: [a.outcome for a in s.attempts] == [outcome])
    return handle


async def paid_by_link(
    store: Store, merchant: str, payment_ref: str, psp_payment_id: str, event_id: str
) -> None:
    """Razorpay's verified webhook: the customer paid `payment_ref` through a Payment Link."""
    await store.record_webhook(
        WebhookEvent(
            psp="razorpay",
            event_id=event_id,
            kind="payment_succeeded",
            psp_type="payment_link.paid",
            merchant_id=merchant,
            payment_ref=payment_ref,
            psp_payment_id=psp_payment_id,
        ),
        {},
    )


async def refunded_as_duplicate(
    store: Store, worker: RunningWorker, merchant: str, rzp: FakeRazorpay, payment_id: str
) -> None:
    """The payment was recorded as a duplicate, and its refund (started through the outbox)
    went through at Razorpay: the only refund there."""
    client, task_queue = worker.client, worker.task_queue
    await relay(store, client, task_queue)
    [dup] = await store.pool.fetch(
        "SELECT id FROM received_payments WHERE merchant_id = $1 AND disposition = 'duplicate'",
        merchant,
    )
    refund = await client.get_workflow_handle(
        names.refund_workflow_id(merchant, dup["id"]), result_type=RefundOutcome
    ).result()
    assert refund.status == "succeeded", refund
    assert [r["payment_id"] for r in rzp.refunds.values()] == [payment_id]


async def waiting_for_the_debit(handle: WorkflowHandle) -> RecoveryState:
    s = await workflow_state(handle)
    assert s.status == "active", s.ended_reason
    assert [a.outcome for a in s.attempts] == ["processing"]
    assert s.next_attempt_at is None, f"a next attempt shown while the debit is pending: {s}"
    assert s.category == "upi_pending"
    return s


@pytest.mark.parametrize(
    ("method", "delay_hours", "checked_at_hours"),
    [("card", 36, 35), ("upi", 30, 29), ("emandate", 4 * 24, 4 * 24 - 2)],
)
async def test_a_pending_razorpay_debit_is_waited_out_and_charged_once(
    worker: RunningWorker,
    ts_env: WorkflowEnvironment,
    store: Store,
    merchant: str,
    rzp: FakeRazorpay,
    method: str,
    delay_hours: int,
    checked_at_hours: int,
) -> None:
    rzp.debit_delay = delay_hours * HOUR
    token = f"token_{method}Debit001"
    rzp.add_token(token, method=method)
    handle = await expedited_first_debit(store, worker, merchant, token)

    await ts_env.sleep(timedelta(hours=checked_at_hours))  # the workflow polls meanwhile
    s = await waiting_for_the_debit(handle)
    assert len(rzp.requests_to("POST", RECURRING)) == 1
    polls = len(rzp.requests_to("GET", r"/v1/payments/pay_\w+"))
    assert 2 <= polls <= checked_at_hours + 8, f"{polls} polls in {checked_at_hours} h"

    rzp.advance(delay_hours * HOUR)  # Razorpay debits it now
    result = await run_out(ts_env, handle)
    assert result.status == "recovered", result.ended_reason
    assert [a.outcome for a in result.attempts] == ["succeeded"]
    assert len(rzp.requests_to("POST", RECURRING)) == 1 and len(rzp.orders) == 1
    assert [p["status"] for p in rzp.payments] == ["captured"]
    rec = await store.get_recovery(merchant, s.payment_ref)
    assert [a.outcome for a in rec.attempts] == ["succeeded"] and rec.paid_by is not None
    cards = await store.pool.fetchval(
        "SELECT count(*) FROM attempt_cards WHERE merchant_id = $1", merchant
    )
    assert cards == 1, "the pending debit took one place in the card's limits, once"


async def test_a_pending_debit_that_fails_at_last_is_followed_by_one_new_charge(
    worker: RunningWorker,
    ts_env: WorkflowEnvironment,
    store: Store,
    merchant: str,
    rzp: FakeRazorpay,
) -> None:
    """Razorpay: "do not create another subsequent payment until you get the status of the
    previous one". The next debit comes only after the first one failed."""
    rzp.debit_delay = 30 * HOUR
    handle = await expedited_first_debit(store, worker, merchant, "token_failed_async")
    await ts_env.sleep(timedelta(hours=29))
    await waiting_for_the_debit(handle)
    rzp.advance(30 * HOUR)  # it fails (card declined) at last
    await ts_env.sleep(timedelta(hours=2))
    s = await workflow_state(handle)
    assert [a.outcome for a in s.attempts] == ["failed"], s
    assert s.next_attempt_at is not None
    assert len(rzp.requests_to("POST", RECURRING)) == 1
    result = await run_out(ts_env, handle)
    statuses = [p["status"] for p in rzp.payments]
    # every later debit was made only once the one before had failed
    assert all(status == "failed" for status in statuses[:-1]), statuses
    assert len(result.attempts) == len(statuses) >= 2


async def test_a_debit_still_pending_when_the_customer_paid_otherwise_is_refunded_once_debited(
    worker: RunningWorker,
    ts_env: WorkflowEnvironment,
    store: Store,
    merchant: str,
    rzp: FakeRazorpay,
) -> None:
    """Reproduced bug: the customer paid through a link while our debit waited out its
    pre-debit notice; the recovery ended `recovered`, nothing watched the debit any more,
    and when Razorpay made it the second payment was kept, unrecorded (webhooks missed)."""
    client, task_queue = worker.client, worker.task_queue
    handle = await expedited_first_debit(store, worker, merchant, "token_WatchDebit001")
    s = await workflow_state(handle)
    [debit] = rzp.payments
    await paid_by_link(store, merchant, s.payment_ref, "pay_PaidByLink0001", "evt_link_paid")
    await relay(store, client, task_queue)
    result = await handle.result()
    assert result.status == "recovered", result.ended_reason
    await relay(store, client, task_queue)  # the watcher of the debit still pending

    watch = client.get_workflow_handle(
        names.watch_workflow_id(merchant, "razorpay", debit["id"]), result_type=ChargeResult
    )
    rzp.advance(25 * HOUR)  # Razorpay makes the debit after all
    await ts_env.sleep(timedelta(hours=3))  # the watcher polls meanwhile
    settled = await watch.result()
    assert settled.status == "succeeded"
    await refunded_as_duplicate(store, worker, merchant, rzp, debit["id"])
    paid = await store.pool.fetch(
        "SELECT psp_payment_id, disposition, refund_status FROM received_payments"
        " WHERE merchant_id = $1 ORDER BY received_at",
        merchant,
    )
    assert [tuple(r) for r in paid] == [
        ("pay_PaidByLink0001", "recovered", None),
        (debit["id"], "duplicate", "succeeded"),
    ]


async def test_a_pending_razorpay_refund_is_checked_until_processed(
    worker: RunningWorker,
    ts_env: WorkflowEnvironment,
    store: Store,
    merchant: str,
    rzp: FakeRazorpay,
) -> None:
    """Reproduced: Razorpay answers a normal refund `pending` (it takes working days); the
    refund workflow recorded `pending` and ended, so a refund that was processed, or that
    failed and left the customer paid twice, never showed."""
    client, task_queue = worker.client, worker.task_queue
    rzp.debit_delay = 0
    rzp.refund_status = "pending"
    handle = await expedited_first_debit(
        store, worker, merchant, "token_RefundPend01", outcome="succeeded"
    )
    result = await handle.result()
    assert result.status == "recovered", result.ended_reason
    # the customer also paid at Razorpay another way: a second captured payment
    adapter = RazorpayAdapter(rzp.key_id, rzp.key_secret, api_base=rzp.base_url)
    try:
        other = await adapter.create_payment_intent(
            ChargeRequest(
                merchant_id=merchant,
                recovery_id="elsewhere",
                payment_ref=result.payment_ref,
                attempt=1,
                idempotency_key="paid-elsewhere-1",
                psp="razorpay",
                amount=4999,
                currency="inr",
                customer=Customer(id="cust_Debit0000001", email="c@example.com"),
                payment_method=PaymentMethod(type="card", id="token_Elsewhere001"),
                original_failure=Failure(code="card_declined"),
            )
        )
    finally:
        adapter.close()
    second = rzp.payments_by_id[other.psp_payment_id or ""]
    await paid_by_link(store, merchant, result.payment_ref, second["id"], "evt_second_payment")
    await relay(store, client, task_queue)  # starts the refund
    [dup] = await store.pool.fetch(
        "SELECT id FROM received_payments WHERE merchant_id = $1 AND disposition = 'duplicate'",
        merchant,
    )
    refund_wf = client.get_workflow_handle(
        names.refund_workflow_id(merchant, dup["id"]), result_type=RefundOutcome
    )
    await ts_env.sleep(timedelta(days=2))  # pending at Razorpay meanwhile, checked
    paid = await store.received_payment(dup["id"])
    assert paid is not None and paid.refund_status == "pending"
    [refund] = rzp.refunds.values()
    assert refund["payment_id"] == second["id"]
    rzp.set_refund_status(refund["id"], "processed")  # the bank has it
    await ts_env.sleep(timedelta(hours=7))
    outcome = await refund_wf.result()
    assert outcome.status == "succeeded" and outcome.psp_refund_id == refund["id"]
    paid = await store.received_payment(dup["id"])
    assert paid is not None and paid.refund_status == "succeeded" and paid.refunded_at
    assert len(rzp.refunds) == 1
    checks = rzp.requests_to("GET", rf"/v1/refunds/{refund['id']}")
    assert 2 <= len(checks) <= 20, len(checks)


async def test_a_paused_razorpay_mandate_waits_for_the_customer_and_debits_nothing(
    worker: RunningWorker,
    ts_env: WorkflowEnvironment,
    store: Store,
    merchant: str,
    rzp: FakeRazorpay,
) -> None:
    """Only a confirmed mandate can be debited: a paused one is not charged into a
    certain failure (counted against the card and the policy) but sent to the customer."""
    rzp.add_token("token_PausedMandate1", method="upi", status="paused")
    handle = await expedited_first_debit(
        store, worker, merchant, "token_PausedMandate1", outcome="failed"
    )
    s = await wait_for_state(handle, lambda s: s.status == "awaiting_customer")
    assert s.rule == "razorpay.reason.token_paused", s.rule
    assert [a.code for a in s.attempts] == ["token_paused"]
    assert rzp.orders == {} and rzp.payments == []


async def test_a_debit_the_bank_authorises_late_is_found_before_charging_again(
    worker: RunningWorker,
    ts_env: WorkflowEnvironment,
    store: Store,
    merchant: str,
    rzp: FakeRazorpay,
) -> None:
    """Reproduced: the bank did not answer in time, Razorpay marked the debit `failed`, then
    authorised (and captured) it late; its webhook never came. The next attempt debited the
    customer a second time. Now the late payment is checked before any new charge."""
    rzp.debit_delay = 0
    handle = await expedited_first_debit(
        store, worker, merchant, "token_bank_error_once", outcome="failed"
    )
    [first] = rzp.payments
    assert first["error_reason"] == "bank_technical_error"
    rzp.late_authorise(first["id"])
    result = await run_out(ts_env, handle)
    assert result.status == "recovered", result.ended_reason
    assert result.ended_reason == "an earlier payment was authorised late"
    assert [p["status"] for p in rzp.payments] == ["captured"], "debited twice"
    assert [a.outcome for a in result.attempts] == ["succeeded"]
    rec = await store.get_recovery(merchant, result.payment_ref)
    assert [a.outcome for a in rec.attempts] == ["succeeded"] and rec.paid_by is not None


async def test_a_debit_authorised_late_after_the_recovery_ended_is_refunded(
    worker: RunningWorker,
    ts_env: WorkflowEnvironment,
    store: Store,
    merchant: str,
    rzp: FakeRazorpay,
) -> None:
    """The first debit timed out, the customer paid through a link, and then the bank
    authorised the first debit late, without a webhook: the watcher finds it and it is
    refunded."""
    client, task_queue = worker.client, worker.task_queue
    rzp.debit_delay = 0
    handle = await expedited_first_debit(
        store, worker, merchant, "token_timeout_once", outcome="failed"
    )
    s = await wait_for_state(handle, lambda s: s.status == "awaiting_customer")
    [first] = rzp.payments
    await paid_by_link(
        store, merchant, s.payment_ref, "pay_PaidByLink0002", "evt_paid_by_link_late"
    )
    await relay(store, client, task_queue)
    assert (await handle.result()).status == "recovered"
    await relay(store, client, task_queue)  # the watcher of the timed-out debit
    watch = client.get_workflow_handle(
        names.watch_workflow_id(merchant, "razorpay", first["id"]), result_type=ChargeResult
    )
    await ts_env.sleep(timedelta(days=1))
    rzp.late_authorise(first["id"])  # two days after the debit: within Razorpay's three
    await ts_env.sleep(timedelta(days=1))
    assert (await watch.result()).status == "succeeded"
    await refunded_as_duplicate(store, worker, merchant, rzp, first["id"])


async def test_a_pending_debit_that_times_out_at_the_bank_is_still_watched_for_late_authorisation(
    worker: RunningWorker,
    ts_env: WorkflowEnvironment,
    store: Store,
    merchant: str,
    rzp: FakeRazorpay,
) -> None:
    """A debit waited out its notice, then failed because the bank did not answer; the next
    attempt recovered the payment; then the bank authorised the first one late, with no
    webhook. Reproduced: only a failure in a charge's own answer was kept for late
    authorisation, not one seen while polling, so the second payment was kept."""
    client, task_queue = worker.client, worker.task_queue
    rzp.debit_delay = 30 * HOUR
    handle = await expedited_first_debit(store, worker, merchant, "token_bank_error_once_poll")
    [first] = rzp.payments
    rzp.advance(30 * HOUR)  # the bank does not answer: Razorpay marks it failed
    rzp.debit_delay = 0
    result = await run_out(ts_env, handle)
    assert result.status == "recovered", result.ended_reason
    assert [p["status"] for p in rzp.payments] == ["failed", "captured"]
    await relay(store, client, task_queue)  # the watcher of the failed debit
    watch = client.get_workflow_handle(
        names.watch_workflow_id(merchant, "razorpay", first["id"]), result_type=ChargeResult
    )
    rzp.late_authorise(first["id"])
    await ts_env.sleep(timedelta(hours=3))
    assert (await watch.result()).status == "succeeded"
    await refunded_as_duplicate(store, worker, merchant, rzp, first["id"])
