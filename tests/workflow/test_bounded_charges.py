"""Charges are bounded and never blind (time-skipping server, real activities, Postgres and
the simulator PSP's ledger): an attempt left without an answer is looked up at the PSP, a
cancel stops a charge's retries, an earlier pending payment is checked again before any new
charge, and a charge canceled at the PSP is not retried."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from recovery import constants as names
from recovery.models import CancelRequest, ChargeRequest, Failure, RecoveryState
from recovery.policy import RetryPolicy
from recovery.settings import Settings
from recovery.store import Store
from tests.helpers import (
    RunningWorker,
    eventually,
    expedited,
    failure_body,
    ingest,
    relay,
    run_out,
    running_worker,
    start_recovery,
    wait_for_state,
    workflow_state,
)
from tests.psp.localstripe_server import (
    CARD_OK,
    TEST_API_KEY,
    create_customer_with_card,
    inject_server_errors,
    localstripe,
    successful_charges,
)

NO_PAYDAYS = RetryPolicy(payday_snap_days=0)


async def charges_at_psp(store: Store, payment_ref: str) -> int:
    return await store.pool.fetchval(
        "SELECT count(*) FROM simulator_charges WHERE payment_ref = $1", payment_ref
    )


async def retrying(handle: WorkflowHandle, name: str) -> int:
    """The try number of `name` while it is pending (0 when it is not)."""
    pending = (await handle.describe()).raw_description.pending_activities
    return max((p.attempt for p in pending if p.activity_type.name == name), default=0)


async def activity_runs(handle: WorkflowHandle, name: str) -> int:
    """How many times an activity was tried (each try's attempt number, summed)."""
    tries = 0
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            scheduled = attrs.activity_type.name
        if event.HasField("activity_task_started_event_attributes") and scheduled == name:
            tries += event.activity_task_started_event_attributes.attempt
    return tries


async def test_an_answer_lost_on_every_try_is_looked_up_and_never_charged_again(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    """Reproduced bug: a charge whose PSP replays a 5xx was retried without end (and a new
    charge would follow). Now: a few tries, then the charge is found at the PSP."""
    await store.save_policy(merchant, NO_PAYDAYS, "test")
    handle = await start_recovery(store, worker, merchant, pm="pm_sim_lost_answer")
    await expedited(handle)
    result = await run_out(ts_env, handle)
    assert result.status == "recovered", result.ended_reason
    assert [a.outcome for a in result.attempts] == ["succeeded"]
    assert await charges_at_psp(store, result.payment_ref) == 1
    assert await activity_runs(handle, "charge_payment") == names.CHARGE_MAX_TRIES
    rec = await store.get_recovery(merchant, result.payment_ref)
    assert [a.outcome for a in rec.attempts] == ["succeeded"]
    assert rec.paid_by is not None


async def test_an_attempt_the_psp_never_made_counts_as_not_made_and_the_recovery_ends(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    """Every try answered 5xx and nothing was charged: each attempt is bounded, recorded as
    not made, and the recovery ends within its policy instead of looping."""
    await store.save_policy(merchant, RetryPolicy(payday_snap_days=0, max_attempts=2), "test")
    handle = await start_recovery(store, worker, merchant, pm="pm_sim_error")
    await expedited(handle)
    result = await run_out(ts_env, handle)
    assert result.status == "exhausted", result.ended_reason
    assert [a.outcome for a in result.attempts] == ["not_made", "not_made"]
    assert [a.code for a in result.attempts] == ["charge_not_made"] * 2
    assert await charges_at_psp(store, result.payment_ref) == 0
    assert await activity_runs(handle, "charge_payment") == 2 * names.CHARGE_MAX_TRIES
    rec = await store.get_recovery(merchant, result.payment_ref)
    assert [a.outcome for a in rec.attempts] == ["not_made", "not_made"]


async def test_cancel_during_a_retrying_charge_ends_it_cancelled_with_the_attempt_recorded(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    await store.save_policy(merchant, NO_PAYDAYS, "test")
    with ts_env.auto_time_skipping_disabled():
        handle = await start_recovery(store, worker, merchant, pm="pm_sim_error")
        await expedited(handle)

        async def retried() -> bool:
            return await retrying(handle, "charge_payment") >= 2

        await eventually(retried, within=20, what="the charge retrying", interval=0.2)
        await handle.signal(names.SIGNAL_CANCEL, CancelRequest(reason="customer left", actor="s"))
        result = await asyncio.wait_for(handle.result(), timeout=30)
    assert result.status == "cancelled" and "customer left" in (result.ended_reason or "")
    assert [a.outcome for a in result.attempts] == ["not_made"]
    assert await activity_runs(handle, "charge_payment") < names.CHARGE_MAX_TRIES
    assert await charges_at_psp(store, result.payment_ref) == 0


async def test_a_pending_charge_that_settles_after_the_pending_wait_is_never_charged_again(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    """Reproduced bug: after the pending wait our pending charge was written off and a new
    charge (new key) followed without looking at the old one again."""
    await store.save_policy(merchant, NO_PAYDAYS, "test")
    handle = await start_recovery(store, worker, merchant, pm="pm_sim_pending")
    await expedited(handle)
    await ts_env.sleep(timedelta(hours=6))  # the pending wait ends with it still pending
    s = await workflow_state(handle)
    assert [a.outcome for a in s.attempts] == ["processing"] and s.next_attempt_at is not None
    # the PSP settles it only now, after the wait
    await store.pool.execute(
        "UPDATE simulator_charges SET status = 'succeeded' WHERE payment_ref = $1",
        s.payment_ref,
    )
    result = await run_out(ts_env, handle)
    assert result.status == "recovered", result.ended_reason
    assert result.ended_reason == "an earlier pending payment completed"
    assert len(result.attempts) == 1
    assert await charges_at_psp(store, s.payment_ref) == 1
    rec = await store.get_recovery(merchant, s.payment_ref)
    assert [a.outcome for a in rec.attempts] == ["succeeded"] and rec.paid_by is not None


async def test_a_charge_still_pending_when_the_next_attempt_is_due_holds_every_new_charge(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    await store.save_policy(merchant, NO_PAYDAYS, "test")
    handle = await start_recovery(store, worker, merchant, pm="pm_sim_pending")
    await expedited(handle)
    result = await run_out(ts_env, handle)
    assert result.status == "exhausted"
    assert [a.outcome for a in result.attempts] == ["processing"]  # never a second charge
    assert await charges_at_psp(store, result.payment_ref) == 1


async def test_a_pending_failure_naming_its_psp_payment_is_polled_and_recorded_when_paid(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    """Reproduced bug: a failure ingested as pending carried no PSP id, so after the wait we
    simply charged. With `psp_payment_id`, the payment itself is polled."""
    client, tq = worker.client, worker.task_queue
    await store.save_policy(merchant, NO_PAYDAYS, "test")
    body = failure_body(pm="pm_sim_succeed_on_1", code="payment_pending", decline_code=None)
    body["message"] = None
    # the merchant's own payment, still pending at the PSP
    psp_id, _, _ = await store.simulator_charge(
        ChargeRequest(
            merchant_id=merchant,
            recovery_id="outside",
            payment_ref=body["payment_ref"],
            attempt=0,
            idempotency_key=f"merchant:{body['payment_ref']}",
            psp="simulator",
            amount=body["amount"],
            currency="usd",
            original_failure=Failure(code="payment_pending"),
        ),
        "processing",
        None,
    )
    body["psp_payment_id"] = psp_id
    res = await ingest(store, merchant, body)
    await relay(store, client, tq)
    handle = client.get_workflow_handle(res.body["workflow_id"], result_type=RecoveryState)
    s = await wait_for_state(handle, lambda s: s.category == "upi_pending", within=30)
    await store.pool.execute(
        "UPDATE simulator_charges SET status = 'succeeded' WHERE psp_payment_id = $1", psp_id
    )
    result = await run_out(ts_env, handle)
    assert result.status == "recovered" and result.attempts == [], result.ended_reason
    rec = await store.get_recovery(merchant, s.payment_ref)
    assert rec.paid_by is not None
    sources = await store.pool.fetch(
        "SELECT source, psp_payment_id FROM received_payments WHERE payment_ref = $1",
        s.payment_ref,
    )
    assert [(r["source"], r["psp_payment_id"]) for r in sources] == [("pending_failure", psp_id)]


async def test_a_charge_canceled_at_the_psp_ends_the_recovery_instead_of_retrying(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    """Reproduced bug: a `canceled` result was classified `unknown` and retried."""
    await store.save_policy(merchant, NO_PAYDAYS, "test")
    handle = await start_recovery(store, worker, merchant, pm="pm_sim_canceled")
    await expedited(handle)
    result = await run_out(ts_env, handle)
    assert result.status == "cancelled"
    assert "canceled at the PSP" in (result.ended_reason or "")
    assert [a.outcome for a in result.attempts] == ["canceled"]


async def test_stripe_replaying_a_500_for_the_key_is_settled_by_lookup_with_one_charge(
    ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    """Reproduced bug: Stripe answers every retry with the 500 it saved for the key, so the
    attempt retried forever. Now: five tries, a lookup, and the one charge is found."""
    client = ts_env.client
    await store.save_policy(merchant, NO_PAYDAYS, "test")
    with localstripe() as stripe_base:
        settings = Settings(
            environment="development", stripe_api_key=TEST_API_KEY, stripe_api_base=stripe_base
        )
        card = create_customer_with_card(stripe_base, CARD_OK)
        async with running_worker(client, store, settings=settings) as worker:
            body = failure_body(psp="stripe", pm=card.payment_method_id)
            body["customer"] = {"id": card.customer_id, "email": "c@example.com"}
            res = await ingest(store, merchant, body)
            await relay(store, client, worker.task_queue)
            handle = client.get_workflow_handle(res.body["workflow_id"], result_type=RecoveryState)
            inject_server_errors(stripe_base, "/v1/payment_intents", ran=True)
            await expedited(handle)
            result = await run_out(ts_env, handle)
        assert result.status == "recovered", result.ended_reason
        assert [a.outcome for a in result.attempts] == ["succeeded"]
        assert len(successful_charges(stripe_base, card.customer_id)) == 1
        assert await activity_runs(handle, "charge_payment") == names.CHARGE_MAX_TRIES


def test_time_bounds_nest() -> None:
    """A try's own budget ends before its start-to-close (tries never overlap), and a
    stopped worker is noticed well within it."""
    assert names.CHARGE_TRY_BUDGET < names.CHARGE_START_TO_CLOSE
    assert names.CHARGE_HEARTBEAT_EVERY * 3 <= names.CHARGE_HEARTBEAT_TIMEOUT
    assert names.CHARGE_HEARTBEAT_TIMEOUT < names.CHARGE_START_TO_CLOSE
