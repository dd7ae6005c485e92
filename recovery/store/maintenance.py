"""Housekeeping and the business totals behind /metrics."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from recovery.store import merchant_webhooks, webhook_queue
from recovery.store.db import affected, connection
from recovery.store.records import MetricsSnapshot


async def prune(
    pool: asyncpg.Pool,
    *,
    idempotency_older_than: timedelta,
    outbox_older_than: timedelta,
    merchant_events_older_than: timedelta,
    webhooks_stalled_after: timedelta,
) -> dict[str, int]:
    """Expired rows go; endpoints whose deliveries are overdue are woken again."""
    async with connection(pool) as conn:
        keys = await conn.execute(
            "DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval",
            idempotency_older_than,
        )
        outbox = await conn.execute(
            "DELETE FROM outbox WHERE delivered_at < now() - $1::interval",
            outbox_older_than,
        )
        events = await merchant_webhooks.prune(conn, merchant_events_older_than)
        woken = await webhook_queue.wake_stalled(conn, webhooks_stalled_after)
    return {
        "idempotency_keys": affected(keys),
        "outbox": affected(outbox),
        "merchant_events": events,
        "webhook_endpoints_woken": woken,
    }


async def metrics_snapshot(pool: asyncpg.Pool) -> MetricsSnapshot:
    """Business totals for /metrics, across all merchants."""
    async with connection(pool) as conn:
        statuses = await conn.fetch("SELECT status, count(*) AS n FROM recoveries GROUP BY 1")
        amounts = await conn.fetch(
            "SELECT currency, sum(amount) AS total FROM recoveries"
            " WHERE status = 'recovered' GROUP BY 1"
        )
        payments = await conn.fetch(
            "SELECT disposition, coalesce(refund_status, 'none') AS refund, count(*) AS n"
            " FROM received_payments GROUP BY 1, 2"
        )
        outbox = await conn.fetchrow(
            "SELECT count(*) AS pending, coalesce(extract(epoch FROM"
            " clock_timestamp() - min(created_at)), 0) AS lag"
            " FROM outbox WHERE delivered_at IS NULL"
        )
    return MetricsSnapshot(
        by_status={r["status"]: r["n"] for r in statuses},
        recovered_amounts={r["currency"]: int(r["total"]) for r in amounts},
        outbox_pending=outbox["pending"],
        outbox_lag_seconds=float(outbox["lag"]),
        payments={(r["disposition"], r["refund"]): r["n"] for r in payments},
    )
