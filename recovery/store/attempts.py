"""Charge attempts: recorded before the PSP call, completed with its result."""

from __future__ import annotations

import asyncpg

from recovery.models import ChargeRequest, ChargeResult
from recovery.store.db import connection


async def begin_attempt(pool: asyncpg.Pool, req: ChargeRequest) -> None:
    async with connection(pool) as conn:
        await conn.execute(
            "INSERT INTO attempts (recovery_id, number, idempotency_key, psp, amount,"
            " currency, status, merchant_id, payment_method_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8) ON CONFLICT DO NOTHING",
            req.recovery_id,
            req.attempt,
            req.idempotency_key,
            req.psp,
            req.amount,
            req.currency,
            req.merchant_id,
            req.payment_method.id,
        )


async def complete_attempt(pool: asyncpg.Pool, idempotency_key: str, result: ChargeResult) -> None:
    failure = result.failure
    async with connection(pool) as conn:
        await conn.execute(
            "UPDATE attempts SET status = $2, psp_payment_id = $3, failure_code = $4,"
            " failure = $5, completed_at = clock_timestamp() WHERE idempotency_key = $1",
            idempotency_key,
            result.status,
            result.psp_payment_id,
            (failure.decline_code or failure.code) if failure else None,
            failure.model_dump(mode="json") if failure else None,
        )


async def card_attempts(
    pool: asyncpg.Pool, merchant_id: str, payment_method_id: str
) -> tuple[int, int]:
    """Our attempts on one card in the last 30 days and the last 24 hours."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            "SELECT count(*) AS month,"
            " count(*) FILTER (WHERE created_at > now() - interval '24 hours') AS day"
            " FROM attempts WHERE merchant_id = $1 AND payment_method_id = $2"
            " AND created_at > now() - interval '30 days'",
            merchant_id,
            payment_method_id,
        )
    return row["month"], row["day"]
