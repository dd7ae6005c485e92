"""The outbox: signals for workflows, written in the transaction that caused them and handed
to Temporal by the relay (woken by NOTIFY on `OUTBOX_CHANNEL`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import asyncpg
from pydantic import BaseModel

from recovery.constants import (
    OUTBOX_START_WATCH,
    SIGNAL_PAYMENT_FAILED,
    SIGNAL_PAYMENT_SUCCEEDED,
    watch_workflow_id,
    workflow_id_for,
)
from recovery.models import FailureEvent, PaymentLookup, PaymentSucceeded
from recovery.store.db import connection, transaction
from recovery.store.records import OutboxRow

OUTBOX_CHANNEL = "recovery_outbox"


async def queue_failure(conn: asyncpg.Connection, event: FailureEvent) -> None:
    """Record a failure event of a recovery and its outbox row, in the caller's transaction;
    the relay wakes on the notification when it commits. One statement, one round trip."""
    await conn.execute(
        "WITH event AS ("
        "  INSERT INTO payment_events"
        "  (merchant_id, event_id, payment_ref, recovery_id, payload, occurred_at)"
        "  VALUES ($1, $2, $3, $4, $5, $6)"
        "), queued AS ("
        "  INSERT INTO outbox (workflow_id, payload) VALUES ($7, $5)"
        ") SELECT pg_notify($8, '')",
        event.merchant_id,
        event.event_id,
        event.payment_ref,
        event.recovery_id,
        event.model_dump(mode="json"),
        event.occurred_at,
        workflow_id_for(event.merchant_id, event.payment_ref),
        OUTBOX_CHANNEL,
    )


async def queue_payment_succeeded(
    conn: asyncpg.Connection, workflow_id: str, signal: PaymentSucceeded
) -> None:
    """Queue `payment_succeeded` for a running recovery, in the caller's transaction."""
    await queue_signal(conn, workflow_id, SIGNAL_PAYMENT_SUCCEEDED, signal)


async def queue_watch(conn: asyncpg.Connection, payment: PaymentLookup) -> None:
    """Queue the start of the watcher of a payment still pending when its recovery ended
    (a WatchPendingPaymentWorkflow), in the caller's transaction."""
    await queue_signal(
        conn,
        watch_workflow_id(payment.merchant_id, payment.psp, payment.psp_payment_id),
        OUTBOX_START_WATCH,
        payment,
    )


async def queue_signal(
    conn: asyncpg.Connection, workflow_id: str, name: str, signal: BaseModel
) -> None:
    """Queue signal `name` for a running recovery, in the caller's transaction (the relay
    reads its payload back as `api.relay.RUNNING_SIGNALS[name]`)."""
    await conn.execute(
        "WITH queued AS (INSERT INTO outbox (workflow_id, signal, payload) VALUES ($1, $2, $3))"
        " SELECT pg_notify($4, '')",
        workflow_id,
        name,
        signal.model_dump(mode="json"),
        OUTBOX_CHANNEL,
    )


_PENDING = (
    "SELECT id, workflow_id, signal, payload, created_at FROM outbox WHERE delivered_at IS NULL"
)
_DUE = (
    _PENDING + " AND available_at <= clock_timestamp() ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
)
# The oldest failure waiting for workflow $1 (the one that starts its run), due or backing off.
_FIRST_FAILURE_OF = (
    _PENDING + f" AND workflow_id = $1 AND signal = '{SIGNAL_PAYMENT_FAILED}'"
    " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
)


async def relay(
    pool: asyncpg.Pool,
    limit: int,
    deliver: Callable[[Sequence[OutboxRow]], Awaitable[dict[int, str | None]]],
    *,
    first_failure_of: str | None = None,
) -> tuple[int, int]:
    """Hand one batch of pending outbox rows (oldest first, those due) to `deliver` (None =
    delivered, else error); with `first_failure_of`, only that workflow's oldest pending
    failure, due or not (a support action waits on its run).

    Rows stay locked (FOR UPDATE SKIP LOCKED) while they are delivered, so several relays
    never deliver the same row at once. Returns (delivered, failed).
    """
    async with transaction(pool) as conn:
        if first_failure_of is None:
            rows = await conn.fetch(_DUE, limit)
        else:
            rows = await conn.fetch(_FIRST_FAILURE_OF, first_failure_of)
        if not rows:
            return 0, 0
        batch = [
            OutboxRow(r["id"], r["workflow_id"], r["signal"], r["payload"], r["created_at"])
            for r in rows
        ]
        results = await deliver(batch)
        ok = [i for i, err in results.items() if err is None]
        failed = {i: err for i, err in results.items() if err is not None}
        if ok:
            await conn.execute(
                "UPDATE outbox SET delivered_at = clock_timestamp() WHERE id = ANY($1)", ok
            )
        for row_id, err in failed.items():
            await conn.execute(
                "UPDATE outbox SET tries = tries + 1, last_error = $2,"
                " available_at = clock_timestamp()"
                "   + least(power(2, tries), 30) * interval '1 second'"
                " WHERE id = $1",
                row_id,
                err[:500],
            )
        return len(ok), len(failed)


async def pending(pool: asyncpg.Pool) -> int:
    async with connection(pool) as conn:
        return await conn.fetchval("SELECT count(*) FROM outbox WHERE delivered_at IS NULL")
