"""Merchants' retry policies, one row per version."""

from __future__ import annotations

import asyncpg

from recovery.policy import DEFAULT_POLICY, RetryPolicy
from recovery.store.db import connection, transaction


async def current_policy(pool: asyncpg.Pool, merchant_id: str) -> RetryPolicy:
    """The merchant's latest policy version, or the built-in default (version 0)."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            "SELECT version, policy FROM merchant_policies WHERE merchant_id = $1"
            " ORDER BY version DESC LIMIT 1",
            merchant_id,
        )
    return _policy_of(row)


async def policy_version(
    conn: asyncpg.Connection, merchant_id: str, version: int | None
) -> RetryPolicy:
    """The merchant's policy `version` (0 or None: the built-in default)."""
    row = None
    if version:
        row = await conn.fetchrow(
            "SELECT version, policy FROM merchant_policies WHERE merchant_id = $1 AND version = $2",
            merchant_id,
            version,
        )
    return _policy_of(row)


def _policy_of(row: asyncpg.Record | None) -> RetryPolicy:
    if row is None:
        return DEFAULT_POLICY
    stored = {**row["policy"], "version": row["version"]}
    # versions stored before the card-network limits were ceilings may hold null: the
    # networks' own ceilings apply to them (a limit is never unset)
    for limit in ("card_attempts_per_30_days", "card_attempts_per_day"):
        if stored.get(limit) is None:
            stored[limit] = getattr(DEFAULT_POLICY, limit)
    return RetryPolicy.model_validate(stored)


async def save_policy(
    pool: asyncpg.Pool, merchant_id: str, policy: RetryPolicy, actor: str
) -> RetryPolicy:
    """Store `policy` as the merchant's next version; running recoveries keep theirs."""
    async with transaction(pool) as conn:
        await conn.execute("SELECT 1 FROM merchants WHERE id = $1 FOR UPDATE", merchant_id)
        version = await conn.fetchval(
            "SELECT coalesce(max(version), 0) + 1 FROM merchant_policies WHERE merchant_id = $1",
            merchant_id,
        )
        saved = policy.model_copy(update={"version": version})
        await conn.execute(
            "INSERT INTO merchant_policies (merchant_id, version, policy, created_by)"
            " VALUES ($1, $2, $3, $4)",
            merchant_id,
            version,
            saved.model_dump(mode="json", exclude={"version"}),
            actor,
        )
    return saved
