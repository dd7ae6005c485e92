"""SIGKILL the worker while charges are in flight, restart it, and again: every recovery ends
`recovered`, and the simulator PSP's own ledger shows one charge per attempt idempotency key
and at most one successful charge per payment.

A charge abandoned by a killed worker is retried when its heartbeat times out (10 s: the
charge activity heartbeats every 2 s), so the trials kill first, each on fresh recoveries,
and the one wait for those timeouts comes at the end.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from pathlib import Path

import pytest

from recovery import constants as names
from recovery.store import Store
from tests.helpers import INGEST, eventually, failure_body, running_stack
from tests.helpers.stack import expedite
from tests.integration.servers import TemporalDevServer
from tests.reliability.support import (
    WorkerProcess,
    fetch_histories,
    pending_attempts,
    record,
    recovery_statuses,
)

TRIALS = 5
PER_TRIAL = 4
CHARGE_TIMEOUT = names.CHARGE_HEARTBEAT_TIMEOUT.total_seconds()  # an abandoned try is retried


@pytest.mark.heavy
async def test_sigkill_worker_during_charges(
    store: Store, pg_dsn: str, temporal_server: TemporalDevServer, tmp_path: Path
) -> None:
    seed = int(os.environ.get("RELIABILITY_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    async with running_stack(store, pg_dsn, temporal_server.address, worker=False) as api:
        worker = WorkerProcess(
            pg_dsn, temporal_server.address, api.settings.temporal_task_queue, tmp_path
        )
        batches: list[list[str]] = []
        for _ in range(TRIALS):
            batch = []
            for i in range(PER_TRIAL):
                # a card of its own each (`@`): the card-network limits are per card
                body = failure_body(pm=f"pm_sim_slow_{1 + i % 2}@{uuid.uuid4().hex}")
                r = await api.http.post(INGEST, json=body, headers=api.auth())
                assert r.status_code == 202, r.text
                batch.append(body["payment_ref"])
            batches.append(batch)
        refs = [ref for batch in batches for ref in batch]
        in_flight = completed_before_kill = 0
        started = time.monotonic()
        try:
            worker.start()

            async def all_scheduled() -> bool:
                statuses = await recovery_statuses(api)
                return len(statuses) == len(refs) and all(s[1] for s in statuses.values())

            # funds declines: every recovery sleeps in a cooldown of days until expedited
            await eventually(all_scheduled, within=60, what="recoveries in their cooldowns")
            for batch in batches:
                if not worker.running:
                    worker.start()
                for ref in batch:
                    await expedite(api, ref)
                await eventually(
                    lambda b=batch: pending_attempts(api, b), within=30, what="a charge in flight"
                )
                await asyncio.sleep(rng.uniform(0.0, 1.5))  # a random moment of the charges
                pending = await pending_attempts(api, batch)
                worker.kill()
                in_flight += pending
                completed_before_kill += await api.store.pool.fetchval(
                    "SELECT count(*) FROM attempts a JOIN recoveries r ON r.id = a.recovery_id"
                    " WHERE r.payment_ref = ANY($1) AND a.status <> 'pending'",
                    batch,
                )
            last_kill = time.monotonic()
            trials_took = last_kill - started
            worker.start()

            async def all_recovered() -> bool:
                statuses = await recovery_statuses(api)
                return all(s[0] == "recovered" for s in statuses.values())

            await eventually(
                all_recovered,
                within=CHARGE_TIMEOUT + 60,
                what="every recovery recovered",
                interval=0.5,
            )
            settled_after = time.monotonic() - last_kill
        finally:
            worker.stop()
        assert worker.kills == TRIALS

        # The PSP's ledger: one charge per attempt key, none without an attempt, and at most
        # one successful charge per payment.
        attempts = await api.store.pool.fetch(
            "SELECT r.payment_ref, a.number, a.status, a.idempotency_key,"
            " (SELECT count(*) FROM simulator_charges s"
            "   WHERE s.idempotency_key = a.idempotency_key) AS charges"
            " FROM attempts a JOIN recoveries r ON r.id = a.recovery_id WHERE r.merchant_id = $1",
            api.merchant_id,
        )
        assert sorted(a["payment_ref"] for a in attempts) == sorted(refs)  # one attempt each
        assert all(a["number"] == 1 and a["status"] == "succeeded" for a in attempts), attempts
        assert all(a["charges"] == 1 for a in attempts), attempts
        orphans = await api.store.pool.fetchval(
            "SELECT count(*) FROM simulator_charges s WHERE s.merchant_id = $1 AND NOT EXISTS"
            " (SELECT 1 FROM attempts a WHERE a.idempotency_key = s.idempotency_key)",
            api.merchant_id,
        )
        assert orphans == 0
        succeeded = await api.store.pool.fetch(
            "SELECT payment_ref, count(*) FILTER (WHERE status = 'succeeded') AS n"
            " FROM simulator_charges WHERE merchant_id = $1 GROUP BY payment_ref",
            api.merchant_id,
        )
        per_payment = {r["payment_ref"]: r["n"] for r in succeeded}
        double_charged = sorted(ref for ref, n in per_payment.items() if n > 1)
        assert not double_charged
        assert per_payment == dict.fromkeys(refs, 1)

        # How many charges (and other activities) ran more than once: an abandoned attempt,
        # then its retry once the attempt timed out.
        charges_retried = activities_retried = 0
        for history in await fetch_histories(api.temporal, f'MerchantId="{api.merchant_id}"'):
            types = {}
            for event in history.events:
                if event.HasField("activity_task_scheduled_event_attributes"):
                    attrs = event.activity_task_scheduled_event_attributes
                    types[event.event_id] = attrs.activity_type.name
                if event.HasField("activity_task_started_event_attributes"):
                    attrs = event.activity_task_started_event_attributes
                    if attrs.attempt > 1:
                        activities_retried += 1
                        charges_retried += types[attrs.scheduled_event_id] == "charge_payment"
        assert in_flight > 0 and charges_retried > 0  # the kills did hit charges in flight
        record(
            "sigkill_worker_during_charges",
            seed=seed,
            trials=TRIALS,
            recoveries=len(refs),
            kills=worker.kills,
            charges_in_flight_at_kill=in_flight,
            charges_done_before_kill=completed_before_kill,
            charges_retried=charges_retried,
            activities_retried=activities_retried,
            double_charges=len(double_charged),
            trials_s=round(trials_took, 1),
            all_recovered_s_after_last_kill=round(settled_after, 1),
        )
