"""Reading a recovery whole (its attempts, links and payments) on the caller's connection:
for `GET /v1/recoveries/by_ref/{ref}`, and for the merchant events written in the
transaction of the change they tell of (which must see that change)."""

from __future__ import annotations

import dataclasses

import asyncpg

from recovery.models import Attempt
from recovery.store.db import RECOVERY_COLUMNS, RECOVERY_FROM
from recovery.store.records import LinkSummary, ReceivedPayment, RecoveryRecord
from recovery.views import RecoveryOut, recovery_out

PAYMENT_COLUMNS = (
    "id, payment_ref, recovery_id, source, psp, psp_payment_id, amount, currency,"
    " disposition, refund_status, refund_id, refund_error, received_at, refunded_at, merchant_id"
)


async def read_attempts(conn: asyncpg.Connection, recovery_id: str) -> tuple[Attempt, ...]:
    rows = await conn.fetch(
        "SELECT number, created_at AS at, status AS outcome, failure_code AS code,"
        " idempotency_key FROM attempts WHERE recovery_id = $1 ORDER BY number",
        recovery_id,
    )
    return tuple(Attempt(**dict(a)) for a in rows)


async def read_links(conn: asyncpg.Connection, recovery_id: str) -> list[LinkSummary]:
    rows = await conn.fetch(
        "SELECT id AS link_id, created_at, expires_at, opened_at, used_at, revoked_at,"
        " revoked_reason, issued_by, checkout_closed_at FROM recovery_links"
        " WHERE recovery_id = $1 ORDER BY created_at",
        recovery_id,
    )
    return [LinkSummary(**dict(r)) for r in rows]


async def read_payments(conn: asyncpg.Connection, recovery_id: str) -> list[ReceivedPayment]:
    rows = await conn.fetch(
        f"SELECT {PAYMENT_COLUMNS} FROM received_payments WHERE recovery_id = $1"
        " ORDER BY received_at, id",
        recovery_id,
    )
    return [ReceivedPayment(**dict(r)) for r in rows]


async def with_attempts(conn: asyncpg.Connection, rec: RecoveryRecord) -> RecoveryRecord:
    return dataclasses.replace(rec, attempts=await read_attempts(conn, rec.id))


async def recovery_view(conn: asyncpg.Connection, recovery_id: str) -> RecoveryOut | None:
    """The recovery `recovery_id` as merchants see it, or None when there is no such one."""
    row = await conn.fetchrow(
        f"SELECT {RECOVERY_COLUMNS} {RECOVERY_FROM} WHERE r.id = $1", recovery_id
    )
    if row is None:
        return None
    rec = await with_attempts(conn, RecoveryRecord(**dict(row)))
    return recovery_out(
        rec, await read_links(conn, recovery_id), await read_payments(conn, recovery_id)
    )
