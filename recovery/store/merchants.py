"""Merchants and their API keys."""

from __future__ import annotations

import asyncpg

from recovery.store.db import affected, connection
from recovery.store.records import ApiKeyInfo, ApiKeyRecord, MerchantRecord


async def ensure_merchant(pool: asyncpg.Pool, merchant_id: str, name: str) -> None:
    async with connection(pool) as conn:
        await conn.execute(
            "INSERT INTO merchants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            merchant_id,
            name,
        )


async def list_merchants(pool: asyncpg.Pool) -> list[MerchantRecord]:
    async with connection(pool) as conn:
        rows = await conn.fetch("SELECT id, name, reply_to, created_at FROM merchants ORDER BY id")
    return [MerchantRecord(**dict(r)) for r in rows]


async def update_merchant(
    pool: asyncpg.Pool, merchant_id: str, *, name: str | None, reply_to: str | None
) -> MerchantRecord | None:
    """Change a merchant's name and/or reply-to address ("" clears it); None: no merchant."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            "UPDATE merchants SET name = coalesce($2, name),"
            " reply_to = CASE WHEN $3::text IS NULL THEN reply_to ELSE nullif($3, '') END"
            " WHERE id = $1 RETURNING id, name, reply_to, created_at",
            merchant_id,
            name,
            reply_to,
        )
    return MerchantRecord(**dict(row)) if row else None


async def add_api_key(
    pool: asyncpg.Pool, key_id: str, merchant_id: str, role: str, key_hash: bytes, prefix: str
) -> None:
    async with connection(pool) as conn:
        await conn.execute(
            "INSERT INTO api_keys (id, merchant_id, role, key_hash, prefix)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_hash) DO NOTHING",
            key_id,
            merchant_id,
            role,
            key_hash,
            prefix,
        )


async def list_api_keys(pool: asyncpg.Pool, merchant_id: str) -> list[ApiKeyInfo]:
    async with connection(pool) as conn:
        rows = await conn.fetch(
            "SELECT id, merchant_id, role, prefix, created_at, revoked_at FROM api_keys"
            " WHERE merchant_id = $1 ORDER BY created_at, id",
            merchant_id,
        )
    return [ApiKeyInfo(**dict(r)) for r in rows]


async def revoke_api_key(pool: asyncpg.Pool, key_id: str) -> bool:
    """Revoke a key; False when no such key is active."""
    async with connection(pool) as conn:
        done = await conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
            key_id,
        )
    return affected(done) == 1


async def api_key_by_hash(pool: asyncpg.Pool, key_hash: bytes) -> ApiKeyRecord | None:
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            "SELECT id, merchant_id, role, key_hash FROM api_keys"
            " WHERE key_hash = $1 AND revoked_at IS NULL",
            key_hash,
        )
    return ApiKeyRecord(**dict(row)) if row else None
