"""The audit log of support actions."""

from __future__ import annotations

import asyncpg

from recovery.store.db import connection
from recovery.store.records import AuditEntryRecord


async def audit(
    pool: asyncpg.Pool,
    *,
    merchant_id: str,
    actor_key_id: str,
    actor_role: str,
    action: str,
    payment_ref: str | None,
    recovery_id: str | None,
    reason: str | None,
    result: str,
) -> None:
    async with connection(pool) as conn:
        await conn.execute(
            "INSERT INTO audit_log (merchant_id, actor_key_id, actor_role, action,"
            " payment_ref, recovery_id, reason, result) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
            merchant_id,
            actor_key_id,
            actor_role,
            action,
            payment_ref,
            recovery_id,
            reason,
            result,
        )


async def audit_entries(
    pool: asyncpg.Pool, merchant_id: str, payment_ref: str | None, limit: int
) -> list[AuditEntryRecord]:
    async with connection(pool) as conn:
        rows = await conn.fetch(
            "SELECT id, actor_key_id, actor_role, action, payment_ref, recovery_id, reason,"
            " result, created_at FROM audit_log WHERE merchant_id = $1"
            " AND ($2::text IS NULL OR payment_ref = $2) ORDER BY id DESC LIMIT $3",
            merchant_id,
            payment_ref,
            limit,
        )
    return [AuditEntryRecord(**dict(r)) for r in rows]
