"""Verified PSP webhook events, and the merchants' own PSP credentials."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from recovery.constants import workflow_id_for
from recovery.models import Customer, Failure, FailureEvent, PaymentMethod, PaymentSucceeded
from recovery.psp.base import WebhookEvent
from recovery.store.db import connection, lock_payment, transaction
from recovery.store.outbox import queue_failure, queue_payment_succeeded
from recovery.store.records import StoredPSPCredentials


async def psp_credentials(
    pool: asyncpg.Pool, merchant_id: str, psp: str
) -> StoredPSPCredentials | None:
    async with connection(pool) as conn:
        values = await conn.fetchval(
            "SELECT credentials FROM merchant_psp_credentials WHERE merchant_id = $1 AND psp = $2",
            merchant_id,
            psp,
        )
    return StoredPSPCredentials(merchant_id, psp, values) if values is not None else None


async def set_psp_credentials(
    pool: asyncpg.Pool, merchant_id: str, psp: str, credentials: dict[str, Any]
) -> None:
    async with connection(pool) as conn:
        await conn.execute(
            "INSERT INTO merchant_psp_credentials (merchant_id, psp, credentials)"
            " VALUES ($1, $2, $3) ON CONFLICT (merchant_id, psp)"
            " DO UPDATE SET credentials = excluded.credentials, updated_at = now()",
            merchant_id,
            psp,
            credentials,
        )


async def record_webhook(
    pool: asyncpg.Pool, event: WebhookEvent, payload: dict[str, Any]
) -> tuple[bool, str]:
    """Record a verified PSP event once; queue the signal it means for its recovery.

    Returns (new, outcome). Events for payments we do not know are recorded, not errors.
    A failure we already know from the attempt that made it is not sent again.
    """
    async with transaction(pool) as conn:
        row_id = await conn.fetchval(
            "INSERT INTO webhook_events (psp, event_id, kind, psp_type, merchant_id,"
            " payment_ref, recovery_id, psp_payment_id, outcome, payload)"
            " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,'recorded',$9)"
            " ON CONFLICT (psp, event_id) DO NOTHING RETURNING id",
            event.psp,
            event.event_id,
            event.kind,
            event.psp_type,
            event.merchant_id,
            event.payment_ref,
            event.recovery_id,
            event.psp_payment_id,
            payload,
        )
        if row_id is None:
            return False, "duplicate"
        outcome = await _webhook_signal(conn, event)
        await conn.execute("UPDATE webhook_events SET outcome = $2 WHERE id = $1", row_id, outcome)
        return True, outcome


async def _webhook_signal(conn: asyncpg.Connection, event: WebhookEvent) -> str:
    if event.kind in ("ignored", "payment_refunded"):
        return event.kind
    if not (event.merchant_id and event.payment_ref):
        return "unknown_payment"
    if not await lock_payment(conn, event.merchant_id, event.payment_ref):
        return "unknown_payment"
    workflow_id = workflow_id_for(event.merchant_id, event.payment_ref)
    if event.kind in ("payment_succeeded", "checkout_completed"):
        await queue_payment_succeeded(
            conn,
            workflow_id,
            PaymentSucceeded(
                source=f"{event.psp}_webhook",
                event_id=event.event_id,
                psp_payment_id=event.psp_payment_id,
            ),
        )
        return "signalled_payment_succeeded"
    # payment_failed
    if event.psp_payment_id and await conn.fetchval(
        "SELECT true FROM attempts WHERE psp_payment_id = $1 AND status = 'failed'",
        event.psp_payment_id,
    ):
        return "already_known"
    open_rec = await conn.fetchrow(
        "SELECT r.id, t.psp, t.amount, t.currency, t.customer_id, t.customer_email,"
        " t.payment_method_type, t.payment_method_id FROM recoveries r"
        " JOIN transactions t USING (merchant_id, payment_ref)"
        " WHERE r.merchant_id = $1 AND r.payment_ref = $2 AND r.ended_at IS NULL",
        event.merchant_id,
        event.payment_ref,
    )
    if open_rec is None:
        return "recovery_ended"
    failed = FailureEvent(
        event_id=f"{event.psp}:{event.event_id}",
        recovery_id=open_rec["id"],
        merchant_id=event.merchant_id,
        payment_ref=event.payment_ref,
        psp=open_rec["psp"],
        amount=open_rec["amount"],
        currency=open_rec["currency"],
        customer=Customer(id=open_rec["customer_id"], email=open_rec["customer_email"]),
        payment_method=PaymentMethod(
            type=open_rec["payment_method_type"] or "card", id=open_rec["payment_method_id"]
        ),
        failure=event.failure or Failure(code="payment_failed"),
        occurred_at=datetime.now(UTC),
    )
    await queue_failure(conn, failed)
    return "signalled_payment_failed"
