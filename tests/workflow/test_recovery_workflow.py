"""The recovery workflow on the time-skipping server, with the real activities and Postgres."""

from __future__ import annotations

import time
from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from recovery import constants as names
from recovery.models import (
    CancelRequest,
    ExpediteRequest,
    PauseRequest,
    PaymentSucceeded,
    RecoveryState,
    ResumeRequest,
)
from recovery.psp.dispatcher import PSPDispatcher
from recovery.settings import Settings
from recovery.store import Store
from tests.helpers import (
    RunningWorker,
    activities_run,
    failure_body,
    ingest,
    relay,
    run_out,
    running_worker,
    start_recovery,
    wait_for_state,
    workflow_state,
)


async def test_three_attempts_over_days_recover_on_skipped_time(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    t0 = time.monotonic()
    handle = await start_recovery(store, worker, merchant, pm="pm_sim_succeed_on_3")
    result = await run_out(ts_env, handle)
    wall = time.monotonic() - t0
    assert result.status == "recovered"
    assert [a.outcome for a in result.attempts] == ["failed", "failed", "succeeded"]
    span = result.attempts[-1].at - result.attempts[0].at
    assert span > timedelta(days=2)  # funds cooldowns: a day, then about two
    # Days of durable timers pass on skipped time, not on the wall clock. The bound is far
    # from what a loaded machine takes (speed is measured in bench/): it only catches timers
    # that really wait.
    assert wall < timedelta(minutes=2).total_seconds(), f"took {wall:.0f}s of wall time"
    rec = await store.get_recovery(merchant, result.payment_ref)
    assert rec.status == "recovered" and rec.ended_at is not None
    assert [a.outcome for a in rec.attempts] == ["failed", "failed", "succeeded"]
    keys = [a.idempotency_key for a in rec.attempts]
    assert len(set(keys)) == 3 and all(k.startswith(rec.id) for k in keys)


async def test_max_attempts_ends_exhausted(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    handle = await start_recovery(store, worker, merchant, pm="pm_sim_decline_insufficient_funds")
    result = await run_out(ts_env, handle)
    assert result.status == "exhausted"
    assert len(result.attempts) == 4
    assert "max attempts" in (result.ended_reason or "")
    rec = await store.get_recovery(merchant, result.payment_ref)
    assert rec.status == "exhausted" and rec.attempt_count == 4


async def test_hard_decline_waits_for_customer_then_window_closes(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    handle = await start_recovery(
        store, worker, merchant, pm="pm_sim_succeed_on_1", decline_code="stolen_card"
    )
    result = await run_out(ts_env, handle)
    assert result.status == "exhausted"
    assert result.attempts == []  # never charged a stolen card off-session
    assert "window closed" in (result.ended_reason or "")


async def test_expedite_skips_the_cooldown(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with ts_env.auto_time_skipping_disabled():
        handle = await start_recovery(store, worker, merchant, pm="pm_sim_succeed_on_1")
        before = await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
        assert before.attempts == []
        await handle.signal(names.SIGNAL_EXPEDITE, ExpediteRequest(actor="support@test"))
        result = await handle.result()
    assert result.status == "recovered"
    assert len(result.attempts) == 1
    # the attempt ran now, not after the day-long cooldown that was scheduled
    assert before.next_attempt_at is not None
    assert result.attempts[0].at < before.next_attempt_at - timedelta(hours=12)


async def test_cancel_during_cooldown_makes_no_attempt(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with ts_env.auto_time_skipping_disabled():
        handle = await start_recovery(store, worker, merchant, pm="pm_sim_succeed_on_1")
        await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
        await handle.signal(names.SIGNAL_CANCEL, CancelRequest(reason="customer asked", actor="s1"))
        result = await handle.result()
    assert result.status == "cancelled"
    assert result.attempts == []
    assert "customer asked" in (result.ended_reason or "")
    await ts_env.sleep(timedelta(days=30))
    rec = await store.get_recovery(merchant, result.payment_ref)
    assert rec.status == "cancelled" and rec.attempts == ()


async def test_payment_succeeded_during_cooldown_ends_recovered_without_charging(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with ts_env.auto_time_skipping_disabled():
        handle = await start_recovery(store, worker, merchant, pm="pm_sim_succeed_on_1")
        await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
        await handle.signal(names.SIGNAL_PAYMENT_SUCCEEDED, PaymentSucceeded(source="webhook"))
        result = await handle.result()
    assert result.status == "recovered"
    assert result.attempts == []


async def test_duplicate_failure_signal_is_ignored(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    """A redelivered event is in the history twice and acted on once: taken as new, it would
    wake the cooldown and be classified again, rescheduling the attempt."""
    client, tq = worker.client, worker.task_queue
    body = failure_body(pm="pm_sim_succeed_on_2")
    res = await ingest(store, merchant, body)
    await relay(store, client, tq)
    handle = client.get_workflow_handle(res.body["workflow_id"], result_type=RecoveryState)
    with ts_env.auto_time_skipping_disabled():
        first = await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
        # deliver the same event again, as a relay retry would, during the cooldown
        await store.pool.execute(
            "UPDATE outbox SET delivered_at = NULL WHERE workflow_id = $1", handle.id
        )
        await relay(store, client, tq)
        again = await workflow_state(handle)
    assert again.next_attempt_at == first.next_attempt_at
    result = await run_out(ts_env, handle)
    assert result.status == "recovered" and len(result.attempts) == 2
    history = await handle.fetch_history()
    signals = [
        e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    # (a run begins with `begin_recovery`, which classifies the first failure)
    classified = [a for a in activities_run(history) if a in ("begin_recovery", "classify_failure")]
    assert len(signals) == 2  # delivered twice
    assert len(classified) == 2  # the failure, then the first attempt's decline: not the copy
    assert result.events_seen == 1


async def test_network_do_not_try_again_advice_ends_the_recovery_without_a_charge(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    """Mastercard's merchant advice 03 ("do not try again") on an otherwise retryable decline."""
    handle = await start_recovery(
        store, worker, merchant, pm="pm_sim_succeed_on_1", network_advice_code="03"
    )
    result = await run_out(ts_env, handle)
    assert result.status == "exhausted" and result.attempts == []
    assert "do not retry" in (result.ended_reason or "")
    charges = await store.pool.fetchval(
        "SELECT count(*) FROM simulator_charges WHERE payment_ref = $1", result.payment_ref
    )
    assert charges == 0


async def test_a_psp_the_worker_cannot_charge_ends_exhausted_not_failed(
    ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    nothing = PSPDispatcher(store, Settings(environment="development"), psps=frozenset())
    async with running_worker(ts_env.client, store, psps=nothing) as worker:
        handle = await start_recovery(store, worker, merchant, pm="pm_sim_succeed_on_1")
        result = await run_out(ts_env, handle)
    assert result.status == "exhausted"
    assert "could not be made" in (result.ended_reason or "")
    assert "not served" in (result.ended_reason or "")
    rec = await store.get_recovery(merchant, result.payment_ref)
    assert rec.status == "exhausted" and rec.ended_at is not None


async def test_upi_pending_resolved_by_webhook_makes_no_charge(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with ts_env.auto_time_skipping_disabled():
        handle = await start_recovery(
            store, worker, merchant, pm="pm_sim_succeed_on_1", decline_code="payment_pending"
        )
        waiting = await wait_for_state(handle, lambda s: s.category is not None)
        assert waiting.category == "upi_pending" and waiting.next_attempt_at is None
        await handle.signal(
            names.SIGNAL_PAYMENT_SUCCEEDED, PaymentSucceeded(source="razorpay_webhook")
        )
        result = await handle.result()
    assert result.status == "recovered" and result.attempts == []


async def test_upi_pending_is_never_charged_before_its_deadline(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    handle = await start_recovery(
        store, worker, merchant, pm="pm_sim_succeed_on_1", decline_code="payment_pending"
    )
    await ts_env.sleep(timedelta(minutes=29))
    assert (await workflow_state(handle)).attempts == []
    result = await run_out(ts_env, handle)
    assert result.status == "recovered" and len(result.attempts) == 1
    assert result.attempts[0].at - (
        await store.get_recovery(merchant, result.payment_ref)
    ).started_at >= timedelta(minutes=30)


async def test_pause_holds_attempts_for_days_until_resumed(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with ts_env.auto_time_skipping_disabled():
        handle = await start_recovery(store, worker, merchant, pm="pm_sim_succeed_on_1")
        await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
        await handle.signal(names.SIGNAL_PAUSE, PauseRequest(reason="dispute", actor="s1"))
        await wait_for_state(handle, lambda s: s.paused)
    await ts_env.sleep(timedelta(days=10))  # the day-long cooldown ends meanwhile
    held = await workflow_state(handle)
    assert held.attempts == [] and held.paused and held.status == "active"
    assert "dispute" in (held.next_attempt_reason or "") and held.next_attempt_at is None
    rec = await store.get_recovery(merchant, held.payment_ref)
    assert rec.attempts == () and rec.next_attempt_at is None

    with ts_env.auto_time_skipping_disabled():
        await handle.signal(names.SIGNAL_RESUME, ResumeRequest(actor="s1"))
        result = await handle.result()
    assert result.status == "recovered" and len(result.attempts) == 1
    assert not result.paused


async def test_a_pending_charge_is_polled_and_never_charged_twice(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with ts_env.auto_time_skipping_disabled():
        handle = await start_recovery(store, worker, merchant, pm="pm_sim_pending")
        await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
        await handle.signal(names.SIGNAL_EXPEDITE, ExpediteRequest(actor="t"))
        s = await wait_for_state(handle, lambda s: s.category == "upi_pending")
    assert [a.outcome for a in s.attempts] == ["processing"]
    await ts_env.sleep(timedelta(minutes=12))  # polled twice: still pending, no new charge
    assert len((await workflow_state(handle)).attempts) == 1
    # the PSP settles the payment; the next poll sees it
    await store.pool.execute(
        "UPDATE simulator_charges SET status = 'succeeded' WHERE payment_ref = $1",
        s.payment_ref,
    )
    await ts_env.sleep(timedelta(minutes=6))
    result = await handle.result()
    assert result.status == "recovered" and len(result.attempts) == 1
    assert result.ended_reason == "pending payment completed"
    charges = await store.pool.fetchval(
        "SELECT count(*) FROM simulator_charges WHERE payment_ref = $1", s.payment_ref
    )
    assert charges == 1
