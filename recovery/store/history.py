"""What the console reads about a merchant's recoveries beyond the API's views: search with
filters, a recovery's whole story (its payment, events, attempts, earlier runs), the feed of
recent events, the attempts coming up and what is open by category.

Every query is filtered by the merchant.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from recovery.store.db import RECOVERY_COLUMNS, RECOVERY_FROM, connection
from recovery.store.records import (
    ActivityItem,
    AttemptDetail,
    FailureEventRecord,
    OpenCount,
    PaymentRecord,
    RecoveryRecord,
    RunSummary,
)
from recovery.store.recoveries import decode_cursor, encode_cursor


async def search_recoveries(
    pool: asyncpg.Pool,
    merchant_id: str,
    *,
    q: str | None = None,
    status: str | None = None,
    category: str | None = None,
    psp: str | None = None,
    started_from: datetime | None = None,
    started_to: datetime | None = None,
    limit: int = 25,
    cursor: str | None = None,
) -> tuple[list[RecoveryRecord], str | None]:
    """Recovery runs, newest first. `q` matches a payment ref by prefix, or a customer id or
    e-mail address exactly (the e-mail ignoring case)."""
    args: list[Any] = [merchant_id, status, category, psp, started_from, started_to, limit + 1]
    where = [
        "r.merchant_id = $1",
        "($2::text IS NULL OR r.status = $2)",
        "($3::text IS NULL OR r.category = $3)",
        "($4::text IS NULL OR t.psp = $4)",
        "($5::timestamptz IS NULL OR r.started_at >= $5)",
        "($6::timestamptz IS NULL OR r.started_at < $6)",
    ]
    if q:
        args.append(q)
        n = len(args)
        prefix = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        args.append(prefix)
        where.append(
            f"r.payment_ref IN (SELECT payment_ref FROM transactions WHERE merchant_id = $1"
            f" AND (payment_ref LIKE ${n + 1} OR customer_id = ${n}"
            f" OR lower(customer_email) = lower(${n})))"
        )
    if cursor:
        started, rid = decode_cursor(cursor)
        args += [started, rid]
        where.append(f"(r.started_at, r.id) < (${len(args) - 1}, ${len(args)})")
    async with connection(pool) as conn:
        rows = await conn.fetch(
            f"SELECT {RECOVERY_COLUMNS} {RECOVERY_FROM} WHERE {' AND '.join(where)}"
            " ORDER BY r.started_at DESC, r.id DESC LIMIT $7",
            *args,
        )
    items = [RecoveryRecord(**dict(r)) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].started_at, items[-1].id) if len(rows) > limit else None
    return items, next_cursor


async def payment_of(
    pool: asyncpg.Pool, merchant_id: str, payment_ref: str
) -> PaymentRecord | None:
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            "SELECT merchant_id, payment_ref, psp, amount, currency, customer_id, customer_email,"
            " payment_method_type, payment_method_id, metadata, created_at FROM transactions"
            " WHERE merchant_id = $1 AND payment_ref = $2",
            merchant_id,
            payment_ref,
        )
    return PaymentRecord(**dict(row)) if row else None


async def events_of(
    pool: asyncpg.Pool, merchant_id: str, recovery_id: str
) -> list[FailureEventRecord]:
    """The failure events that opened or joined the run, oldest first."""
    async with connection(pool) as conn:
        rows = await conn.fetch(
            "SELECT event_id, occurred_at, received_at, payload FROM payment_events"
            " WHERE merchant_id = $1 AND recovery_id = $2 ORDER BY id",
            merchant_id,
            recovery_id,
        )
    return [FailureEventRecord(**dict(r)) for r in rows]


async def attempts_detail(
    pool: asyncpg.Pool, merchant_id: str, recovery_id: str
) -> list[AttemptDetail]:
    """The run's charge attempts with when each was planned and why."""
    async with connection(pool) as conn:
        rows = await conn.fetch(
            "SELECT a.number, a.created_at, a.completed_at, a.status, a.failure_code, a.failure,"
            " a.psp_payment_id, a.planned_at, a.planned_reason, a.payment_method_id"
            " FROM attempts a JOIN recoveries r ON r.id = a.recovery_id"
            " WHERE r.merchant_id = $1 AND a.recovery_id = $2 ORDER BY a.number",
            merchant_id,
            recovery_id,
        )
    return [AttemptDetail(**dict(r)) for r in rows]


async def runs_of(pool: asyncpg.Pool, merchant_id: str, payment_ref: str) -> list[RunSummary]:
    """Every recovery run of the payment (a redrive starts a new one), newest first."""
    async with connection(pool) as conn:
        rows = await conn.fetch(
            "SELECT id, status, started_at, ended_at, ended_reason, attempt_count FROM recoveries"
            " WHERE merchant_id = $1 AND payment_ref = $2 ORDER BY started_at DESC, id DESC",
            merchant_id,
            payment_ref,
        )
    return [RunSummary(**dict(r)) for r in rows]


async def recent_activity(pool: asyncpg.Pool, merchant_id: str, limit: int) -> list[ActivityItem]:
    """The merchant's latest events, newest first: recoveries started and ended, attempts
    made, support actions."""
    async with connection(pool) as conn:
        rows = await conn.fetch(
            "(SELECT started_at AS at, 'started' AS kind, payment_ref, category AS detail"
            "   FROM recoveries WHERE merchant_id = $1 ORDER BY started_at DESC LIMIT $2)"
            " UNION ALL"
            " (SELECT ended_at, status, payment_ref, ended_reason FROM recoveries"
            "   WHERE merchant_id = $1 AND ended_at IS NOT NULL ORDER BY ended_at DESC LIMIT $2)"
            " UNION ALL"
            " (SELECT a.created_at, 'attempt', r.payment_ref,"
            "         'attempt ' || a.number || ': ' || a.status"
            "         || coalesce(' (' || a.failure_code || ')', '')"
            "   FROM attempts a JOIN recoveries r ON r.id = a.recovery_id"
            "   WHERE a.merchant_id = $1 ORDER BY a.created_at DESC LIMIT $2)"
            " UNION ALL"
            " (SELECT created_at, 'support', payment_ref,"
            "         action || ' by ' || actor_role || ': ' || result"
            "   FROM audit_log WHERE merchant_id = $1 ORDER BY created_at DESC LIMIT $2)"
            " ORDER BY at DESC LIMIT $2",
            merchant_id,
            limit,
        )
    return [ActivityItem(**dict(r)) for r in rows]


async def upcoming_attempts(
    pool: asyncpg.Pool, merchant_id: str, limit: int
) -> list[RecoveryRecord]:
    """Open recoveries with an attempt scheduled, soonest first."""
    async with connection(pool) as conn:
        rows = await conn.fetch(
            f"SELECT {RECOVERY_COLUMNS} {RECOVERY_FROM}"
            " WHERE r.merchant_id = $1 AND r.ended_at IS NULL AND r.next_attempt_at IS NOT NULL"
            " ORDER BY r.next_attempt_at LIMIT $2",
            merchant_id,
            limit,
        )
    return [RecoveryRecord(**dict(r)) for r in rows]


async def open_by_category(pool: asyncpg.Pool, merchant_id: str) -> list[OpenCount]:
    """Open recoveries now, by category and status, with their amounts per currency."""
    async with connection(pool) as conn:
        rows = await conn.fetch(
            "SELECT coalesce(r.category, 'unclassified') AS category, r.status, t.currency,"
            " count(*) AS count, sum(t.amount)::bigint AS amount"
            " FROM recoveries r JOIN transactions t USING (merchant_id, payment_ref)"
            " WHERE r.merchant_id = $1 AND r.ended_at IS NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            merchant_id,
        )
    return [OpenCount(**dict(r)) for r in rows]
