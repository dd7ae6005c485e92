"""PostgreSQL store: every query of the service lives here (asyncpg, plain SQL).

Every read and write that concerns a merchant's data takes the merchant id and filters by it.
Connection failures surface as `Unavailable` (503 with Retry-After at the API).
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from recovery.constants import SIGNAL_PAYMENT_SUCCEEDED, workflow_id_for
from recovery.errors import (
    IdempotencyKeyReused,
    NotFound,
    RecoveryError,
    RecoveryFinished,
    RecoveryNotExhausted,
    Unavailable,
)
from recovery.models import (
    Attempt,
    ChargeRequest,
    ChargeResult,
    Customer,
    Failure,
    FailureEvent,
    FinishResult,
    PaymentFailedIn,
    PaymentMethod,
    PaymentSucceeded,
    RecoveryState,
)
from recovery.policy import DEFAULT_POLICY, RetryPolicy
from recovery.psp.base import WebhookEvent

OUTBOX_CHANNEL = "recovery_outbox"

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


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


@dataclass(frozen=True)
class IngestResult:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    merchant_id: str
    role: str
    key_hash: bytes


@dataclass(frozen=True)
class OutboxRow:
    """A signal waiting to reach a workflow: `payment_failed` rows start the workflow if
    needed (signal-with-start); others only signal a running one."""

    id: int
    workflow_id: str
    signal: str
    payload: dict[str, Any]
    created_at: datetime

    @property
    def event(self) -> FailureEvent:
        return FailureEvent.model_validate(self.payload)


@dataclass(frozen=True)
class RecoveryRecord:
    id: str
    merchant_id: str
    payment_ref: str
    workflow_id: str
    status: str
    category: str | None
    rule: str | None
    attempt_count: int
    next_attempt_at: datetime | None
    next_attempt_reason: str | None
    ended_reason: str | None
    started_at: datetime
    ended_at: datetime | None
    policy_version: int | None
    paused: bool
    amount: int
    currency: str
    psp: str
    customer_id: str | None
    attempts: tuple[Attempt, ...] = ()


_RECOVERY_COLUMNS = """
    r.id, r.merchant_id, r.payment_ref, r.workflow_id, r.status, r.category, r.rule,
    r.attempt_count, r.next_attempt_at, r.next_attempt_reason, r.ended_reason, r.started_at,
    r.ended_at, r.policy_version, r.paused, t.amount, t.currency, t.psp, t.customer_id
"""


def _recovery(row: asyncpg.Record, attempts: Sequence[Attempt] = ()) -> RecoveryRecord:
    return RecoveryRecord(**dict(row), attempts=tuple(attempts))


def encode_cursor(started_at: datetime, recovery_id: str) -> str:
    raw = json.dumps([started_at.isoformat(), recovery_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started, rid = json.loads(raw)
        return datetime.fromisoformat(started), str(rid)
    except (ValueError, TypeError) as e:
        raise RecoveryError("cursor is not one this API returned", field="cursor") from e


async def _queue_failure(conn: asyncpg.Connection, event: FailureEvent) -> None:
    """Record a failure event of a recovery and its outbox row, in the caller's transaction;
    the relay wakes on the notification when it commits."""
    payload = event.model_dump(mode="json")
    await conn.execute(
        "INSERT INTO payment_events"
        " (merchant_id, event_id, payment_ref, recovery_id, payload, occurred_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        event.merchant_id,
        event.event_id,
        event.payment_ref,
        event.recovery_id,
        payload,
        event.occurred_at,
    )
    await conn.execute(
        "INSERT INTO outbox (workflow_id, payload) VALUES ($1, $2)",
        workflow_id_for(event.merchant_id, event.payment_ref),
        payload,
    )
    await conn.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)


async def _queue_signal(
    conn: asyncpg.Connection, workflow_id: str, signal: PaymentSucceeded
) -> None:
    """Queue `payment_succeeded` for a running recovery, in the caller's transaction."""
    await conn.execute(
        "INSERT INTO outbox (workflow_id, signal, payload) VALUES ($1, $2, $3)",
        workflow_id,
        SIGNAL_PAYMENT_SUCCEEDED,
        signal.model_dump(mode="json"),
    )
    await conn.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 0, max_size: int = 10) -> Store:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            timeout=5,
            command_timeout=30,
        )
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self.pool.acquire(timeout=5) as conn:
                yield conn
        except UNAVAILABLE_ERRORS as e:
            raise Unavailable("the database is unavailable; retry shortly") from e

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.fetchval("SELECT 1")

    # ---- merchants and keys ---------------------------------------------------------------

    async def ensure_merchant(self, merchant_id: str, name: str) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO merchants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                merchant_id,
                name,
            )

    async def add_api_key(
        self, key_id: str, merchant_id: str, role: str, key_hash: bytes, prefix: str
    ) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO api_keys (id, merchant_id, role, key_hash, prefix)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_hash) DO NOTHING",
                key_id,
                merchant_id,
                role,
                key_hash,
                prefix,
            )

    async def list_merchants(self) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT id, name, created_at FROM merchants ORDER BY id")
        return [dict(r) for r in rows]

    async def list_api_keys(self, merchant_id: str) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT id, merchant_id, role, prefix, created_at, revoked_at FROM api_keys"
                " WHERE merchant_id = $1 ORDER BY created_at, id",
                merchant_id,
            )
        return [dict(r) for r in rows]

    async def revoke_api_key(self, key_id: str) -> bool:
        """Revoke a key; False when no such key is active."""
        async with self._conn() as conn:
            done = await conn.execute(
                "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
                key_id,
            )
        return done.endswith(" 1")

    async def api_key_by_hash(self, key_hash: bytes) -> ApiKeyRecord | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT id, merchant_id, role, key_hash FROM api_keys"
                " WHERE key_hash = $1 AND revoked_at IS NULL",
                key_hash,
            )
        return ApiKeyRecord(**dict(row)) if row else None

    # ---- ingest ---------------------------------------------------------------------------

    async def ingest_failure(
        self,
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
        async with self._conn() as conn, conn.transaction():
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
                        "SELECT request_hash, response_status, response_body"
                        " FROM idempotency_keys WHERE merchant_id = $1 AND key = $2",
                        merchant_id,
                        idempotency_key,
                    )
                    if prior["request_hash"] != request_hash:
                        raise IdempotencyKeyReused(
                            "this Idempotency-Key was already used with a different body",
                            field="Idempotency-Key",
                        )
                    return IngestResult(
                        prior["response_status"], prior["response_body"], replayed=True
                    )

            result = await self._record_event(conn, merchant_id, body)
            if idempotency_key is not None:
                await conn.execute(
                    "UPDATE idempotency_keys SET response_status = $3, response_body = $4"
                    " WHERE merchant_id = $1 AND key = $2",
                    merchant_id,
                    idempotency_key,
                    result.status_code,
                    result.body,
                )
            return result

    async def _record_event(
        self, conn: asyncpg.Connection, merchant_id: str, body: PaymentFailedIn
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
        await conn.execute(
            "SELECT 1 FROM transactions WHERE merchant_id = $1 AND payment_ref = $2 FOR UPDATE",
            merchant_id,
            ref,
        )
        if body.event_id is not None:
            dup = await conn.fetchrow(
                "SELECT r.id, r.status FROM payment_events e JOIN recoveries r"
                " ON r.id = e.recovery_id WHERE e.merchant_id = $1 AND e.event_id = $2",
                merchant_id,
                body.event_id,
            )
            if dup is not None:
                return IngestResult(
                    200,
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
            recovery_id, status = new_id("rec"), "active"
            await conn.execute(
                "INSERT INTO recoveries (id, merchant_id, payment_ref, workflow_id)"
                " VALUES ($1, $2, $3, $4)",
                recovery_id,
                merchant_id,
                ref,
                workflow_id,
            )
        else:
            recovery_id, status = open_rec["id"], open_rec["status"]

        event = FailureEvent(
            event_id=body.event_id or new_id("evt"),
            recovery_id=recovery_id,
            merchant_id=merchant_id,
            payment_ref=ref,
            psp=body.psp,
            amount=body.amount,
            currency=body.currency,
            customer=body.customer,
            payment_method=body.payment_method,
            failure=body.failure,
            occurred_at=body.occurred_at,
        )
        await _queue_failure(conn, event)
        return IngestResult(
            202,
            {
                "recovery_id": recovery_id,
                "workflow_id": workflow_id,
                "payment_ref": ref,
                "status": status,
                "duplicate": False,
            },
        )

    async def redrive(self, merchant_id: str, payment_ref: str) -> str:
        """Start a fresh run (a new attempt budget) of an exhausted recovery.

        Re-sends the payment's latest failure as a new event of a new recovery, through the
        outbox like any ingest. Returns the new recovery id.
        """
        async with self._conn() as conn, conn.transaction():
            locked = await conn.fetchval(
                "SELECT true FROM transactions WHERE merchant_id = $1 AND payment_ref = $2"
                " FOR UPDATE",
                merchant_id,
                payment_ref,
            )
            if not locked:
                raise NotFound(f"no recovery for payment_ref {payment_ref!r}")
            latest = await conn.fetchrow(
                "SELECT id, status FROM recoveries WHERE merchant_id = $1 AND payment_ref = $2"
                " ORDER BY started_at DESC, id DESC LIMIT 1",
                merchant_id,
                payment_ref,
            )
            if latest is None:
                raise NotFound(f"no recovery for payment_ref {payment_ref!r}")
            if latest["status"] != "exhausted":
                raise RecoveryNotExhausted(
                    f"only an exhausted recovery can be retried; this one is {latest['status']}"
                )
            last = await conn.fetchval(
                "SELECT payload FROM payment_events WHERE recovery_id = $1 ORDER BY id DESC"
                " LIMIT 1",
                latest["id"],
            )
            recovery_id = new_id("rec")
            workflow_id = workflow_id_for(merchant_id, payment_ref)
            await conn.execute(
                "INSERT INTO recoveries (id, merchant_id, payment_ref, workflow_id)"
                " VALUES ($1, $2, $3, $4)",
                recovery_id,
                merchant_id,
                payment_ref,
                workflow_id,
            )
            event = FailureEvent.model_validate(
                {**last, "event_id": f"redrive_{recovery_id}", "recovery_id": recovery_id}
            )
            await _queue_failure(conn, event)
            return recovery_id

    # ---- audit ----------------------------------------------------------------------------

    async def audit(
        self,
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
        async with self._conn() as conn:
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
        self, merchant_id: str, payment_ref: str | None, limit: int
    ) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT id, actor_key_id, actor_role, action, payment_ref, recovery_id, reason,"
                " result, created_at FROM audit_log WHERE merchant_id = $1"
                " AND ($2::text IS NULL OR payment_ref = $2) ORDER BY id DESC LIMIT $3",
                merchant_id,
                payment_ref,
                limit,
            )
        return [dict(r) for r in rows]

    # ---- retry links ----------------------------------------------------------------------

    async def add_link(
        self, merchant_id: str, payment_ref: str, *, issued_by: str, expires_at: datetime
    ) -> tuple[str, str]:
        """Record a new link on the payment's open recovery; returns (link_id, recovery_id)."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute(
                "SELECT 1 FROM transactions WHERE merchant_id = $1 AND payment_ref = $2 FOR UPDATE",
                merchant_id,
                payment_ref,
            )
            latest = await conn.fetchrow(
                "SELECT id, ended_at, status FROM recoveries WHERE merchant_id = $1"
                " AND payment_ref = $2 ORDER BY started_at DESC, id DESC LIMIT 1",
                merchant_id,
                payment_ref,
            )
            if latest is None:
                raise NotFound(f"no recovery for payment_ref {payment_ref!r}")
            if latest["ended_at"] is not None:
                raise RecoveryFinished(
                    f"the recovery of {payment_ref!r} already ended {latest['status']}"
                )
            link_id = new_id("lnk")
            await conn.execute(
                "INSERT INTO recovery_links (id, merchant_id, payment_ref, recovery_id,"
                " issued_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
                link_id,
                merchant_id,
                payment_ref,
                latest["id"],
                issued_by,
                expires_at,
            )
            return link_id, latest["id"]

    async def add_notification(
        self,
        merchant_id: str,
        payment_ref: str,
        link_id: str,
        channel: str,
        recipient: str | None,
        url: str,
    ) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO customer_notifications"
                " (merchant_id, payment_ref, link_id, channel, recipient, url)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                merchant_id,
                payment_ref,
                link_id,
                channel,
                recipient,
                url,
            )

    async def link_view(self, link_id: str) -> dict[str, Any] | None:
        """Everything the customer's page shows about a link, or None for an unknown link."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT l.id, l.merchant_id, l.payment_ref, l.recovery_id, l.expires_at,"
                " l.opened_at, l.used_at, l.revoked_at, l.revoked_reason, l.checkout_url,"
                " r.status AS recovery_status, r.workflow_id, t.amount, t.currency, t.psp,"
                " t.customer_id, t.customer_email, m.name AS merchant_name"
                " FROM recovery_links l JOIN recoveries r ON r.id = l.recovery_id"
                " JOIN transactions t ON t.merchant_id = l.merchant_id"
                "  AND t.payment_ref = l.payment_ref"
                " JOIN merchants m ON m.id = l.merchant_id WHERE l.id = $1",
                link_id,
            )
        return dict(row) if row else None

    async def mark_link_opened(self, link_id: str) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE recovery_links SET opened_at = coalesce(opened_at, clock_timestamp())"
                " WHERE id = $1",
                link_id,
            )

    async def link_checkout(
        self,
        link_id: str,
        create: Callable[[], Awaitable[tuple[str, str, str]]],
        *,
        simulator_return_url: str,
    ) -> str:
        """The link's checkout URL, created at most once: concurrent redemptions wait on the
        link's row lock and then reuse the first one's checkout. `create` makes the PSP's
        checkout and must not use the store (the row lock is held meanwhile); a simulator
        checkout is recorded here, in the same transaction."""
        async with self._conn() as conn, conn.transaction():
            url = await conn.fetchval(
                "SELECT checkout_url FROM recovery_links WHERE id = $1 FOR UPDATE", link_id
            )
            if url:
                return url
            psp, checkout_id, url = await create()
            if psp == "simulator":
                await conn.execute(
                    "INSERT INTO simulator_checkouts (id, link_id, merchant_id, payment_ref,"
                    " amount, currency, return_url) SELECT $2, l.id, l.merchant_id,"
                    " l.payment_ref, t.amount, t.currency, $3 FROM recovery_links l"
                    " JOIN transactions t USING (merchant_id, payment_ref) WHERE l.id = $1",
                    link_id,
                    checkout_id,
                    simulator_return_url,
                )
            await conn.execute(
                "UPDATE recovery_links SET checkout_psp = $2, checkout_id = $3,"
                " checkout_url = $4 WHERE id = $1",
                link_id,
                psp,
                checkout_id,
                url,
            )
            return url

    async def revoke_links(self, recovery_id: str, reason: str) -> int:
        async with self._conn() as conn:
            done = await conn.execute(
                "UPDATE recovery_links SET revoked_at = clock_timestamp(), revoked_reason = $2"
                " WHERE recovery_id = $1 AND revoked_at IS NULL",
                recovery_id,
                reason,
            )
        return int(done.split()[-1])

    async def links_of(self, recovery_id: str) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT id AS link_id, created_at, expires_at, opened_at, used_at, revoked_at,"
                " revoked_reason, issued_by FROM recovery_links WHERE recovery_id = $1"
                " ORDER BY created_at",
                recovery_id,
            )
        return [dict(r) for r in rows]

    async def complete_link_payment(self, link_id: str, source: str) -> str:
        """The customer paid through the link: mark it used, queue `payment_succeeded`."""
        async with self._conn() as conn, conn.transaction():
            link = await conn.fetchrow(
                "UPDATE recovery_links SET used_at = coalesce(used_at, clock_timestamp())"
                " WHERE id = $1 RETURNING merchant_id, payment_ref",
                link_id,
            )
            if link is None:
                raise NotFound("no such link")
            await _queue_signal(
                conn,
                workflow_id_for(link["merchant_id"], link["payment_ref"]),
                PaymentSucceeded(source=source, event_id=f"link:{link_id}"),
            )
            return link["payment_ref"]

    # ---- simulator hosted checkout ----------------------------------------------------------

    async def simulator_checkout_view(self, checkout_id: str) -> dict[str, Any] | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT c.*, m.name AS merchant_name FROM simulator_checkouts c"
                " JOIN merchants m ON m.id = c.merchant_id WHERE c.id = $1",
                checkout_id,
            )
        return dict(row) if row else None

    async def pay_simulator_checkout(self, checkout_id: str) -> bool:
        """Mark the simulated checkout paid; False when it already was."""
        async with self._conn() as conn:
            done = await conn.execute(
                "UPDATE simulator_checkouts SET paid_at = clock_timestamp()"
                " WHERE id = $1 AND paid_at IS NULL",
                checkout_id,
            )
        return done.endswith(" 1")

    # ---- PSP credentials and webhooks ---------------------------------------------------------

    async def psp_credentials(self, merchant_id: str, psp: str) -> dict[str, Any] | None:
        async with self._conn() as conn:
            return await conn.fetchval(
                "SELECT credentials FROM merchant_psp_credentials"
                " WHERE merchant_id = $1 AND psp = $2",
                merchant_id,
                psp,
            )

    async def set_psp_credentials(
        self, merchant_id: str, psp: str, credentials: dict[str, Any]
    ) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO merchant_psp_credentials (merchant_id, psp, credentials)"
                " VALUES ($1, $2, $3) ON CONFLICT (merchant_id, psp)"
                " DO UPDATE SET credentials = excluded.credentials, updated_at = now()",
                merchant_id,
                psp,
                credentials,
            )

    async def record_webhook(
        self, event: WebhookEvent, payload: dict[str, Any]
    ) -> tuple[bool, str]:
        """Record a verified PSP event once; queue the signal it means for its recovery.

        Returns (new, outcome). Events for payments we do not know are recorded, not errors.
        A failure we already know from the attempt that made it is not sent again.
        """
        async with self._conn() as conn, conn.transaction():
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
            outcome = await self._webhook_signal(conn, event)
            await conn.execute(
                "UPDATE webhook_events SET outcome = $2 WHERE id = $1", row_id, outcome
            )
            return True, outcome

    async def _webhook_signal(self, conn: asyncpg.Connection, event: WebhookEvent) -> str:
        if event.kind in ("ignored", "payment_refunded"):
            return event.kind
        if not (event.merchant_id and event.payment_ref):
            return "unknown_payment"
        known = await conn.fetchval(
            "SELECT true FROM transactions WHERE merchant_id = $1 AND payment_ref = $2 FOR UPDATE",
            event.merchant_id,
            event.payment_ref,
        )
        if not known:
            return "unknown_payment"
        workflow_id = workflow_id_for(event.merchant_id, event.payment_ref)
        if event.kind in ("payment_succeeded", "checkout_completed"):
            await _queue_signal(
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
        await _queue_failure(conn, failed)
        return "signalled_payment_failed"

    async def has_open_recovery(self, workflow_id: str) -> bool:
        async with self._conn() as conn:
            return bool(
                await conn.fetchval(
                    "SELECT true FROM recoveries WHERE workflow_id = $1 AND ended_at IS NULL",
                    workflow_id,
                )
            )

    # ---- outbox ---------------------------------------------------------------------------

    async def relay_outbox(
        self,
        limit: int,
        deliver: Callable[[Sequence[OutboxRow]], Awaitable[dict[int, str | None]]],
    ) -> tuple[int, int]:
        """Hand one batch of pending outbox rows to `deliver` (None = delivered, else error).

        Rows stay locked (FOR UPDATE SKIP LOCKED) while they are delivered, so several relays
        never deliver the same row at once. Returns (delivered, failed).
        """
        async with self._conn() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, workflow_id, signal, payload, created_at FROM outbox"
                " WHERE delivered_at IS NULL AND available_at <= clock_timestamp()"
                " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                limit,
            )
            if not rows:
                return 0, 0
            batch = [
                OutboxRow(r["id"], r["workflow_id"], r["signal"], r["payload"], r["created_at"])
                for r in rows
            ]
            results = await deliver(batch)
            ok = [i for i, err in results.items() if err is None]
            failed = {i: err for i, err in results.items() if err is not None}
            if ok:
                await conn.execute(
                    "UPDATE outbox SET delivered_at = clock_timestamp() WHERE id = ANY($1)", ok
                )
            for row_id, err in failed.items():
                await conn.execute(
                    "UPDATE outbox SET tries = tries + 1, last_error = $2,"
                    " available_at = clock_timestamp()"
                    "   + least(power(2, tries), 30) * interval '1 second'"
                    " WHERE id = $1",
                    row_id,
                    err[:500],
                )
            return len(ok), len(failed)

    async def outbox_pending(self) -> int:
        async with self._conn() as conn:
            return await conn.fetchval("SELECT count(*) FROM outbox WHERE delivered_at IS NULL")

    # ---- workflow-side writes -------------------------------------------------------------

    async def save_state(self, state: RecoveryState) -> None:
        async with self._conn() as conn:
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

    async def finish(self, state: RecoveryState, seen_event_ids: Sequence[str]) -> FinishResult:
        """End a recovery, unless events joined it that its workflow has not yet seen.

        Runs under the payment's row lock, like ingest, so a failure event either joins the
        recovery before it ends (and is returned here as unseen) or starts the next one.
        """
        async with self._conn() as conn, conn.transaction():
            await conn.execute(
                "SELECT 1 FROM transactions WHERE merchant_id = $1 AND payment_ref = $2 FOR UPDATE",
                state.merchant_id,
                state.payment_ref,
            )
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
            return FinishResult(finished=True)

    async def recovery_is_open(self, recovery_id: str) -> bool:
        async with self._conn() as conn:
            return bool(
                await conn.fetchval(
                    "SELECT ended_at IS NULL FROM recoveries WHERE id = $1", recovery_id
                )
            )

    async def begin_attempt(self, req: ChargeRequest) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO attempts (recovery_id, number, idempotency_key, psp, amount,"
                " currency, status, merchant_id, payment_method_id)"
                " VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8) ON CONFLICT DO NOTHING",
                req.recovery_id,
                req.attempt,
                req.idempotency_key,
                req.psp,
                req.amount,
                req.currency,
                req.merchant_id,
                req.payment_method.id,
            )

    async def card_attempts(self, merchant_id: str, payment_method_id: str) -> tuple[int, int]:
        """Our attempts on one card in the last 30 days and the last 24 hours."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT count(*) AS month,"
                " count(*) FILTER (WHERE created_at > now() - interval '24 hours') AS day"
                " FROM attempts WHERE merchant_id = $1 AND payment_method_id = $2"
                " AND created_at > now() - interval '30 days'",
                merchant_id,
                payment_method_id,
            )
        return row["month"], row["day"]

    # ---- retry policies -------------------------------------------------------------------

    async def current_policy(self, merchant_id: str) -> RetryPolicy:
        """The merchant's latest policy version, or the built-in default (version 0)."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT version, policy FROM merchant_policies WHERE merchant_id = $1"
                " ORDER BY version DESC LIMIT 1",
                merchant_id,
            )
        if row is None:
            return DEFAULT_POLICY
        return RetryPolicy.model_validate({**row["policy"], "version": row["version"]})

    async def save_policy(self, merchant_id: str, policy: RetryPolicy, actor: str) -> RetryPolicy:
        """Store `policy` as the merchant's next version; running recoveries keep theirs."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM merchants WHERE id = $1 FOR UPDATE", merchant_id)
            version = await conn.fetchval(
                "SELECT coalesce(max(version), 0) + 1 FROM merchant_policies"
                " WHERE merchant_id = $1",
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

    async def complete_attempt(self, idempotency_key: str, result: ChargeResult) -> None:
        failure = result.failure
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE attempts SET status = $2, psp_payment_id = $3, failure_code = $4,"
                " failure = $5, completed_at = clock_timestamp() WHERE idempotency_key = $1",
                idempotency_key,
                result.status,
                result.psp_payment_id,
                (failure.decline_code or failure.code) if failure else None,
                failure.model_dump(mode="json") if failure else None,
            )

    # ---- reads ----------------------------------------------------------------------------

    async def get_recovery(self, merchant_id: str, payment_ref: str) -> RecoveryRecord:
        """The payment's latest recovery run, with its attempts."""
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {_RECOVERY_COLUMNS} FROM recoveries r JOIN transactions t"
                " USING (merchant_id, payment_ref)"
                " WHERE r.merchant_id = $1 AND r.payment_ref = $2"
                " ORDER BY r.started_at DESC, r.id DESC LIMIT 1",
                merchant_id,
                payment_ref,
            )
            if row is None:
                raise NotFound(f"no recovery for payment_ref {payment_ref!r}")
            attempts = await conn.fetch(
                "SELECT number, created_at AS at, status AS outcome, failure_code AS code,"
                " idempotency_key FROM attempts WHERE recovery_id = $1 ORDER BY number",
                row["id"],
            )
        return _recovery(row, [Attempt(**dict(a)) for a in attempts])

    async def list_recoveries(
        self,
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
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_RECOVERY_COLUMNS} FROM recoveries r JOIN transactions t"
                " USING (merchant_id, payment_ref)"
                " WHERE r.merchant_id = $1 AND ($2::text IS NULL OR r.status = $2)"
                f" AND ($3::text IS NULL OR r.category = $3){after}"
                " ORDER BY r.started_at DESC, r.id DESC LIMIT $4",
                *args,
            )
        items = [_recovery(r) for r in rows[:limit]]
        next_cursor = (
            encode_cursor(items[-1].started_at, items[-1].id) if len(rows) > limit else None
        )
        return items, next_cursor

    # ---- simulator PSP ledger ---------------------------------------------------------------

    async def simulator_charge(
        self, req: ChargeRequest, status: str, decline_code: str | None
    ) -> tuple[str, str, str | None]:
        """Record a simulated charge once per idempotency key; replays return the first one."""
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO simulator_charges (idempotency_key, psp_payment_id, merchant_id,"
                " payment_ref, amount, currency, payment_method_id, status, decline_code)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                req.idempotency_key,
                new_id("sim"),
                req.merchant_id,
                req.payment_ref,
                req.amount,
                req.currency,
                req.payment_method.id,
                status,
                decline_code,
            )
            row = await conn.fetchrow(
                "SELECT psp_payment_id, status, decline_code FROM simulator_charges"
                " WHERE idempotency_key = $1",
                req.idempotency_key,
            )
        return row["psp_payment_id"], row["status"], row["decline_code"]

    async def metrics_snapshot(self) -> dict[str, Any]:
        """Business totals for /metrics, across all merchants."""
        async with self._conn() as conn:
            statuses = await conn.fetch("SELECT status, count(*) AS n FROM recoveries GROUP BY 1")
            amounts = await conn.fetch(
                "SELECT t.currency, sum(t.amount) AS total FROM recoveries r"
                " JOIN transactions t USING (merchant_id, payment_ref)"
                " WHERE r.status = 'recovered' GROUP BY 1"
            )
            outbox = await conn.fetchrow(
                "SELECT count(*) AS pending, coalesce(extract(epoch FROM"
                " clock_timestamp() - min(created_at)), 0) AS lag"
                " FROM outbox WHERE delivered_at IS NULL"
            )
        return {
            "by_status": {r["status"]: r["n"] for r in statuses},
            "recovered_amounts": {r["currency"]: int(r["total"]) for r in amounts},
            "outbox_pending": outbox["pending"],
            "outbox_lag_seconds": float(outbox["lag"]),
        }

    async def simulator_payment(self, psp_payment_id: str) -> tuple[str, str | None]:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT status, decline_code FROM simulator_charges WHERE psp_payment_id = $1",
                psp_payment_id,
            )
        if row is None:
            raise NotFound(f"no simulated payment {psp_payment_id!r}")
        return row["status"], row["decline_code"]

    # ---- maintenance ----------------------------------------------------------------------

    async def prune(
        self, *, idempotency_older_than: timedelta, outbox_older_than: timedelta
    ) -> dict[str, int]:
        async with self._conn() as conn:
            keys = await conn.execute(
                "DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval",
                idempotency_older_than,
            )
            outbox = await conn.execute(
                "DELETE FROM outbox WHERE delivered_at < now() - $1::interval",
                outbox_older_than,
            )
        return {
            "idempotency_keys": int(keys.split()[-1]),
            "outbox": int(outbox.split()[-1]),
        }
