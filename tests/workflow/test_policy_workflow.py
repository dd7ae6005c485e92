"""Merchant retry policies inside the workflow: pinned versions, explicit updates, and the
card-network limits."""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from recovery import constants as names
from recovery.policy import RetryPolicy
from recovery.store import Store
from tests.helpers import RunningWorker, run_out, start_recovery, wait_for_state


async def test_recovery_pins_the_policy_it_started_with(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    v1 = await store.save_policy(merchant, RetryPolicy(max_attempts=2), "test")
    assert v1.version == 1
    with ts_env.auto_time_skipping_disabled():
        handle = await start_recovery(
            store, worker, merchant, pm="pm_sim_decline_insufficient_funds"
        )
        first = await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
        assert first.policy_version == 1
        assert "policy v1" in (first.next_attempt_reason or "")
        # a new version does not touch the running recovery
        await store.save_policy(merchant, RetryPolicy(max_attempts=5), "test")
    result = await run_out(ts_env, handle)
    assert result.status == "exhausted" and len(result.attempts) == 2
    assert "2/2, policy v1" in (result.ended_reason or "")
    rec = await store.get_recovery(merchant, result.payment_ref)
    assert rec.policy_version == 1


async def test_update_policy_signal_applies_a_new_version(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    with ts_env.auto_time_skipping_disabled():
        handle = await start_recovery(
            store, worker, merchant, pm="pm_sim_decline_insufficient_funds"
        )
        before = await wait_for_state(handle, lambda s: s.next_attempt_at is not None)
        assert before.policy_version == 0  # the built-in default
        # no payday snapping: a payday near today's date must not move the new attempt later
        v1 = await store.save_policy(
            merchant,
            RetryPolicy(max_attempts=1, cooldown_multiplier=0.1, payday_snap_days=0),
            "test",
        )
        await handle.signal(names.SIGNAL_UPDATE_POLICY, v1)
        after = await wait_for_state(
            handle,
            lambda s: (
                s.policy_version == 1
                and s.next_attempt_at is not None
                and s.next_attempt_at < before.next_attempt_at
            ),
        )
        assert "policy v1" in (after.next_attempt_reason or "")
    result = await run_out(ts_env, handle)
    assert result.status == "exhausted" and len(result.attempts) == 1
    assert "1/1, policy v1" in (result.ended_reason or "")


async def test_card_network_limit_holds_across_recoveries_of_one_card(
    worker: RunningWorker, ts_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    await store.save_policy(
        merchant, RetryPolicy(card_attempts_per_30_days=2, payday_snap_days=0), "test"
    )
    card = "pm_sim_decline_insufficient_funds"
    first = await start_recovery(store, worker, merchant, pm=card)
    second = await start_recovery(store, worker, merchant, pm=card)
    results = [await run_out(ts_env, first), await second.result()]
    # two attempts on the card in 30 days, whichever recovery made them; the next one the
    # rolling window allows is after both recovery windows (21 days)
    assert sum(len(r.attempts) for r in results) == 2
    for r in results:
        assert r.status == "exhausted"
        assert "card-network limit: 2 attempts on this Visa card in 30 days" in (
            r.ended_reason or ""
        )
