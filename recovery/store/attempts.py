"""Charge attempts: recorded before the PSP call, completed with its result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

import asyncpg

from recovery.models import CardIdentity, ChargeRequest, ChargeResult
from recovery.payments import payment_identity
from recovery.policy import CardWindow
from recovery.store.db import connection, lock_payment, transaction
from recovery.store.payments import receive_payment


async def begin_attempt(pool: asyncpg.Pool, req: ChargeRequest) -> datetime:
    """The attempt's row, before the PSP call; it keeps the card its attempt was reserved on
    (`reserve_card_attempt`), if it was, and the time the workflow had planned for it with
    its reason (the recovery's next attempt as last shown). Returns when its first try
    began."""
    async with connection(pool) as conn:
        await conn.execute(
            "INSERT INTO attempts (recovery_id, number, idempotency_key, psp, amount,"
            " currency, status, merchant_id, payment_method_id, card_key, planned_at,"
            " planned_reason)"
            " SELECT $1, $2, $3, $4, $5, $6, 'pending', $7, $8,"
            " (SELECT card_key FROM attempt_cards WHERE idempotency_key = $3),"
            " r.next_attempt_at, r.next_attempt_reason"
            " FROM (VALUES (1)) one LEFT JOIN recoveries r ON r.id = $1"
            " ON CONFLICT DO NOTHING",
            req.recovery_id,
            req.attempt,
            req.idempotency_key,
            req.psp,
            req.amount,
            req.currency,
            req.merchant_id,
            req.payment_method.id,
        )
        started: datetime = await conn.fetchval(
            "SELECT created_at FROM attempts WHERE idempotency_key = $1", req.idempotency_key
        )
    return started


async def complete_attempt(pool: asyncpg.Pool, idempotency_key: str, result: ChargeResult) -> None:
    """Record an attempt's result; a charge that succeeded is a received payment (which, if
    the customer paid meanwhile by another way, is refunded as a duplicate)."""
    failure = result.failure
    async with transaction(pool) as conn:
        attempt = await conn.fetchrow(
            "SELECT a.merchant_id, r.payment_ref, a.psp, a.amount, a.currency FROM attempts a"
            " JOIN recoveries r ON r.id = a.recovery_id WHERE a.idempotency_key = $1",
            idempotency_key,
        )
        if attempt is not None and result.status == "succeeded":
            await lock_payment(conn, attempt["merchant_id"], attempt["payment_ref"])
        await conn.execute(
            "UPDATE attempts SET status = $2, psp_payment_id = coalesce($3, psp_payment_id),"
            " failure_code = $4, failure = $5, completed_at = clock_timestamp()"
            " WHERE idempotency_key = $1",
            idempotency_key,
            result.status,
            result.psp_payment_id,
            (failure.decline_code or failure.code) if failure else None,
            failure.model_dump(mode="json") if failure else None,
        )
        if attempt is not None and result.status == "succeeded":
            await receive_payment(
                conn,
                merchant_id=attempt["merchant_id"],
                payment_ref=attempt["payment_ref"],
                identity=payment_identity(
                    attempt["psp"], result.psp_payment_id, f"attempt:{idempotency_key}"
                ),
                source="attempt",
                psp=attempt["psp"],
                psp_payment_id=result.psp_payment_id,
                amount=attempt["amount"],
                currency=attempt["currency"],
            )


async def settle_pending_attempt(
    pool: asyncpg.Pool,
    result: ChargeResult,
    *,
    merchant_id: str | None = None,
    payment_ref: str | None = None,
) -> None:
    """A pending payment settled (seen by polling the PSP). One of our charges: recorded as
    its attempt's result. Else, when `payment_ref` names the payment whose failure reported
    it pending (the ingested `psp_payment_id`), a success is a payment received for it."""
    async with connection(pool) as conn:
        key = await conn.fetchval(
            "SELECT idempotency_key FROM attempts WHERE psp_payment_id = $1",
            result.psp_payment_id,
        )
    if key is not None:
        await complete_attempt(pool, key, result)
        return
    if merchant_id is None or payment_ref is None or result.status != "succeeded":
        return
    async with transaction(pool) as conn:
        await lock_payment(conn, merchant_id, payment_ref)
        paid = await conn.fetchrow(
            "SELECT psp, amount, currency FROM transactions"
            " WHERE merchant_id = $1 AND payment_ref = $2",
            merchant_id,
            payment_ref,
        )
        if paid is None:
            return
        await receive_payment(
            conn,
            merchant_id=merchant_id,
            payment_ref=payment_ref,
            identity=payment_identity(
                paid["psp"], result.psp_payment_id, f"pending:{result.psp_payment_id}"
            ),
            source="pending_failure",
            psp=paid["psp"],
            psp_payment_id=result.psp_payment_id,
            amount=paid["amount"],
            currency=paid["currency"],
        )


async def settle_unanswered_attempt(
    pool: asyncpg.Pool, idempotency_key: str, result: ChargeResult | None, why: str
) -> None:
    """An attempt whose answer never came, settled by looking it up at the PSP: the charge
    found is its result; none found means nothing was charged (recorded as `not_made`)."""
    if result is not None:
        await complete_attempt(pool, idempotency_key, result)
        return
    async with connection(pool) as conn:
        await conn.execute(
            "UPDATE attempts SET status = 'not_made', failure_code = 'charge_not_made',"
            " failure = $2, completed_at = clock_timestamp() WHERE idempotency_key = $1",
            idempotency_key,
            {"code": "charge_not_made", "message": why[:1000]},
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


async def reserve_card_attempt(
    pool: asyncpg.Pool,
    merchant_id: str,
    card: CardIdentity,
    idempotency_key: str,
    at: datetime,
    decide: Callable[[list[datetime]], CardWindow],
) -> CardWindow:
    """Count the merchant's attempts on `card` in the 30 days before `at`, let `decide` say
    whether one more fits, and if it does reserve it (idempotent per attempt key), under a lock
    per card. Attempts from before reservations existed count by their payment method id."""
    async with transaction(pool) as conn:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"card:{merchant_id}:{card.key}",
        )
        reserved = await conn.fetchval(
            "SELECT attempted_at FROM attempt_cards WHERE idempotency_key = $1", idempotency_key
        )
        rows = await conn.fetch(
            "SELECT attempted_at AS at FROM attempt_cards WHERE merchant_id = $1"
            " AND card_key = $2 AND attempted_at > $3::timestamptz - interval '30 days'"
            " AND idempotency_key <> $4"
            " UNION ALL SELECT a.created_at FROM attempts a WHERE a.merchant_id = $1"
            " AND a.payment_method_id = $5 AND a.created_at > $3::timestamptz - interval '30 days'"
            " AND NOT EXISTS (SELECT 1 FROM attempt_cards c"
            " WHERE c.idempotency_key = a.idempotency_key)",
            merchant_id,
            card.key,
            at,
            idempotency_key,
            card.payment_method_id,
        )
        window = decide([r["at"] for r in rows])
        if reserved is not None:  # an earlier try of this check reserved it: it stands
            return replace(window, not_before=None, reason="reserved on this card before")
        if window.not_before is None:
            await conn.execute(
                "INSERT INTO attempt_cards (idempotency_key, merchant_id, card_key, brand,"
                " payment_method_id, attempted_at) VALUES ($1, $2, $3, $4, $5, $6)",
                idempotency_key,
                merchant_id,
                card.key,
                card.brand,
                card.payment_method_id,
                at,
            )
    return window
