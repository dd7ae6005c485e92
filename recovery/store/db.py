"""The pool, the connection context and the queries several aggregates share.

Every connection is taken through `connection()` / `transaction()`, which turn a lost or
refused database into `Unavailable` (503 with Retry-After at the API).
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg

from recovery.errors import RecoveryError, Unavailable
from recovery.store.records import RecoveryRecord

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    # a pooled connection whose backend a Postgres shutdown terminated (asyncpg#784)
    asyncpg.exceptions.InternalClientError,
)


def encode_cursor(at: datetime, row_id: str) -> str:
    """A list's cursor: the (time, id) of the last row of a page, newest first."""
    raw = json.dumps([at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started_text, rid = json.loads(raw)
        started = datetime.fromisoformat(started_text)
        if started.tzinfo is None:
            raise ValueError("no UTC offset")
        return started.astimezone(UTC), str(rid)
    except (ValueError, TypeError, OverflowError) as e:
        raise RecoveryError("cursor is not one this API returned", field="cursor") from e


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """What a connection goes through on its way back to the pool, besides asyncpg's own
    rollback of a transaction left open: nothing. asyncpg's default sends a reset query
    (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) on every release, a round trip per use
    of a connection, for session state the store never leaves on one: its locks are
    transaction-scoped, it runs no SET and no cursor outside a transaction, and LISTEN
    (the relay) and the migrations' session lock have connections of their own
    (`tests/unit/test_store_sessions.py` keeps it so)."""


async def create_pool(dsn: str, *, min_size: int, max_size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        timeout=5,
        command_timeout=30,
    )


@contextlib.asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    try:
        async with pool.acquire(timeout=5) as conn:
            yield conn
    except UNAVAILABLE_ERRORS as e:
        raise Unavailable("the database is unavailable; retry shortly") from e


@contextlib.asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with connection(pool) as conn, conn.transaction():
        yield conn


def affected(command_status: str) -> int:
    """The row count of a command status such as ``UPDATE 1`` or ``DELETE 0``."""
    return int(command_status.rsplit(" ", 1)[-1])


async def lock_payment(conn: asyncpg.Connection, merchant_id: str, payment_ref: str) -> bool:
    """Lock the payment's transaction row for the caller's transaction; False when there is
    no such payment.

    Every ingest, recovery end, redrive, new link and webhook of one payment runs one at a
    time behind this lock.
    """
    return bool(
        await conn.fetchval(
            "SELECT true FROM transactions WHERE merchant_id = $1 AND payment_ref = $2 FOR UPDATE",
            merchant_id,
            payment_ref,
        )
    )


RECOVERY_COLUMNS = """
    r.id, r.merchant_id, r.payment_ref, r.workflow_id, r.status, r.category, r.rule,
    r.attempt_count, r.next_attempt_at, r.next_attempt_reason, r.ended_reason, r.started_at,
    r.ended_at, r.policy_version, r.paused, t.amount, t.currency, t.psp, t.customer_id,
    r.paid_by
"""
RECOVERY_FROM = "FROM recoveries r JOIN transactions t USING (merchant_id, payment_ref)"


async def latest_recovery(
    conn: asyncpg.Connection, merchant_id: str, payment_ref: str
) -> RecoveryRecord | None:
    """The payment's latest recovery run (without its attempts), or None."""
    row = await conn.fetchrow(
        f"SELECT {RECOVERY_COLUMNS} {RECOVERY_FROM}"
        " WHERE r.merchant_id = $1 AND r.payment_ref = $2"
        " ORDER BY r.started_at DESC, r.id DESC LIMIT 1",
        merchant_id,
        payment_ref,
    )
    return RecoveryRecord(**dict(row)) if row else None
