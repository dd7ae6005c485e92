"""The outbox relay across replicas, and the maintenance Schedule."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.relay import OutboxRelay
from recovery import constants as names
from recovery.settings import Settings
from recovery.store import OutboxRow, Store
from tests.helpers import eventually, failure_body, ingest
from tests.helpers.stack import TEST_CREDENTIALS_KEY
from tests.helpers.webhooks import endpoint_with_event, recovery_started
from worker.main import build_worker, ensure_maintenance_schedule


async def test_two_relays_never_deliver_the_same_row(store: Store, merchant: str) -> None:
    for _ in range(40):
        await ingest(store, merchant, failure_body())
    delivered: Counter[int] = Counter()

    async def deliver(rows: Sequence[OutboxRow]) -> dict[int, str | None]:
        await asyncio.sleep(0.05)  # hold the row locks while "Temporal" answers
        delivered.update(r.id for r in rows)
        return {r.id: None for r in rows}

    async def replica() -> None:
        while (await store.relay_outbox(7, deliver)) != (0, 0):
            pass

    await asyncio.gather(replica(), replica(), replica())
    ours = await store.pool.fetch(
        "SELECT id, delivered_at FROM outbox WHERE payload->>'merchant_id' = $1", merchant
    )
    assert len(ours) == 40 and all(r["delivered_at"] for r in ours)
    assert {r["id"] for r in ours} <= set(delivered)
    assert max(delivered.values()) == 1


async def test_failed_deliveries_are_retried_later(store: Store, merchant: str) -> None:
    await ingest(store, merchant, failure_body())

    async def refuse(rows: Sequence[OutboxRow]) -> dict[int, str | None]:
        return {r.id: "RPCError: connection refused" for r in rows}

    ok, failed = await store.relay_outbox(100, refuse)
    assert failed >= 1 and ok == 0
    row = await store.pool.fetchrow(
        "SELECT tries, last_error, available_at > clock_timestamp() AS later, delivered_at"
        " FROM outbox WHERE payload->>'merchant_id' = $1",
        merchant,
    )
    assert row["tries"] == 1 and "refused" in row["last_error"]
    assert row["later"] and row["delivered_at"] is None
    await store.pool.execute("UPDATE outbox SET delivered_at = now() WHERE delivered_at IS NULL")


async def test_maintenance_schedule_prunes_old_idempotency_keys(
    dev_env: WorkflowEnvironment, store: Store, merchant: str
) -> None:
    client: Client = dev_env.client
    task_queue = f"tq-{uuid.uuid4()}"
    await store.pool.execute(
        "INSERT INTO idempotency_keys (merchant_id, key, request_hash, response_status,"
        " response_body, created_at) VALUES ($1, 'old', 'h', 202, '{}', now() - interval '25h'),"
        " ($1, 'fresh', 'h', 202, '{}', now())",
        merchant,
    )
    await ensure_maintenance_schedule(client, "some-old-queue")
    await ensure_maintenance_schedule(client, task_queue)  # a later start updates it
    schedule = client.get_schedule_handle(names.MAINTENANCE_SCHEDULE_ID)
    desc = await schedule.describe()
    assert desc.schedule.spec.intervals[0].every.total_seconds() == 3600
    async with build_worker(client, store, task_queue):
        await schedule.trigger()

        async def pruned() -> bool:
            keys = await store.pool.fetch(
                "SELECT key FROM idempotency_keys WHERE merchant_id = $1", merchant
            )
            assert [k["key"] for k in keys] == ["fresh"]
            return True

        await eventually(pruned, within=30)
    await schedule.delete()


async def test_a_commit_wakes_the_relay_at_once_without_a_sweep(
    dev_env: WorkflowEnvironment, store: Store, merchant: str, pg_dsn: str
) -> None:
    """LISTEN/NOTIFY alone delivers a committed event: the sweep here comes once an hour."""
    relay = OutboxRelay(
        store, dev_env.client, dsn=pg_dsn, task_queue=f"tq-{uuid.uuid4()}", sweep_seconds=3600
    )
    await store.pool.execute("UPDATE outbox SET delivered_at = now()")  # earlier tests' rows
    relay.start()
    try:
        await asyncio.sleep(1)  # the listener connects and catches up (nothing to do)
        res = await ingest(store, merchant, failure_body())

        async def delivered() -> bool:
            return bool(
                await store.pool.fetchval(
                    "SELECT delivered_at IS NOT NULL FROM outbox WHERE workflow_id = $1",
                    res.body["workflow_id"],
                )
            )

        await eventually(delivered, within=10)
    finally:
        await relay.stop()


class CancelSwallowingRelay(OutboxRelay):
    """A relay whose pass swallows its task's cancel once, as Python 3.11's `wait_for` (in
    asyncpg's pool acquire) may: the hang seen when an API stopped in a test run."""

    swallowed = 0

    async def relay_once(self) -> tuple[int, int]:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            type(self).swallowed += 1  # lost, not re-raised
        return 0, 0


async def test_a_relay_stops_even_when_a_cancel_is_lost(
    dev_env: WorkflowEnvironment, store: Store, pg_dsn: str
) -> None:
    relay = CancelSwallowingRelay(
        store, dev_env.client, dsn=pg_dsn, task_queue=f"tq-{uuid.uuid4()}", sweep_seconds=0.1
    )
    relay.start()
    await asyncio.sleep(0.5)  # in a pass: the sleep the cancel lands on
    stopping = asyncio.ensure_future(relay.stop())
    done, _ = await asyncio.wait({stopping}, timeout=15)
    assert done, "stop() waits for ever on a relay whose cancel was lost"
    assert CancelSwallowingRelay.swallowed == 1
    assert relay._task is not None and relay._task.done()


async def test_a_burst_of_deliveries_to_one_endpoint_wakes_its_workflow_once(
    dev_env: WorkflowEnvironment, store: Store, merchant: str, pg_dsn: str
) -> None:
    """Each delivery queued asks for a wake of its endpoint's workflow; the relay sends one
    signal-with-start per endpoint per batch, and marks every row that asked delivered."""
    await store.pool.execute("UPDATE outbox SET delivered_at = now()")  # earlier tests' rows
    settings = Settings(environment="development", credentials_key=TEST_CREDENTIALS_KEY)
    endpoint_id, _, _ = await endpoint_with_event(store, merchant, "http://127.0.0.1:9/", settings)
    for _ in range(20):
        await recovery_started(store, merchant)
    workflow_id = names.webhook_endpoint_workflow_id(endpoint_id)
    relay = OutboxRelay(
        store, dev_env.client, dsn=pg_dsn, task_queue=f"tq-{uuid.uuid4()}", sweep_seconds=3600
    )
    delivered, failed = await relay.relay_once()  # no worker on that queue: the run waits
    assert failed == 0 and delivered >= 21
    rows = await store.pool.fetch(
        "SELECT delivered_at FROM outbox WHERE workflow_id = $1", workflow_id
    )
    assert len(rows) == 21 and all(r["delivered_at"] for r in rows)
    history = await dev_env.client.get_workflow_handle(workflow_id).fetch_history()
    signals = [
        e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert len(signals) == 1
    assert signals[0].workflow_execution_signaled_event_attributes.signal_name == (
        names.SIGNAL_WEBHOOKS_QUEUED
    )
    await dev_env.client.get_workflow_handle(workflow_id).terminate("test over")
