"""Ingest: a payment failure recorded with its outbox entry, once per idempotency key and
per event id."""

from __future__ import annotations

import asyncpg

from recovery.constants import workflow_id_for
from recovery.errors import IdempotencyKeyReused
from recovery.models import FailureEvent, PaymentFailedIn
from recovery.store.db import lock_payment, new_id, transaction
from recovery.store.outbox import queue_failure
from recovery.store.records import IngestOutcome, IngestResult
from recovery.store.recoveries import insert_recovery

# idempotency_keys.response_status predates IngestOutcome and still gets the first answer's
# HTTP status, so that a release which replays from that column can read rows this one
# writes. Nothing here reads it (a replay's outcome comes from the stored answer); a later
# migration can drop it once no such release runs.
_LEGACY_RESPONSE_STATUS = {IngestOutcome.ACCEPTED: 202, IngestOutcome.DUPLICATE: 200}


async def ingest_failure(
    pool: asyncpg.Pool,
    merchant_id: str,
    body: PaymentFailedIn,
    *,
    idempotency_key: str | None,
    request_hash: str,
) -> IngestResult:
    """Record a failure event with its outbox entry in one transaction.

    Concurrent requests with the same idempotency key or event id serialise on the
    key's and the payment's row locks: exactly one of them records anything.
    """
    async with transaction(pool) as conn:
        if idempotency_key is not None:
            claimed = await conn.fetchval(
                "INSERT INTO idempotency_keys"
                " (merchant_id, key, request_hash, response_status, response_body)"
                " VALUES ($1, $2, $3, 0, '{}') ON CONFLICT DO NOTHING RETURNING true",
                merchant_id,
                idempotency_key,
                request_hash,
            )
            if not claimed:
                prior = await conn.fetchrow(
                    "SELECT request_hash, response_body"
                    " FROM idempotency_keys WHERE merchant_id = $1 AND key = $2",
                    merchant_id,
                    idempotency_key,
                )
                if prior["request_hash"] != request_hash:
                    raise IdempotencyKeyReused(
                        "this Idempotency-Key was already used with a different body",
                        field="Idempotency-Key",
                    )
                answer = prior["response_body"]
                first = IngestOutcome.DUPLICATE if answer["duplicate"] else IngestOutcome.ACCEPTED
                return IngestResult(IngestOutcome.REPLAYED, answer, first)

        result = await _record_event(conn, merchant_id, body)
        if idempotency_key is not None:
            await conn.execute(
                "UPDATE idempotency_keys SET response_status = $3, response_body = $4"
                " WHERE merchant_id = $1 AND key = $2",
                merchant_id,
                idempotency_key,
                _LEGACY_RESPONSE_STATUS[result.outcome],
                result.body,
            )
        return result


async def _record_event(
    conn: asyncpg.Connection, merchant_id: str, body: PaymentFailedIn
) -> IngestResult:
    ref = body.payment_ref
    workflow_id = workflow_id_for(merchant_id, ref)
    # Create the payment if new, then lock its row: every ingest and every recovery end
    # of this payment runs one at a time from here on.
    await conn.execute(
        "INSERT INTO transactions (merchant_id, payment_ref, psp, amount, currency)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        merchant_id,
        ref,
        body.psp,
        body.amount,
        body.currency,
    )
    await lock_payment(conn, merchant_id, ref)
    if body.event_id is not None:
        dup = await conn.fetchrow(
            "SELECT r.id, r.status FROM payment_events e JOIN recoveries r"
            " ON r.id = e.recovery_id WHERE e.merchant_id = $1 AND e.event_id = $2",
            merchant_id,
            body.event_id,
        )
        if dup is not None:
            return IngestResult.of(
                IngestOutcome.DUPLICATE,
                {
                    "recovery_id": dup["id"],
                    "workflow_id": workflow_id,
                    "payment_ref": ref,
                    "status": dup["status"],
                    "duplicate": True,
                },
            )
    await conn.execute(
        "UPDATE transactions SET psp = $3, amount = $4, currency = $5, customer_id = $6,"
        " customer_email = $7, payment_method_type = $8, payment_method_id = $9,"
        " metadata = $10, updated_at = now() WHERE merchant_id = $1 AND payment_ref = $2",
        merchant_id,
        ref,
        body.psp,
        body.amount,
        body.currency,
        body.customer.id,
        body.customer.email,
        body.payment_method.type,
        body.payment_method.id,
        body.metadata,
    )
    open_rec = await conn.fetchrow(
        "SELECT id, status FROM recoveries"
        " WHERE merchant_id = $1 AND payment_ref = $2 AND ended_at IS NULL",
        merchant_id,
        ref,
    )
    if open_rec is None:
        recovery_id, status = await insert_recovery(conn, merchant_id, ref), "active"
    else:
        recovery_id, status = open_rec["id"], open_rec["status"]

    event = FailureEvent.model_validate(
        dict(body)
        | {
            "event_id": body.event_id or new_id("evt"),
            "recovery_id": recovery_id,
            "merchant_id": merchant_id,
            "payment_ref": ref,
        }
    )
    await queue_failure(conn, event)
    return IngestResult.of(
        IngestOutcome.ACCEPTED,
        {
            "recovery_id": recovery_id,
            "workflow_id": workflow_id,
            "payment_ref": ref,
            "status": status,
            "duplicate": False,
        },
    )
