"""The queue of merchant webhook deliveries, drained per endpoint by `WebhookEndpointWorkflow`.

A delivery is queued in the transaction that wrote its event (or a redelivery people asked
for), with an outbox row that wakes the endpoint's workflow: a crash right after the commit
loses nothing. A pass takes what is due, oldest first; each try is logged in
`webhook_deliveries` in the same transaction that deletes the delivery (delivered, given up)
or sets its next try, so a try is never logged without its queue row moving on. A pass that
dies between its POSTs and that transaction leaves the rows due: they are sent again (at
least once, the same `webhook-id`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from recovery.constants import OUTBOX_WAKE_WEBHOOKS, webhook_endpoint_workflow_id
from recovery.models import WebhookEndpointInput
from recovery.store.db import connection, new_id, transaction
from recovery.store.outbox import queue_signal
from recovery.store.records import (
    DeliveryTarget,
    DueDeliveries,
    QueuedDelivery,
    SealedSecret,
    TryDone,
)

LOG_TRY = (
    "INSERT INTO webhook_deliveries (id, merchant_id, endpoint_id, event_id, attempt,"
    " manual, status_code, error, duration_ms, attempted_at, next_retry_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)
"""One try of a delivery in the log (its error clipped to 1,000 characters by the caller)."""


async def enqueue(
    conn: asyncpg.Connection,
    merchant_id: str,
    endpoint_id: str,
    event_id: str,
    *,
    manual: bool = False,
) -> str:
    """Queue one delivery in the caller's transaction and wake the endpoint's workflow (the
    relay sends one wake per endpoint per batch, however many rows ask). Its workflow id."""
    await conn.execute(
        "INSERT INTO webhook_queue (id, merchant_id, endpoint_id, event_id, manual)"
        " VALUES ($1, $2, $3, $4, $5)",
        new_id("whq"),
        merchant_id,
        endpoint_id,
        event_id,
        manual,
    )
    workflow_id = webhook_endpoint_workflow_id(endpoint_id)
    await queue_signal(
        conn,
        workflow_id,
        OUTBOX_WAKE_WEBHOOKS,
        WebhookEndpointInput(merchant_id=merchant_id, endpoint_id=endpoint_id),
    )
    return workflow_id


async def due(
    pool: asyncpg.Pool, merchant_id: str, endpoint_id: str, limit: int, now: datetime
) -> DueDeliveries:
    """Up to `limit` deliveries due by `now` (the pass's clock), oldest due first, with what
    signs them now; None for an endpoint deleted or not the merchant's (its queue is
    dropped)."""
    async with connection(pool) as conn:
        endpoint = await conn.fetchrow(
            "SELECT url, deleted_at IS NOT NULL AS deleted, secret_key_id, secret_sealed,"
            " previous_key_id, previous_sealed,"
            " previous_expires_at > clock_timestamp() AS previous_signs"
            " FROM webhook_endpoints WHERE merchant_id = $1 AND id = $2",
            merchant_id,
            endpoint_id,
        )
        if endpoint is None or endpoint["deleted"]:
            await conn.execute("DELETE FROM webhook_queue WHERE endpoint_id = $1", endpoint_id)
            return DueDeliveries(None)
        rows = await conn.fetch(
            "SELECT q.id, q.event_id, q.manual, q.tries, q.first_try_at, v.type, v.created_at,"
            " v.payload FROM webhook_queue q"
            " JOIN merchant_events v ON v.id = q.event_id AND v.merchant_id = q.merchant_id"
            " WHERE q.endpoint_id = $1 AND q.merchant_id = $2"
            "   AND q.next_try_at <= $3"
            " ORDER BY q.next_try_at, q.id LIMIT $4",
            endpoint_id,
            merchant_id,
            now,
            limit,
        )
    secrets = [SealedSecret(endpoint["secret_key_id"], endpoint["secret_sealed"])]
    if endpoint["previous_signs"]:
        secrets.append(SealedSecret(endpoint["previous_key_id"], endpoint["previous_sealed"]))
    return DueDeliveries(
        tuple(
            QueuedDelivery(
                id=r["id"],
                target=DeliveryTarget(
                    merchant_id=merchant_id,
                    endpoint_id=endpoint_id,
                    url=endpoint["url"],
                    deleted=False,
                    secrets=tuple(secrets),
                    event_id=r["event_id"],
                    event_type=r["type"],
                    event_created_at=r["created_at"],
                    payload=r["payload"],
                ),
                manual=r["manual"],
                tries=r["tries"],
                first_try_at=r["first_try_at"],
            )
            for r in rows
        )
    )


async def record_tries(
    pool: asyncpg.Pool, endpoint_id: str, done: list[TryDone], now: datetime
) -> tuple[bool, datetime | None]:
    """Log a pass's tries and move their queue rows on, in one transaction; then whether
    more of the endpoint's queue is due by the pass's `now`, and when the next one is (None:
    none queued)."""
    async with transaction(pool) as conn:
        await conn.executemany(
            LOG_TRY,
            [
                (
                    new_id("whd"),
                    d.delivery.target.merchant_id,
                    endpoint_id,
                    d.delivery.target.event_id,
                    d.delivery.tries + 1,
                    d.delivery.manual,
                    d.status_code,
                    d.error[:1000] if d.error else None,
                    d.duration_ms,
                    d.attempted_at,
                    d.next_try_at,
                )
                for d in done
            ],
        )
        await conn.execute(
            "DELETE FROM webhook_queue WHERE id = ANY($1::text[])",
            [d.delivery.id for d in done if d.next_try_at is None],
        )
        await conn.executemany(
            "UPDATE webhook_queue SET tries = tries + 1, next_try_at = $2,"
            " first_try_at = coalesce(first_try_at, $3) WHERE id = $1",
            [(d.delivery.id, d.next_try_at, now) for d in done if d.next_try_at],
        )
        row = await conn.fetchrow(
            "SELECT min(next_try_at) AS next, min(next_try_at) <= $2 AS due"
            " FROM webhook_queue WHERE endpoint_id = $1",
            endpoint_id,
            now,
        )
    return bool(row["due"]), row["next"]


async def wake_stalled(conn: asyncpg.Connection, late_by: timedelta) -> int:
    """Wake (through the outbox) every endpoint with a delivery due more than `late_by` ago:
    its workflow is gone (terminated by hand, say), or nothing would be late. How many."""
    rows = await conn.fetch(
        "SELECT DISTINCT merchant_id, endpoint_id FROM webhook_queue"
        " WHERE next_try_at < clock_timestamp() - $1::interval",
        late_by,
    )
    for r in rows:
        await queue_signal(
            conn,
            webhook_endpoint_workflow_id(r["endpoint_id"]),
            OUTBOX_WAKE_WEBHOOKS,
            WebhookEndpointInput(merchant_id=r["merchant_id"], endpoint_id=r["endpoint_id"]),
        )
    return len(rows)
