"""Soak (not in `make test`: `make soak`): SIGKILL the worker again and again while charges
are in flight, through the simulator and through Stripe (localstripe behind its proxy, with
latency before and after each charge so kills land both before Stripe charged and after it
charged but before we heard), restart it each time, and count at the PSP's side: every
recovery recovered, exactly one successful charge per payment.

    make soak                      # SOAK_KILLS=200 kills with each PSP
    SOAK_KILLS=10 make soak        # a quick one

Figures go to the reliability figures file (see tests/reliability/support.py) and are
copied into bench/RESULTS.md by hand with the command and the machine.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from pathlib import Path

import pytest

from recovery.store import Store
from tests.helpers import INGEST, Stack, eventually, failure_body, running_stack
from tests.helpers.stack import expedite
from tests.integration.servers import TemporalDevServer
from tests.psp.localstripe_server import (
    TEST_API_KEY,
    create_customer_with_card,
    localstripe,
    set_latency,
    successful_charges,
)
from tests.reliability.support import WorkerProcess, pending_attempts, record, recovery_statuses

pytestmark = pytest.mark.soak
PER_KILL = 2  # recoveries charging when each kill comes


async def _kill_cycles(
    api: Stack, worker: WorkerProcess, rng: random.Random, kills: int, new_body
) -> tuple[list[str], int]:
    """`kills` times: new recoveries, expedited, the worker killed mid-charge, restarted."""
    refs: list[str] = []
    in_flight = 0
    for _ in range(kills):
        batch = []
        for _ in range(PER_KILL):
            body = new_body()
            r = await api.http.post(INGEST, json=body, headers=api.auth())
            assert r.status_code == 202, r.text
            batch.append(body["payment_ref"])
        refs += batch
        if not worker.running:
            worker.start()

        async def scheduled(b: list[str] = batch) -> bool:
            statuses = await recovery_statuses(api)
            return all(statuses.get(ref, ("", False))[1] for ref in b)

        await eventually(scheduled, within=60, what="recoveries in their cooldowns")
        for ref in batch:
            await expedite(api, ref)
        await eventually(
            lambda b=batch: pending_attempts(api, b), within=30, what="a charge in flight"
        )
        await asyncio.sleep(rng.uniform(0.0, 2.0))
        in_flight += await pending_attempts(api, batch)
        worker.kill()
    return refs, in_flight


async def _settle(api: Stack, worker: WorkerProcess, refs: list[str]) -> float:
    worker.start()
    started = time.monotonic()

    async def all_ended() -> bool:
        statuses = await recovery_statuses(api)
        return all(statuses[ref][0] != "active" for ref in refs)

    # a worker restarted after a kill has every killed charge to retry and look up: allow
    # 3 s per recovery (400 at the default 200 kills), at least 10 minutes
    within = max(600.0, 3.0 * len(refs))
    try:
        await eventually(all_ended, within=within, what="every recovery ended", interval=1.0)
    except AssertionError as e:  # say which are still open, and where each one is
        stuck = await api.store.pool.fetch(
            "SELECT r.payment_ref, r.status, r.next_attempt_at, r.next_attempt_reason,"
            " array_agg(a.status ORDER BY a.number) AS attempts FROM recoveries r"
            " LEFT JOIN attempts a ON a.recovery_id = r.id"
            " WHERE r.merchant_id = $1 AND r.ended_at IS NULL GROUP BY r.id LIMIT 10",
            api.merchant_id,
        )
        raise AssertionError(f"{e}; still open: {[dict(r) for r in stuck]}") from e
    return time.monotonic() - started


def _kills() -> int:
    return int(os.environ.get("SOAK_KILLS", "200"))


async def test_soak_sigkills_during_simulator_charges(
    store: Store, pg_dsn: str, temporal_server: TemporalDevServer, tmp_path: Path
) -> None:
    seed = int(os.environ.get("RELIABILITY_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    async with running_stack(store, pg_dsn, temporal_server.address, worker=False) as api:
        worker = WorkerProcess(
            pg_dsn, temporal_server.address, api.settings.temporal_task_queue, tmp_path
        )
        try:

            def body() -> dict:  # each recovery its own (slow) card
                return failure_body(pm=f"pm_sim_slow_{rng.choice((1, 2))}@{uuid.uuid4().hex}")

            refs, in_flight = await _kill_cycles(api, worker, rng, _kills(), body)
            settled = await _settle(api, worker, refs)
        finally:
            worker.stop()
        statuses = await recovery_statuses(api)
        lost = sorted(ref for ref in refs if statuses[ref][0] != "recovered")
        rows = await api.store.pool.fetch(
            "SELECT payment_ref, count(*) FILTER (WHERE status = 'succeeded') AS n"
            " FROM simulator_charges WHERE merchant_id = $1 GROUP BY payment_ref",
            api.merchant_id,
        )
        charged = {r["payment_ref"]: r["n"] for r in rows}
        doubles = sorted(ref for ref in refs if charged.get(ref, 0) > 1)
        record(
            "soak_simulator",
            seed=seed,
            kills=worker.kills,
            recoveries=len(refs),
            charges_in_flight_at_kill=in_flight,
            double_charges=len(doubles),
            lost_recoveries=len(lost),
            settled_s_after_last_kill=round(settled, 1),
        )
        assert not doubles and not lost
        assert all(charged.get(ref) == 1 for ref in refs)


async def test_soak_sigkills_during_stripe_charges(
    store: Store, pg_dsn: str, temporal_server: TemporalDevServer, tmp_path: Path
) -> None:
    seed = int(os.environ.get("RELIABILITY_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    with localstripe() as stripe_base:
        set_latency(stripe_base, "/v1/payment_intents", before=0.8, after=0.8)
        async with running_stack(
            store,
            pg_dsn,
            temporal_server.address,
            worker=False,
            stripe_api_key=TEST_API_KEY,
            stripe_api_base=stripe_base,
        ) as api:
            worker = WorkerProcess(
                pg_dsn, temporal_server.address, api.settings.temporal_task_queue, tmp_path
            )
            worker.env |= {"STRIPE_API_KEY": TEST_API_KEY, "STRIPE_API_BASE": stripe_base}
            customers: dict[str, str] = {}

            def body() -> dict:
                # A card of its own per recovery: localstripe fingerprints a card by its
                # number, and the network limits (rightly) hold a card charged 9+ times a day,
                # which would leave nothing in flight to kill.
                number = f"4242{len(customers):012d}"
                card = create_customer_with_card(stripe_base, number)
                b = failure_body(psp="stripe", pm=card.payment_method_id)
                b["customer"] = {"id": card.customer_id, "email": "soak@example.com"}
                customers[b["payment_ref"]] = card.customer_id
                return b

            try:
                refs, in_flight = await _kill_cycles(api, worker, rng, _kills(), body)
                settled = await _settle(api, worker, refs)
            finally:
                worker.stop()
            statuses = await recovery_statuses(api)
        lost = sorted(ref for ref in refs if statuses[ref][0] != "recovered")
        charged = {ref: len(successful_charges(stripe_base, customers[ref])) for ref in refs}
    doubles = sorted(ref for ref, n in charged.items() if n > 1)
    record(
        "soak_stripe",
        seed=seed,
        kills=worker.kills,
        recoveries=len(refs),
        charges_in_flight_at_kill=in_flight,
        double_charges=len(doubles),
        lost_recoveries=len(lost),
        settled_s_after_last_kill=round(settled, 1),
    )
    assert not doubles and not lost
    assert all(n == 1 for n in charged.values())
