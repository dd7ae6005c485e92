"""The simulator PSP's ledger: one charge per idempotency key, as a real PSP keeps."""

from __future__ import annotations

from typing import cast, get_args

import asyncpg

from recovery.errors import NotFound
from recovery.models import ChargeRequest, ChargeStatus
from recovery.store.db import connection, new_id


def _status(value: str) -> ChargeStatus:
    """A status read back from the ledger (only ever written from a ChargeStatus)."""
    if value not in get_args(ChargeStatus):
        raise ValueError(f"unknown simulator charge status {value!r}")
    return cast(ChargeStatus, value)


async def simulator_charge(
    pool: asyncpg.Pool, req: ChargeRequest, status: ChargeStatus, decline_code: str | None
) -> tuple[str, ChargeStatus, str | None]:
    """Record a simulated charge once per idempotency key; replays return the first one."""
    async with connection(pool) as conn:
        await conn.execute(
            "INSERT INTO simulator_charges (idempotency_key, psp_payment_id, merchant_id,"
            " payment_ref, amount, currency, payment_method_id, status, decline_code)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            req.idempotency_key,
            new_id("sim"),
            req.merchant_id,
            req.payment_ref,
            req.amount,
            req.currency,
            req.payment_method.id,
            status,
            decline_code,
        )
        row = await conn.fetchrow(
            "SELECT psp_payment_id, status, decline_code FROM simulator_charges"
            " WHERE idempotency_key = $1",
            req.idempotency_key,
        )
    return row["psp_payment_id"], _status(row["status"]), row["decline_code"]


async def simulator_charge_by_key(
    pool: asyncpg.Pool, idempotency_key: str
) -> tuple[str, ChargeStatus, str | None] | None:
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            "SELECT psp_payment_id, status, decline_code FROM simulator_charges"
            " WHERE idempotency_key = $1",
            idempotency_key,
        )
    if row is None:
        return None
    return row["psp_payment_id"], _status(row["status"]), row["decline_code"]


async def simulator_payment(
    pool: asyncpg.Pool, psp_payment_id: str
) -> tuple[ChargeStatus, str | None]:
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            "SELECT status, decline_code FROM simulator_charges WHERE psp_payment_id = $1",
            psp_payment_id,
        )
    if row is None:
        raise NotFound(f"no simulated payment {psp_payment_id!r}")
    return _status(row["status"]), row["decline_code"]


async def simulator_refund_amount(pool: asyncpg.Pool, refund_id: str) -> int:
    async with connection(pool) as conn:
        amount = await conn.fetchval(
            "SELECT amount FROM simulator_refunds WHERE id = $1", refund_id
        )
    if amount is None:
        raise NotFound(f"no simulated refund {refund_id!r}")
    return int(amount)


async def simulator_refund(
    pool: asyncpg.Pool, psp_payment_id: str, amount: int | None, idempotency_key: str
) -> str:
    """Refund a simulated payment (a charge, or a paid checkout) once per idempotency key;
    returns the refund's id."""
    async with connection(pool) as conn:
        paid = await conn.fetchval(
            "SELECT amount FROM simulator_charges WHERE psp_payment_id = $1"
            " AND status = 'succeeded' UNION ALL SELECT amount FROM simulator_checkouts"
            " WHERE id = $1 AND paid_at IS NOT NULL",
            psp_payment_id,
        )
        if paid is None:
            raise NotFound(f"no paid simulated payment {psp_payment_id!r}")
        await conn.execute(
            "INSERT INTO simulator_refunds (idempotency_key, id, psp_payment_id, amount)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            idempotency_key,
            new_id("simre"),
            psp_payment_id,
            amount if amount is not None else paid,
        )
        return await conn.fetchval(
            "SELECT id FROM simulator_refunds WHERE idempotency_key = $1", idempotency_key
        )
