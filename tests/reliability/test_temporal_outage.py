"""Temporal goes away and comes back (a dev server on a database file, stopped and started):

- while recoveries sleep in their cooldowns: every recovery completes, and timers that fell
  due during the outage fire promptly once it is back;
- while events are ingested: ingest keeps answering 202, and every accepted event reaches
  its workflow once Temporal is back.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from datetime import UTC, datetime

import pytest

from recovery import constants as names
from recovery.models import RecoveryState
from recovery.store import Store
from tests.helpers import INGEST, Stack, eventually, failure_body, running_stack
from tests.helpers.stack import put_policy
from tests.integration.servers import TemporalDevServer
from tests.reliability.support import delivered_events, record

# processing_error is a network failure: a 5 min cooldown, x 0.1 = 30 s (+-20 % jitter)
COOLDOWN_MULTIPLIER = 0.1
SLEEPING = 12
# A timer overdue when Temporal returns must fire (and its attempt start) within this long.
PROMPT = 15.0


async def _recoveries(api: Stack) -> list[dict]:
    rows = await api.store.pool.fetch(
        "SELECT r.payment_ref, r.workflow_id, r.status, r.next_attempt_at,"
        " (SELECT min(a.created_at) FROM attempts a WHERE a.recovery_id = r.id) AS attempted_at"
        " FROM recoveries r WHERE r.merchant_id = $1",
        api.merchant_id,
    )
    return [dict(r) for r in rows]


@pytest.mark.heavy
async def test_timers_due_during_a_temporal_outage_fire_when_it_returns(
    store: Store, pg_dsn: str, temporal_server: TemporalDevServer
) -> None:
    async with running_stack(store, pg_dsn, temporal_server.address) as api:
        await put_policy(api, cooldown_multiplier=COOLDOWN_MULTIPLIER)
        for _ in range(SLEEPING):
            body = failure_body(  # a card of its own each (`@`): the limits are per card
                pm=f"pm_sim_succeed_on_1@{uuid.uuid4().hex}",
                code="processing_error",
                decline_code=None,
                message=None,
            )
            r = await api.http.post(INGEST, json=body, headers=api.auth())
            assert r.status_code == 202, r.text

        async def all_sleeping() -> list[dict]:
            """Every cooldown planned in Postgres and its timer started in Temporal (a lean
            run writes its plan from a local activity, before the task that starts the timer
            is recorded: stopping Temporal in between would test a task lost, not a timer)."""
            recs = await _recoveries(api)
            if len(recs) != SLEEPING or not all(r["next_attempt_at"] for r in recs):
                return []
            for r in recs:
                handle = api.temporal.get_workflow_handle(r["workflow_id"])
                history = await handle.fetch_history()
                if not any(e.HasField("timer_started_event_attributes") for e in history.events):
                    return []
            return recs

        recs = await eventually(all_sleeping, within=30, what="recoveries in their cooldowns")
        due = {r["payment_ref"]: r["next_attempt_at"] for r in recs}
        await temporal_server.stop()
        down_at = datetime.now(UTC)
        try:
            # Stay down until two thirds of the timers are overdue; the rest fall due after.
            order = sorted(due.values())
            back_at_target = order[2 * len(order) // 3]
            await asyncio.sleep((back_at_target - datetime.now(UTC)).total_seconds() + 0.5)
        finally:
            await temporal_server.start()
        back_at = datetime.now(UTC)

        async def all_recovered() -> list[dict]:
            recs = await _recoveries(api)
            return recs if all(r["status"] == "recovered" for r in recs) else []

        recs = await eventually(
            all_recovered, within=60, what="every recovery recovered", interval=0.5
        )
        overdue = after_return = on_time = 0.0
        overdue_count = 0
        for r in recs:
            at, scheduled = r["attempted_at"], due[r["payment_ref"]]
            assert at is not None and at >= scheduled, r  # never early
            if scheduled < back_at:
                overdue_count += 1
                overdue = max(overdue, (at - scheduled).total_seconds())
                after_return = max(after_return, (at - back_at).total_seconds())
            else:
                on_time = max(on_time, (at - scheduled).total_seconds())
        assert overdue_count > 0
        assert after_return <= PROMPT, f"overdue timers fired {after_return:.1f}s after return"
        assert on_time <= PROMPT, f"a timer due after the outage fired {on_time:.1f}s late"
        record(
            "timers_during_temporal_outage",
            recoveries=SLEEPING,
            outage_s=round((back_at - down_at).total_seconds(), 1),
            overdue_timers=overdue_count,
            max_overdue_fired_s_after_return=round(after_return, 2),
            max_overdue_lateness_vs_due_s=round(overdue, 2),
            max_lateness_of_timers_due_after_return_s=round(on_time, 2),
            recovered=len(recs),
        )


BEFORE = 10  # payments whose recoveries are running when Temporal goes away
DURING = 150  # events posted while it is away
DOWN_AT_LEAST = 8.0


async def test_every_event_accepted_while_temporal_is_down_reaches_its_workflow(
    store: Store, pg_dsn: str, temporal_server: TemporalDevServer
) -> None:
    seed = int(os.environ.get("RELIABILITY_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    async with running_stack(store, pg_dsn, temporal_server.address) as api:
        expected: dict[str, set[str]] = {}  # payment_ref -> its event ids

        async def post(body: dict, want: int) -> None:
            r = await api.http.post(INGEST, json=body, headers=api.auth())
            assert r.status_code == want, r.text
            expected.setdefault(body["payment_ref"], set()).add(body["event_id"])

        for _ in range(BEFORE):
            await post(failure_body(), 202)

        async def running(ref: str) -> bool:
            wf = names.workflow_id_for(api.merchant_id, ref)
            state = await api.temporal.get_workflow_handle(wf).query(
                names.QUERY_STATE, result_type=RecoveryState
            )
            return state.events_seen == len(expected[ref]) and state.category is not None

        for ref in list(expected):
            await eventually(lambda r=ref: running(r), within=30, what="recovery running")

        await temporal_server.stop()
        down_at = time.monotonic()
        joins = duplicates = 0
        sent: list[dict] = []
        try:
            for _ in range(DURING):
                roll = rng.random()
                if roll < 0.4:  # a later failure of a payment already known (before or during)
                    ref = rng.choice(sorted(expected))
                    body = failure_body(ref)
                    joins += 1
                    await post(body, 202)
                elif roll < 0.5 and sent:  # the merchant resends an event: a duplicate
                    body = dict(rng.choice(sent))
                    duplicates += 1
                    await post(body, 200)
                    continue
                else:
                    body = failure_body(f"order_{uuid.uuid4().hex[:10]}")
                    await post(body, 202)
                sent.append(body)
                if rng.random() < 0.1:
                    await asyncio.sleep(rng.uniform(0, 0.3))
            await asyncio.sleep(max(0.0, DOWN_AT_LEAST - (time.monotonic() - down_at)))
            pending = await api.store.pool.fetchval(
                "SELECT count(*) FROM outbox WHERE delivered_at IS NULL"
                " AND payload->>'merchant_id' = $1",
                api.merchant_id,
            )
            assert pending == len(sent)  # all held back while Temporal is down
        finally:
            await temporal_server.start()
        back_at = time.monotonic()
        outage = back_at - down_at

        want = {
            e: names.workflow_id_for(api.merchant_id, ref)
            for ref, es in expected.items()
            for e in es
        }

        async def all_delivered() -> dict[str, list[str]]:
            where = await delivered_events(api.temporal, api.merchant_id)
            return where if set(where) >= set(want) else {}

        where = await eventually(
            all_delivered, within=60, what="every accepted event delivered", interval=0.5
        )
        delivered_after = time.monotonic() - back_at
        lost = [e for e in want if e not in where]
        assert not lost
        misplaced = [e for e, wfs in where.items() if set(wfs) != {want.get(e)}]
        assert not misplaced, misplaced
        redelivered = sum(len(wfs) - 1 for wfs in where.values())
        # ... and each workflow took its events in (duplicates recognised)
        for ref in expected:
            await eventually(lambda r=ref: running(r), within=30, what=f"{ref} saw its events")
        undelivered = await api.store.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE delivered_at IS NULL"
            " AND payload->>'merchant_id' = $1",
            api.merchant_id,
        )
        assert undelivered == 0
        record(
            "ingest_during_temporal_outage",
            seed=seed,
            events_posted_while_down=DURING,
            accepted_202=len(sent),
            joins=joins,
            duplicates_200=duplicates,
            payments=len(expected),
            outage_s=round(outage, 1),
            all_delivered_s_after_return=round(delivered_after, 1),
            redelivered_signals=redelivered,
            events_lost=len(lost),
        )
