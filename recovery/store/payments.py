"""Received payments: every payment a customer made for one of ours, recorded once, with the
rule it fell under (`recovery.payments`) and the refund of one made twice."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from recovery.constants import OUTBOX_START_REFUND, refund_workflow_id
from recovery.merchant_events import EventType
from recovery.payments import Disposition, RecoveryFacts, dispose, short_of
from recovery.store import merchant_webhooks
from recovery.store.db import connection, latest_recovery, new_id, transaction
from recovery.store.outbox import OUTBOX_CHANNEL
from recovery.store.records import ReceivedPayment
from recovery.store.views import PAYMENT_COLUMNS, read_payments

SETTLED_REFUNDS = ("succeeded", "failed")


@dataclass(frozen=True)
class Received:
    id: str
    recovery_id: str
    disposition: Disposition


async def receive_payment(
    conn: asyncpg.Connection,
    *,
    merchant_id: str,
    payment_ref: str,
    identity: str,
    source: str,
    psp: str,
    psp_payment_id: str | None,
    amount: int | None,
    currency: str | None,
    partial: bool = False,
    on_checkout: bool = False,
) -> Received | None:
    """Record a payment of `payment_ref` once, in the caller's transaction, which holds the
    payment's row lock. None when this payment was recorded before, or the payment is not
    ours. A duplicate or a part payment (`partial`, or, paid `on_checkout` of ours, which
    asks for the payment's amount, an `amount` below it) queues its refund (through the
    outbox, so it survives any crash). Our own charges are for what the recovery decided,
    never compared."""
    rec = await latest_recovery(conn, merchant_id, payment_ref)
    if rec is None:
        return None
    if await conn.fetchval(
        "SELECT true FROM received_payments WHERE merchant_id = $1 AND identity = $2",
        merchant_id,
        identity,
    ):
        return None
    disposition = dispose(
        RecoveryFacts(
            status=rec.status, ended=rec.ended_at is not None, settled=rec.paid_by is not None
        ),
        short=partial or (on_checkout and short_of(amount, currency, rec.amount, rec.currency)),
    )
    payment_id = new_id("pay")
    await conn.execute(
        "INSERT INTO received_payments (id, merchant_id, payment_ref, recovery_id, identity,"
        " source, psp, psp_payment_id, amount, currency, disposition, refund_status)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        payment_id,
        merchant_id,
        payment_ref,
        rec.id,
        identity,
        source,
        psp,
        psp_payment_id,
        amount if amount is not None else rec.amount,
        currency or rec.currency,
        disposition.value,
        "pending" if disposition.refunded else None,
    )
    if psp_payment_id and source != "attempt":
        # one of our charges paid after all (authorised late, a pending debit made): its
        # attempt says so, whatever it said before
        await conn.execute(
            "UPDATE attempts SET status = 'succeeded', failure_code = NULL,"
            " completed_at = coalesce(completed_at, clock_timestamp())"
            " WHERE recovery_id = $1 AND psp = $2 AND psp_payment_id = $3"
            " AND status <> 'succeeded'",
            rec.id,
            psp,
            psp_payment_id,
        )
    if disposition.refunded:
        await conn.execute(
            "INSERT INTO outbox (workflow_id, signal, payload) VALUES ($1, $2, $3)",
            refund_workflow_id(merchant_id, payment_id),
            OUTBOX_START_REFUND,
            {"received_payment_id": payment_id},
        )
        await conn.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
    else:
        await conn.execute("UPDATE recoveries SET paid_by = $2 WHERE id = $1", rec.id, payment_id)
    if disposition is Disposition.PAID_AFTER_END:
        await merchant_webhooks.tell_payment(conn, payment_id, EventType.PAYMENT_RECEIVED_AFTER_END)
    return Received(payment_id, rec.id, disposition)


async def received_payment(pool: asyncpg.Pool, payment_id: str) -> ReceivedPayment | None:
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            f"SELECT {PAYMENT_COLUMNS} FROM received_payments WHERE id = $1", payment_id
        )
    return ReceivedPayment(**dict(row)) if row else None


async def payments_of(pool: asyncpg.Pool, recovery_id: str) -> list[ReceivedPayment]:
    async with connection(pool) as conn:
        return await read_payments(conn, recovery_id)


async def record_refund(
    pool: asyncpg.Pool,
    payment_id: str,
    *,
    status: str,
    refund_id: str | None,
    error: str | None,
) -> None:
    """Record a duplicate payment's refund; once it settled (`succeeded` or `failed`) the
    merchant is told, in the same transaction (`payment.refunded_duplicate`)."""
    async with transaction(pool) as conn:
        was = await conn.fetchval(
            "SELECT refund_status FROM received_payments WHERE id = $1 FOR UPDATE", payment_id
        )
        await conn.execute(
            "UPDATE received_payments SET refund_status = $2, refund_id = $3,"
            " refund_error = $4, refunded_at = CASE WHEN $2 = 'succeeded'"
            " THEN clock_timestamp() END WHERE id = $1",
            payment_id,
            status,
            refund_id,
            error,
        )
        if status in SETTLED_REFUNDS and was not in SETTLED_REFUNDS:
            await merchant_webhooks.tell_payment(
                conn, payment_id, EventType.PAYMENT_REFUNDED_DUPLICATE
            )
