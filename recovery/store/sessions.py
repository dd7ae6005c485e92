"""Console sessions: an API key exchanged at sign-in for a random session id.

Only the SHA-256 of the session id is stored (a copy of this table opens no session). A
session lasts until its `expires_at` (absolute) and ends sooner when unused for the idle
time, when its key is revoked, or at sign-out (the row is deleted). Its CSRF token is
checked on every form the console posts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from recovery.store.db import affected, connection
from recovery.store.records import ConsoleSession

_COLUMNS = """
    s.key_id, k.merchant_id AS key_merchant_id, k.role, s.merchant_id, m.name AS merchant_name,
    s.csrf_token, s.created_at, s.expires_at
"""


async def create_session(
    pool: asyncpg.Pool,
    *,
    id_hash: bytes,
    key_id: str,
    merchant_id: str,
    csrf_token: str,
    expires_at: datetime,
) -> None:
    """A new session of `key_id`; sessions that expired are removed on the way."""
    async with connection(pool) as conn:
        await conn.execute("DELETE FROM console_sessions WHERE expires_at < clock_timestamp()")
        await conn.execute(
            "INSERT INTO console_sessions (id_hash, key_id, merchant_id, csrf_token, expires_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            id_hash,
            key_id,
            merchant_id,
            csrf_token,
            expires_at,
        )


async def touch_session(
    pool: asyncpg.Pool, id_hash: bytes, idle: timedelta
) -> ConsoleSession | None:
    """The live session with this id hash (marked used now), or None: unknown, expired,
    idle for longer than `idle`, or its key revoked."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            "UPDATE console_sessions s SET last_seen_at = clock_timestamp()"
            "  FROM api_keys k, merchants m"
            " WHERE s.id_hash = $1 AND k.id = s.key_id AND k.revoked_at IS NULL"
            "   AND m.id = s.merchant_id AND s.expires_at > clock_timestamp()"
            "   AND s.last_seen_at > clock_timestamp() - $2::interval"
            f" RETURNING {_COLUMNS}",
            id_hash,
            idle,
        )
    return ConsoleSession(**dict(row)) if row else None


async def delete_session(pool: asyncpg.Pool, id_hash: bytes) -> bool:
    async with connection(pool) as conn:
        return (
            affected(await conn.execute("DELETE FROM console_sessions WHERE id_hash = $1", id_hash))
            > 0
        )


async def set_flash(pool: asyncpg.Pool, id_hash: bytes, kind: str, message: str) -> None:
    """The message the session's next page shows (once)."""
    async with connection(pool) as conn:
        await conn.execute(
            "UPDATE console_sessions SET flash_kind = $2, flash_message = $3 WHERE id_hash = $1",
            id_hash,
            kind,
            message[:2000],
        )


async def take_flash(pool: asyncpg.Pool, id_hash: bytes) -> tuple[str, str] | None:
    """The session's waiting message, removed as it is read."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            "WITH old AS (SELECT id_hash, flash_kind, flash_message FROM console_sessions"
            "              WHERE id_hash = $1 AND flash_message IS NOT NULL FOR UPDATE)"
            " UPDATE console_sessions s SET flash_kind = NULL, flash_message = NULL FROM old"
            " WHERE s.id_hash = old.id_hash RETURNING old.flash_kind, old.flash_message",
            id_hash,
        )
    return (row["flash_kind"], row["flash_message"]) if row else None


async def switch_merchant(pool: asyncpg.Pool, id_hash: bytes, merchant_id: str) -> bool:
    """Show another merchant's data in this session (the caller checks the role); False
    for an unknown merchant."""
    async with connection(pool) as conn:
        return (
            affected(
                await conn.execute(
                    "UPDATE console_sessions SET merchant_id = $2 WHERE id_hash = $1"
                    " AND EXISTS (SELECT 1 FROM merchants WHERE id = $2)",
                    id_hash,
                    merchant_id,
                )
            )
            > 0
        )
