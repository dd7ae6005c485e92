"""Support and customer actions do exactly what they say, at once (time-skipping server,
real activities and Postgres)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from datetime import timedelta

import pytest
from temporalio.client import (
    Client,
    WorkflowContinuedAsNewError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from recovery import constants as names
from recovery.models import (
    CancelRequest,
    ExpediteRequest,
    FailureEvent,
    PauseRequest,
    PaymentMethod,
    PaymentMethodUpdate,
    RecoveryInput,
    RecoveryState,
    ResumeRequest,
)
from recovery.policy import RetryPolicy
from recovery.psp.dispatcher import PSPDispatcher
from recovery.settings import Settings
from recovery.store import RecoveryRecord, Store
from tests.helpers import (
    RunningWorker,
    eventually,
    failure_body,
    ingest,
    relay,
    run_out,
    running_worker,
    start_recovery,
    wait_for_state,
    workflow_state,
)

NO_PAYDAYS = RetryPolicy(payday_snap_days=0)


async def expedite_refusal(handle: WorkflowHandle) -> str:
    """The API's expedite; returns why it was refused (fails the test when accepted)."""
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(names.UPDATE_EXPEDITE, ExpediteRequest(actor="support"))
    cause = refused.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "nothing_to_expedite"
    return cause.message


async def test_expedite_while_awaiting_the_customer_is_refused_and_never_armed(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    """Reproduced bug: the expedite stayed armed, and the next funds failure was charged at
    once instead of after its cooldown."""
    client, tq = worker.client, worker.task_queue
    await store.save_policy(merchant, NO_PAYDAYS, "test")
    with ts_env.auto_time_skipping_disabled():
        body = failure_body(pm="pm_sim_succeed_on_1", decline_code="stolen_card")
        res = await ingest(store, merchant, body)
        await relay(store, client, tq)
        handle = client.get_workflow_handle(res.body["workflow_id"], result_type=RecoveryState)
        await wait_for_state(handle, lambda s: s.status == "awaiting_customer")
        assert "awaiting the customer" in await expedite_refusal(handle)
        await handle.signal(names.SIGNAL_EXPEDITE, ExpediteRequest(actor="operator"))  # ignored
        # the customer's bank answers again: now a funds failure, with its day-long cooldown
        later = failure_body(body["payment_ref"], pm="pm_sim_succeed_on_1")
        await ingest(store, merchant, later)
        await relay(store, client, tq)
        s = await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
    assert s.category == "funds" and s.attempts == []
    now = await ts_env.get_current_time()
    assert s.next_attempt_at is not None and s.next_attempt_at - now > timedelta(hours=12)
    await ts_env.sleep(timedelta(hours=6))
    assert (await workflow_state(handle)).attempts == []  # still waiting out the cooldown


async def test_expedite_of_a_paused_or_pending_recovery_is_refused(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with ts_env.auto_time_skipping_disabled():
        pending = await start_recovery(
            store, worker, merchant, pm="pm_sim_succeed_on_1", decline_code="payment_pending"
        )
        await wait_for_state(pending, lambda s: s.category == "upi_pending")
        assert "pending" in await expedite_refusal(pending)

        paused = await start_recovery(store, worker, merchant, pm="pm_sim_succeed_on_1")
        await wait_for_state(paused, lambda s: s.next_attempt_at is not None)
        await paused.signal(names.SIGNAL_PAUSE, PauseRequest(reason="dispute", actor="s1"))
        await wait_for_state(paused, lambda s: s.paused and s.next_attempt_at is None)
        assert "paused" in await expedite_refusal(paused)
    # nothing was armed: ten days later, still no attempt on either
    await ts_env.sleep(timedelta(days=10))
    assert (await workflow_state(paused)).attempts == []


async def test_expedite_during_a_cooldown_attempts_now(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with ts_env.auto_time_skipping_disabled():
        handle = await start_recovery(store, worker, merchant, pm="pm_sim_succeed_on_1")
        before = await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
        accepted = await handle.execute_update(
            names.UPDATE_EXPEDITE, ExpediteRequest(actor="support"), result_type=RecoveryState
        )
        assert accepted.payment_ref == before.payment_ref
        result = await handle.result()
    assert result.status == "recovered" and len(result.attempts) == 1
    assert before.next_attempt_at is not None
    assert result.attempts[0].at < before.next_attempt_at - timedelta(hours=12)


async def test_pause_and_resume_show_at_once(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    """Reproduced bug: a pause showed `paused: false` and the old next attempt until the
    cooldown ended."""
    with ts_env.auto_time_skipping_disabled():
        handle = await start_recovery(store, worker, merchant, pm="pm_sim_succeed_on_1")
        before = await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
        await handle.signal(names.SIGNAL_PAUSE, PauseRequest(reason="dispute", actor="s1"))
        rec = await eventually(lambda: paused_in_postgres(store, merchant, before.payment_ref))
        assert rec.next_attempt_at is None and "dispute" in (rec.next_attempt_reason or "")

        await handle.signal(names.SIGNAL_RESUME, ResumeRequest(actor="s1"))
        resumed = await wait_for_state(handle, lambda s: not s.paused and s.next_attempt_at)
        # the rest of the same cooldown: the attempt keeps its time
        assert resumed.next_attempt_at == before.next_attempt_at
        rec = await eventually(lambda: scheduled_in_postgres(store, merchant, before.payment_ref))
        assert not rec.paused and rec.next_attempt_at == before.next_attempt_at
    result = await run_out(ts_env, handle)
    assert result.status == "recovered" and len(result.attempts) == 1
    assert before.next_attempt_at is not None
    assert result.attempts[0].at >= before.next_attempt_at


async def paused_in_postgres(store: Store, merchant: str, ref: str) -> RecoveryRecord | None:
    rec = await store.get_recovery(merchant, ref)
    return rec if rec.paused else None


async def scheduled_in_postgres(store: Store, merchant: str, ref: str) -> RecoveryRecord | None:
    rec = await store.get_recovery(merchant, ref)
    return rec if not rec.paused and rec.next_attempt_at is not None else None


async def test_pause_and_resume_show_in_the_search_attributes(
    dev_worker: RunningWorker, store: Store, merchant: str
) -> None:
    """Operators filter on NextAttemptAt in the Temporal UI (a real dev server here)."""
    handle = await start_recovery(store, dev_worker, merchant, pm="pm_sim_succeed_on_1")
    before = await wait_for_state(handle, lambda s: s.next_attempt_at is not None)

    async def next_attempt_at() -> object:
        described = await handle.describe()
        return described.typed_search_attributes.get(names.SA_NEXT_ATTEMPT_AT) or "unset"

    assert await eventually(next_attempt_at) == before.next_attempt_at
    await handle.signal(names.SIGNAL_PAUSE, PauseRequest(reason="dispute", actor="s1"))
    await eventually(lambda: is_(next_attempt_at(), "unset"))
    await handle.signal(names.SIGNAL_RESUME, ResumeRequest(actor="s1"))
    await eventually(lambda: is_(next_attempt_at(), before.next_attempt_at))
    await handle.signal(names.SIGNAL_CANCEL, CancelRequest(reason="done", actor="t"))


async def is_(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_pause_while_awaiting_the_customer_shows_at_once(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with ts_env.auto_time_skipping_disabled():
        handle = await start_recovery(
            store, worker, merchant, pm="pm_sim_succeed_on_1", decline_code="stolen_card"
        )
        s = await wait_for_state(handle, lambda s: s.status == "awaiting_customer")
        await handle.signal(names.SIGNAL_PAUSE, PauseRequest(reason="fraud check", actor="s"))
        rec = await eventually(lambda: paused_in_postgres(store, merchant, s.payment_ref))
        assert rec.status == "awaiting_customer"


async def test_update_policy_reaches_a_recovery_awaiting_the_customer(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    """Reproduced bug: the new policy (here a shorter window) was never applied."""
    with ts_env.auto_time_skipping_disabled():
        handle = await start_recovery(
            store, worker, merchant, pm="pm_sim_succeed_on_1", decline_code="stolen_card"
        )
        s = await wait_for_state(handle, lambda s: s.status == "awaiting_customer")
        v1 = await store.save_policy(merchant, RetryPolicy(window_days=2), "test")
        await handle.signal(names.SIGNAL_UPDATE_POLICY, v1)
        await wait_for_state(handle, lambda s: s.policy_version == 1)
    result = await run_out(ts_env, handle)
    assert result.status == "exhausted" and "awaiting the customer" in (result.ended_reason or "")
    rec = await store.get_recovery(merchant, s.payment_ref)
    assert rec.policy_version == 1 and rec.ended_at is not None
    assert len(result.links) == 1  # no extra link for a policy change


async def test_a_new_payment_method_is_attempted_now_while_awaiting_the_customer(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with ts_env.auto_time_skipping_disabled():
        handle = await start_recovery(
            store, worker, merchant, pm="pm_sim_decline_stolen_card", decline_code="stolen_card"
        )
        s = await wait_for_state(handle, lambda s: s.status == "awaiting_customer")
        await handle.signal(
            names.SIGNAL_PAYMENT_METHOD_UPDATED,
            PaymentMethodUpdate(
                payment_method=PaymentMethod(type="card", id="pm_sim_succeed_on_1"), actor="t"
            ),
        )
        result = await handle.result()
    assert result.status == "recovered" and len(result.attempts) == 1
    charged = await store.pool.fetch(
        "SELECT payment_method_id FROM simulator_charges WHERE payment_ref = $1", s.payment_ref
    )
    assert [r["payment_method_id"] for r in charged] == ["pm_sim_succeed_on_1"]


async def test_a_new_payment_method_cuts_a_cooldown_short(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with ts_env.auto_time_skipping_disabled():
        handle = await start_recovery(
            store, worker, merchant, pm="pm_sim_decline_insufficient_funds"
        )
        before = await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
        await handle.signal(
            names.SIGNAL_PAYMENT_METHOD_UPDATED,
            PaymentMethodUpdate(payment_method=PaymentMethod(id="pm_sim_succeed_on_1")),
        )
        result = await handle.result()
    assert result.status == "recovered" and len(result.attempts) == 1
    assert before.next_attempt_at is not None
    assert result.attempts[0].at < before.next_attempt_at - timedelta(hours=12)


def _event(merchant: str, ref: str, recovery_id: str, amount: int) -> FailureEvent:
    body = failure_body(ref, pm="pm_sim_succeed_on_1", amount=amount)
    return FailureEvent.model_validate(
        {**body, "merchant_id": merchant, "recovery_id": recovery_id}
    )


async def test_events_of_another_recovery_in_the_first_task_are_kept_for_it(
    dev_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    """Reproduced bug: a failure of the payment's next recovery, arriving in the same first
    workflow task, was taken into this one (its amount charged, its event counted)."""
    client: Client = dev_env.client
    tq = f"tq-{uuid.uuid4()}"
    ref = f"order_{uuid.uuid4().hex[:10]}"
    res = await ingest(store, merchant, failure_body(ref, pm="pm_sim_succeed_on_1", amount=1000))
    row = await store.pool.fetchrow(
        "UPDATE outbox SET delivered_at = now() WHERE workflow_id = $1 RETURNING payload",
        res.body["workflow_id"],
    )  # started by hand below, not by the relay
    mine = FailureEvent.model_validate(row["payload"])
    other = _event(merchant, ref, "rec_next_one", 2000)
    # both reach Temporal before any worker runs: they arrive in the first workflow task
    handle = await client.start_workflow(
        names.RECOVERY_WORKFLOW,
        RecoveryInput(merchant_id=merchant, payment_ref=ref),
        id=res.body["workflow_id"],
        task_queue=tq,
        start_signal=names.SIGNAL_PAYMENT_FAILED,
        start_signal_args=[mine],
        result_type=RecoveryState,
    )
    await handle.signal(names.SIGNAL_PAYMENT_FAILED, other)
    async with running_worker(client, store, tq):
        s = await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
        assert s.amount == 1000 and s.events_seen == 1
        await handle.execute_update(names.UPDATE_EXPEDITE, ExpediteRequest(actor="t"))
        with pytest.raises(WorkflowContinuedAsNewError):
            await handle.result(follow_runs=False)
        latest = client.get_workflow_handle(handle.id)
        await latest.result()  # the next run: its recovery is not open, so it closes
        described = await latest.describe()
    rec = await store.get_recovery(merchant, ref)
    assert rec.id == mine.recovery_id and rec.status == "recovered" and rec.amount == 1000
    charged = await store.pool.fetch(
        "SELECT amount FROM simulator_charges WHERE payment_ref = $1", ref
    )
    assert [r["amount"] for r in charged] == [1000]
    # the run continued as new for the other recovery, whose id its memo names
    assert described.run_id != handle.result_run_id
    assert (await described.memo())["recovery_id"] == "rec_next_one"


async def test_search_attributes_follow_a_joining_failure(
    dev_worker: RunningWorker, store: Store, merchant: str
) -> None:
    client, tq = dev_worker.client, dev_worker.task_queue
    handle = await start_recovery(
        store, dev_worker, merchant, pm="pm_sim_succeed_on_2", amount=4999
    )
    s = await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
    await ingest(store, merchant, failure_body(s.payment_ref, amount=5999))
    await relay(store, client, tq)
    await wait_for_state(handle, lambda s: s.amount == 5999 and s.events_seen == 2)

    async def amount_shown() -> bool:
        described = await handle.describe()
        return described.typed_search_attributes.get(names.SA_AMOUNT_MINOR) == 5999

    await eventually(amount_shown)
    await handle.signal(names.SIGNAL_CANCEL, CancelRequest(reason="done", actor="t"))


async def pending_in_postgres(store: Store, merchant: str, ref: str) -> bool:
    return (await store.get_recovery(merchant, ref)).category == "upi_pending"


async def test_a_pending_payment_that_cannot_be_checked_ends_the_recovery(
    ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    """Reproduced bug: a non-retryable error from check_payment_status failed the run while
    Postgres still said `active`. It ends `exhausted` with the reason, and never charges
    again while the payment may still complete."""
    client: Client = ts_env.client
    # no workflow cache: the next worker gets the workflow at once (no sticky queue to
    # time out on), as after a crash once Temporal notices
    uncached = Settings(
        environment="development", allow_simulator=True, worker_max_cached_workflows=0
    )
    with ts_env.auto_time_skipping_disabled():
        async with running_worker(client, store, settings=uncached) as first:
            handle = await start_recovery(store, first, merchant, pm="pm_sim_pending")
            await store.save_policy(merchant, NO_PAYDAYS, "test")
            await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
            await handle.signal(names.SIGNAL_EXPEDITE, ExpediteRequest(actor="t"))
            s = await wait_for_state(handle, lambda s: s.category == "upi_pending")
            # idle before this worker goes: the pending wait is written down
            await eventually(lambda: pending_in_postgres(store, merchant, s.payment_ref))
    # the worker that polls it can no longer reach the PSP (its credentials are gone)
    nothing = PSPDispatcher(store, Settings(environment="development"), psps=frozenset())
    async with running_worker(client, store, first.task_queue, psps=nothing):
        result = await run_out(ts_env, handle)
    assert result.status == "exhausted" and len(result.attempts) == 1
    assert "could not be checked" in (result.ended_reason or "")
    rec = await store.get_recovery(merchant, s.payment_ref)
    assert rec.status == "exhausted" and rec.ended_at is not None


def test_payloads_round_trip_the_data_converter() -> None:
    """The new signal's payload survives the pydantic converter as the workflow reads it."""
    update = PaymentMethodUpdate(payment_method=PaymentMethod(id="pm_x"), actor="a")
    converter = pydantic_data_converter.payload_converter
    (payload,) = converter.to_payloads([update])
    assert converter.from_payloads([payload], [PaymentMethodUpdate]) == [update]
