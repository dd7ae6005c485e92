"""Ingest: a payment failure recorded with its outbox entry, once per idempotency key and
per event id.

One transaction of four round trips to Postgres for a new event (BEGIN; claim the key and
lock the payment; the duplicate check, the payment's update and its open recovery; the event
with its outbox row), plus one to store the answer under an Idempotency-Key, and COMMIT.
"""

from __future__ import annotations

import asyncpg

from recovery.constants import workflow_id_for
from recovery.errors import IdempotencyKeyReused
from recovery.models import FailureEvent, PaymentFailedIn
from recovery.store.db import new_id, transaction
from recovery.store.outbox import queue_failure
from recovery.store.records import IngestOutcome, IngestResult

# idempotency_keys.response_status predates IngestOutcome and still gets the first answer's
# HTTP status, so that a release which replays from that column can read rows this one
# writes. Nothing here reads it (a replay's outcome comes from the stored answer); a later
# migration can drop it once no such release runs.
_LEGACY_RESPONSE_STATUS = {IngestOutcome.ACCEPTED: 202, IngestOutcome.DUPLICATE: 200}

# The payment's row, created if new, and locked (a no-op update of an existing row takes its
# lock, as SELECT ... FOR UPDATE does): every ingest and every recovery end of this payment
# runs one at a time from here on. $1 merchant, $2 ref, $3 psp, $4 amount, $5 currency.
_LOCK_PAYMENT = (
    "INSERT INTO transactions (merchant_id, payment_ref, psp, amount, currency)"
    " VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (merchant_id, payment_ref) DO UPDATE SET updated_at = transactions.updated_at"
)
# The same, once the Idempotency-Key ($6, for request hash $7) is claimed, and only then: the
# key is taken first (a request with the same key waits for the first to commit), the payment
# second, as it always was. Returns a row when claimed, none when the key was already there.
_CLAIM_KEY_AND_LOCK_PAYMENT = (
    "WITH claim AS ("
    "  INSERT INTO idempotency_keys"
    "  (merchant_id, key, request_hash, response_status, response_body)"
    "  VALUES ($1, $6, $7, 0, '{}') ON CONFLICT DO NOTHING RETURNING true"
    ")"
    " INSERT INTO transactions (merchant_id, payment_ref, psp, amount, currency)"
    " SELECT $1::text, $2::text, $3::text, $4::bigint, $5::text FROM claim"
    " ON CONFLICT (merchant_id, payment_ref) DO UPDATE SET updated_at = transactions.updated_at"
    " RETURNING true"
)

# Under that lock, in a statement of its own (so that it reads what committed before the lock
# was granted): the recovery of an event id seen before (then nothing changes); else the
# payment updated from this event, and its open recovery, opened now ($12, for workflow $13)
# if there is none.
_DUPLICATE_OR_RECOVERY = """
WITH dup AS (
    SELECT r.id, r.status FROM payment_events e JOIN recoveries r ON r.id = e.recovery_id
    WHERE e.merchant_id = $1 AND e.event_id = $3
), updated AS (
    UPDATE transactions SET psp = $4, amount = $5, currency = $6, customer_id = $7,
        customer_email = $8, payment_method_type = $9, payment_method_id = $10,
        metadata = $11, updated_at = now()
    WHERE merchant_id = $1 AND payment_ref = $2 AND NOT EXISTS (SELECT FROM dup)
), open AS (
    SELECT id, status FROM recoveries
    WHERE merchant_id = $1 AND payment_ref = $2 AND ended_at IS NULL
), opened AS (
    INSERT INTO recoveries (id, merchant_id, payment_ref, workflow_id)
    SELECT $12, $1, $2, $13
    WHERE NOT EXISTS (SELECT FROM dup) AND NOT EXISTS (SELECT FROM open)
    RETURNING id, status
)
SELECT (SELECT id FROM dup) AS dup_id, (SELECT status FROM dup) AS dup_status,
    coalesce((SELECT id FROM open), (SELECT id FROM opened)) AS recovery_id,
    coalesce((SELECT status FROM open), (SELECT status FROM opened)) AS status
"""


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
    payment = (merchant_id, body.payment_ref, body.psp, body.amount, body.currency)
    async with transaction(pool) as conn:
        if idempotency_key is None:
            await conn.execute(_LOCK_PAYMENT, *payment)
        elif not await conn.fetchval(
            _CLAIM_KEY_AND_LOCK_PAYMENT, *payment, idempotency_key, request_hash
        ):
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
    """The event of a payment locked by the caller: a duplicate's answer, or the event
    recorded for the payment's open recovery (opened if none is) with its outbox row."""
    ref = body.payment_ref
    workflow_id = workflow_id_for(merchant_id, ref)
    found = await conn.fetchrow(
        _DUPLICATE_OR_RECOVERY,
        merchant_id,
        ref,
        body.event_id,
        body.psp,
        body.amount,
        body.currency,
        body.customer.id,
        body.customer.email,
        body.payment_method.type,
        body.payment_method.id,
        body.metadata,
        new_id("rec"),
        workflow_id,
    )
    if found["dup_id"] is not None:
        return IngestResult.of(
            IngestOutcome.DUPLICATE,
            {
                "recovery_id": found["dup_id"],
                "workflow_id": workflow_id,
                "payment_ref": ref,
                "status": found["dup_status"],
                "duplicate": True,
            },
        )
    recovery_id = found["recovery_id"]
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
            "status": found["status"],
            "duplicate": False,
        },
    )
