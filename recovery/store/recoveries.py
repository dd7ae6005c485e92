"""Recovery runs: opened by ingest and redrive, written by their workflow, read by the API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from recovery.constants import workflow_id_for
from recovery.errors import NotFound
from recovery.models import FailureEvent, FinishResult, PaymentLookup, RecoveryState, RecoveryStatus
from recovery.redrive import check_redrivable, redrive_event
from recovery.store import merchant_webhooks
from recovery.store.db import (
    RECOVERY_COLUMNS,
    RECOVERY_FROM,
    connection,
    decode_cursor,
    encode_cursor,
    latest_recovery,
    lock_payment,
    new_id,
    transaction,
)
from recovery.store.links import revoke_at_the_end
from recovery.store.notifications import queue_receipt, suppress_unsent
from recovery.store.outbox import queue_failure, queue_watch
from recovery.store.records import RecoveryRecord
from recovery.store.views import recovery_view, with_attempts
from recovery.views import RecoveryOut


async def insert_recovery(conn: asyncpg.Connection, merchant_id: str, payment_ref: str) -> str:
    """Open a new recovery run of the payment, in the caller's transaction; returns its id."""
    recovery_id = new_id("rec")
    await conn.execute(
        "INSERT INTO recoveries (id, merchant_id, payment_ref, workflow_id)"
        " VALUES ($1, $2, $3, $4)",
        recovery_id,
        merchant_id,
        payment_ref,
        workflow_id_for(merchant_id, payment_ref),
    )
    return recovery_id


async def redrive(pool: asyncpg.Pool, merchant_id: str, payment_ref: str) -> str:
    """Start a fresh run of an exhausted recovery (the rule is `recovery.redrive`).

    Re-sends the payment's latest failure as a new event of a new recovery, through the
    outbox like any ingest. Returns the new recovery id.
    """
    async with transaction(pool) as conn:
        latest = None
        if await lock_payment(conn, merchant_id, payment_ref):
            latest = await latest_recovery(conn, merchant_id, payment_ref)
        check_redrivable(payment_ref, latest.status if latest else None)
        assert latest is not None
        last = await conn.fetchval(
            "SELECT payload FROM payment_events WHERE recovery_id = $1 ORDER BY id DESC LIMIT 1",
            latest.id,
        )
        recovery_id = await insert_recovery(conn, merchant_id, payment_ref)
        await queue_failure(conn, redrive_event(FailureEvent.model_validate(last), recovery_id))
        return recovery_id


async def save_state(pool: asyncpg.Pool, state: RecoveryState) -> None:
    """Write a running recovery's state, and in the same transaction the merchant events it
    tells (`merchant_webhooks.tell_recovery`); an ended recovery is left as it ended."""
    async with transaction(pool) as conn:
        before = await merchant_webhooks.shown(conn, state.recovery_id or "")
        if before is None or before.ended:
            return
        await conn.execute(
            "UPDATE recoveries SET status = $2, category = $3, rule = $4,"
            " attempt_count = $5, next_attempt_at = $6, next_attempt_reason = $7,"
            " policy_version = $8, paused = $9, updated_at = now()"
            " WHERE id = $1 AND ended_at IS NULL",
            state.recovery_id,
            state.status.value,
            state.category.value if state.category else None,
            state.rule,
            len(state.attempts),
            state.next_attempt_at,
            state.next_attempt_reason,
            state.policy_version,
            state.paused,
        )
        await merchant_webhooks.tell_recovery(conn, state.recovery_id or "", before)


async def finish(
    pool: asyncpg.Pool,
    state: RecoveryState,
    seen_event_ids: Sequence[str],
    pending_payments: Sequence[str] = (),
    late_payments: Mapping[str, datetime] | None = None,
    *,
    revoke_links: bool = False,
) -> FinishResult:
    """End a recovery, unless events joined it that its workflow has not yet seen; in the
    same transaction, queue a watcher for each of its payments still pending at the PSP and,
    with `revoke_links`, revoke its links (see `links.revoke_at_the_end`).

    Runs under the payment's row lock, like ingest, so a failure event either joins the
    recovery before it ends (and is returned here as unseen) or starts the next one.
    """
    async with transaction(pool) as conn:
        await lock_payment(conn, state.merchant_id, state.payment_ref)
        unseen = await conn.fetch(
            "SELECT payload FROM payment_events"
            " WHERE recovery_id = $1 AND NOT (event_id = ANY($2::text[])) ORDER BY id",
            state.recovery_id,
            list(seen_event_ids),
        )
        if unseen:
            return FinishResult(
                finished=False,
                unseen_events=[FailureEvent.model_validate(r["payload"]) for r in unseen],
            )
        before = await merchant_webhooks.shown(conn, state.recovery_id or "")
        await conn.execute(
            "UPDATE recoveries SET status = $2, category = $3, rule = $4,"
            " attempt_count = $5, next_attempt_at = NULL, next_attempt_reason = NULL,"
            " ended_reason = $6, ended_at = coalesce(ended_at, now()), updated_at = now(),"
            " policy_version = coalesce($7, policy_version), paused = false WHERE id = $1",
            state.recovery_id,
            state.status.value,
            state.category.value if state.category else None,
            state.rule,
            len(state.attempts),
            state.ended_reason,
            state.policy_version,
        )
        if before is not None:
            await merchant_webhooks.tell_recovery(conn, state.recovery_id or "", before)
        await suppress_unsent(conn, state.recovery_id or "")
        if state.status is RecoveryStatus.RECOVERED:
            await queue_receipt(
                conn, state.merchant_id, state.recovery_id or "", state.policy_version
            )
        watch: dict[str, datetime | None] = dict.fromkeys(pending_payments)
        watch.update(late_payments or {})
        for psp_payment_id, late_until in watch.items():
            await queue_watch(
                conn,
                PaymentLookup(
                    merchant_id=state.merchant_id,
                    psp=state.psp or "",
                    psp_payment_id=psp_payment_id,
                    payment_ref=state.payment_ref,
                    late_until=late_until,
                ),
            )
        open_checkouts = revoke_links and await revoke_at_the_end(
            conn, state.recovery_id or "", state.status.value
        )
        return FinishResult(finished=True, open_checkouts=open_checkouts)


async def recovery_is_open(pool: asyncpg.Pool, recovery_id: str) -> bool:
    async with connection(pool) as conn:
        return bool(
            await conn.fetchval(
                "SELECT ended_at IS NULL FROM recoveries WHERE id = $1", recovery_id
            )
        )


async def has_open_recovery(pool: asyncpg.Pool, workflow_id: str) -> bool:
    async with connection(pool) as conn:
        return bool(
            await conn.fetchval(
                "SELECT true FROM recoveries WHERE workflow_id = $1 AND ended_at IS NULL",
                workflow_id,
            )
        )


async def get_recovery(pool: asyncpg.Pool, merchant_id: str, payment_ref: str) -> RecoveryRecord:
    """The payment's latest recovery run, with its attempts."""
    async with connection(pool) as conn:
        rec = await latest_recovery(conn, merchant_id, payment_ref)
        if rec is None:
            raise NotFound(f"no recovery for payment_ref {payment_ref!r}")
        return await with_attempts(conn, rec)


async def get_recovery_view(pool: asyncpg.Pool, merchant_id: str, payment_ref: str) -> RecoveryOut:
    """The payment's latest recovery run as merchants see it (attempts, links, payments)."""
    async with connection(pool) as conn:
        rec = await latest_recovery(conn, merchant_id, payment_ref)
        view = await recovery_view(conn, rec.id) if rec is not None else None
    if view is None:
        raise NotFound(f"no recovery for payment_ref {payment_ref!r}")
    return view


async def list_recoveries(
    pool: asyncpg.Pool,
    merchant_id: str,
    *,
    status: str | None,
    category: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[RecoveryRecord], str | None]:
    args: list[Any] = [merchant_id, status, category, limit + 1]
    after = ""
    if cursor:
        started, rid = decode_cursor(cursor)
        args += [started, rid]
        after = " AND (r.started_at, r.id) < ($5, $6)"
    async with connection(pool) as conn:
        rows = await conn.fetch(
            f"SELECT {RECOVERY_COLUMNS} {RECOVERY_FROM}"
            " WHERE r.merchant_id = $1 AND ($2::text IS NULL OR r.status = $2)"
            f" AND ($3::text IS NULL OR r.category = $3){after}"
            " ORDER BY r.started_at DESC, r.id DESC LIMIT $4",
            *args,
        )
    items = [RecoveryRecord(**dict(r)) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].started_at, items[-1].id) if len(rows) > limit else None
    return items, next_cursor
