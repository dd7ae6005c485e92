"""Card-network limits inside the workflow, on the time-skipping server: every attempt on the
card the PSP will charge counts (the customer's default card too, one card under several
payment-method ids once), and a limit reached defers the attempt to when the rolling window
allows it."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from recovery.models import RecoveryState
from recovery.policy import RetryPolicy
from recovery.store import IngestOutcome, Store
from tests.helpers import RunningWorker, failure_body, ingest, relay, run_out, wait_for_state

# The simulator's customer `cus_sim_<script>` has `pm_sim_<script>` as its default card.
DEFAULT_CARD_CUSTOMER = "cus_sim_decline_insufficient_funds"
THE_SAME_CARD = "pm_sim_decline_insufficient_funds"


async def start(
    store: Store, worker: RunningWorker, merchant: str, *, customer: str, pm: str | None
) -> WorkflowHandle:
    """A recovery of a declined payment of `customer`; `pm` None charges their default card."""
    client, task_queue = worker.client, worker.task_queue
    body = failure_body(pm=pm)  # type: ignore[arg-type]
    body["customer"]["id"] = customer
    res = await ingest(store, merchant, body)
    assert res.outcome is IngestOutcome.ACCEPTED
    assert await relay(store, client, task_queue) == 1
    return client.get_workflow_handle(res.body["workflow_id"], result_type=RecoveryState)


async def test_default_card_attempts_count_and_a_reached_limit_defers_until_the_window_allows(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    await store.save_policy(
        merchant,
        RetryPolicy(
            card_attempts_per_30_days=1, window_days=60, max_attempts=2, payday_snap_days=0
        ),
        "test",
    )
    with ts_env.auto_time_skipping_disabled():
        handle = await start(store, worker, merchant, customer=DEFAULT_CARD_CUSTOMER, pm=None)
        await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
        # two cooldowns of about 2 days pass: attempt 1, then attempt 2 is due but held
        await ts_env.sleep(timedelta(days=7))
        held = await wait_for_state(
            handle, lambda s: "card-network limit" in (s.next_attempt_reason or "")
        )
    (first,) = held.attempts
    reserved = await store.pool.fetchval(
        "SELECT attempted_at FROM attempt_cards WHERE idempotency_key = $1", first.idempotency_key
    )
    # the next attempt waits until the first one falls out of the rolling 30 days
    assert held.next_attempt_at == reserved + timedelta(days=30)
    assert held.status == "active"
    assert "1 attempts on this Visa card in 30 days" in (held.next_attempt_reason or "")
    result = await run_out(ts_env, handle)
    assert len(result.attempts) == 2  # max_attempts: the held attempt did happen
    assert result.attempts[1].at >= reserved + timedelta(days=30)
    assert result.status == "exhausted" and "max attempts" in (result.ended_reason or "")
    rows = await store.pool.fetch(
        "SELECT card_key FROM attempts WHERE merchant_id = $1 ORDER BY number", merchant
    )
    assert [r["card_key"] for r in rows] == [f"simulator:card:{THE_SAME_CARD}"] * 2


async def test_one_card_is_counted_once_under_the_default_and_its_own_id(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    """Two recoveries at once, one charging the customer's default card and one naming the
    same card: the limit (1 in 30 days) holds across both; the deferred one ends only because
    the window allows its attempt after its recovery window (21 days) closes."""
    await store.save_policy(
        merchant, RetryPolicy(card_attempts_per_30_days=1, payday_snap_days=0), "test"
    )
    a = await start(store, worker, merchant, customer=DEFAULT_CARD_CUSTOMER, pm=None)
    b = await start(store, worker, merchant, customer="cus_other", pm=THE_SAME_CARD)
    results = [await run_out(ts_env, a), await b.result()]
    assert sum(len(r.attempts) for r in results) == 1
    for r in results:
        assert r.status == "exhausted"
        assert "card-network limit" in (r.ended_reason or "")
        assert "after the recovery window closes" in (r.ended_reason or "")
