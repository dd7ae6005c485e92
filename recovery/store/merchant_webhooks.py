"""Merchant webhooks: the events merchants are told of, their endpoints, and the delivery log.

Events are written in the transaction of the change they tell of (a recovery's state write,
a link, a payment received after the end, a duplicate's refund), once: each has a dedupe key
derived from what happened, and its id from that key. For every endpoint of the merchant
subscribed to its type, the same transaction queues its delivery (`webhook_queue.py`: the
endpoint's WebhookEndpointWorkflow is woken through the outbox), so a crash right after the
commit loses no delivery.

Every read and write takes the merchant id: a merchant never sees another's endpoints,
events or deliveries.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from recovery.errors import NotFound, RecoveryError
from recovery.merchant_events import (
    NOT_FAILED,
    EventType,
    Shown,
    event_id_for,
    transitions,
    what_next,
)
from recovery.models import WebhookDeliveryRequest
from recovery.policy import attempt_cap
from recovery.store.db import (
    affected,
    connection,
    decode_cursor,
    encode_cursor,
    new_id,
    transaction,
)
from recovery.store.policies import policy_version
from recovery.store.records import (
    DeliveryTarget,
    MerchantEventRecord,
    SealedSecret,
    WebhookDeliveryRecord,
    WebhookEndpointRecord,
)
from recovery.store.views import read_payments, recovery_view
from recovery.store.webhook_queue import LOG_TRY, enqueue
from recovery.views import (
    AttemptFailedOut,
    FailedAttemptOut,
    FailureOut,
    PaymentOut,
    RecoveryOut,
)

MAX_ENDPOINTS = 16
"""Endpoints per merchant (Stripe allows 16 too): each event fans out to all of them."""


class TooManyEndpoints(RecoveryError):
    status = 409
    code = "too_many_endpoints"


# ---- events ---------------------------------------------------------------------------------


async def emit(
    conn: asyncpg.Connection,
    *,
    merchant_id: str,
    type: EventType,
    dedupe_key: str,
    data: dict[str, Any],
    payment_ref: str | None = None,
    recovery_id: str | None = None,
) -> str | None:
    """Record an event once, in the caller's transaction, and queue its delivery to every
    endpoint of the merchant subscribed to its type. Its id, or None when it was told before."""
    event_id = await conn.fetchval(
        "INSERT INTO merchant_events (id, merchant_id, type, dedupe_key, payment_ref,"
        " recovery_id, payload) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (merchant_id, dedupe_key) DO NOTHING RETURNING id",
        event_id_for(merchant_id, dedupe_key),
        merchant_id,
        type.value,
        dedupe_key,
        payment_ref,
        recovery_id,
        data,
    )
    if event_id is None:
        return None
    endpoints = await conn.fetch(
        "SELECT id FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_at IS NULL"
        " AND (events IS NULL OR $2 = ANY(events)) ORDER BY created_at",
        merchant_id,
        type.value,
    )
    for endpoint in endpoints:
        await enqueue(conn, merchant_id, endpoint["id"], event_id)
    return str(event_id)


async def shown(conn: asyncpg.Connection, recovery_id: str) -> Shown | None:
    """What Postgres shows of a recovery now, locking its row for the caller's transaction."""
    row = await conn.fetchrow(
        "SELECT status, paused, ended_at IS NOT NULL AS ended FROM recoveries"
        " WHERE id = $1 FOR UPDATE",
        recovery_id,
    )
    return Shown(row["status"], row["paused"], row["ended"]) if row else None


async def tell_recovery(conn: asyncpg.Connection, recovery_id: str, before: Shown) -> None:
    """After a state write of a recovery (in its transaction): the events it tells, in order.

    `recovery.started` at its first write; `recovery.attempt_failed` for each failed attempt
    not told yet (the write after a failed attempt is the one that knows what comes next);
    then what changed: awaiting the customer, paused, resumed, or how it ended."""
    after = await shown(conn, recovery_id)
    if after is None:
        return
    found = await conn.fetchrow(
        "SELECT r.merchant_id, NOT EXISTS (SELECT 1 FROM merchant_events e"
        "   WHERE e.merchant_id = r.merchant_id AND e.dedupe_key = r.id || ':started')"
        "   AS unstarted,"
        " ARRAY(SELECT a.number FROM attempts a WHERE a.recovery_id = r.id"
        "   AND NOT (a.status = ANY($2::text[])) AND NOT EXISTS (SELECT 1 FROM merchant_events e"
        "     WHERE e.merchant_id = r.merchant_id"
        "     AND e.dedupe_key = r.id || ':attempt_failed:' || a.number)"
        "   ORDER BY a.number) AS failed"
        " FROM recoveries r WHERE r.id = $1",
        recovery_id,
        list(NOT_FAILED),
    )
    changes = transitions(before, after)
    if not (found["unstarted"] or found["failed"] or changes):
        return
    view = await recovery_view(conn, recovery_id)
    assert view is not None  # its row is locked by this transaction
    merchant_id = found["merchant_id"]
    told = {"recovery": view.model_dump(mode="json")}

    async def tell(type: EventType, key: str, data: dict[str, Any]) -> None:
        await emit(
            conn,
            merchant_id=merchant_id,
            type=type,
            dedupe_key=f"{recovery_id}:{key}",
            data=data,
            payment_ref=view.payment_ref,
            recovery_id=recovery_id,
        )

    if found["unstarted"]:
        await tell(EventType.RECOVERY_STARTED, "started", told)
    for number in found["failed"]:
        data = await _attempt_failed(conn, merchant_id, view, number)
        await tell(EventType.RECOVERY_ATTEMPT_FAILED, f"attempt_failed:{number}", data | told)
    for change in changes:
        if after.ended:
            await tell(change, "ended", told)
            continue
        seq = await conn.fetchval(
            "SELECT count(*) + 1 FROM merchant_events WHERE recovery_id = $1 AND type = $2",
            recovery_id,
            change.value,
        )
        await tell(change, f"{change.value.removeprefix('recovery.')}:{seq}", told)


async def _attempt_failed(
    conn: asyncpg.Connection, merchant_id: str, view: RecoveryOut, number: int
) -> dict[str, Any]:
    attempt = await conn.fetchrow(
        "SELECT number, created_at AS at, status AS outcome, failure_code AS code, failure"
        " FROM attempts WHERE recovery_id = $1 AND number = $2",
        view.recovery_id,
        number,
    )
    policy = await policy_version(conn, merchant_id, view.policy_version)
    ended = view.ended_at is not None
    nxt = what_next(
        status=view.status.value,
        ended=ended,
        next_attempt_at=view.next_attempt_at,
        next_attempt_reason=view.next_attempt_reason,
        ended_reason=view.ended_reason,
        rule=view.rule,
        attempts_made=len(view.attempts),
        attempt_cap=attempt_cap(policy, view.category),
    )
    return AttemptFailedOut(
        attempt=FailedAttemptOut(
            number=attempt["number"],
            at=attempt["at"],
            outcome=attempt["outcome"],
            code=attempt["code"],
            failure=FailureOut.model_validate(attempt["failure"] or {}),
        ),
        will_retry=nxt.will_retry,
        next_attempt_at=nxt.next_attempt_at,
        attempts_left=nxt.attempts_left,
        rule=nxt.rule,
        reason=nxt.reason,
    ).model_dump(mode="json")


async def tell_link(conn: asyncpg.Connection, link_id: str) -> None:
    """`link.issued`, in the transaction that recorded the link (its URL is added when it is
    sent: the token is never stored)."""
    view = await _recovery_of(conn, "SELECT recovery_id FROM recovery_links WHERE id = $1", link_id)
    link = next(link for link in view.links if link.link_id == link_id)
    await emit(
        conn,
        merchant_id=await _merchant_of(conn, view.recovery_id),
        type=EventType.LINK_ISSUED,
        dedupe_key=f"{link_id}:issued",
        data={
            "link": link.model_dump(mode="json"),
            "recovery": view.model_dump(mode="json"),
        },
        payment_ref=view.payment_ref,
        recovery_id=view.recovery_id,
    )


async def tell_payment(conn: asyncpg.Connection, payment_id: str, type: EventType) -> None:
    """A payment event (received after the end, a duplicate refunded), once per payment."""
    view = await _recovery_of(
        conn, "SELECT recovery_id FROM received_payments WHERE id = $1", payment_id
    )
    payment = next(p for p in await read_payments(conn, view.recovery_id) if p.id == payment_id)
    await emit(
        conn,
        merchant_id=payment.merchant_id,
        type=type,
        dedupe_key=f"{payment_id}:{type.value.removeprefix('payment.')}",
        data={
            "payment": PaymentOut.model_validate(payment, from_attributes=True).model_dump(
                mode="json"
            ),
            "recovery": view.model_dump(mode="json"),
        },
        payment_ref=view.payment_ref,
        recovery_id=view.recovery_id,
    )


async def _recovery_of(conn: asyncpg.Connection, query: str, arg: str) -> RecoveryOut:
    recovery_id = await conn.fetchval(query, arg)
    view = await recovery_view(conn, recovery_id) if recovery_id else None
    if view is None:
        raise NotFound(f"no recovery for {arg}")
    return view


async def _merchant_of(conn: asyncpg.Connection, recovery_id: str) -> str:
    return str(await conn.fetchval("SELECT merchant_id FROM recoveries WHERE id = $1", recovery_id))


# ---- endpoints ------------------------------------------------------------------------------

_ENDPOINT_COLUMNS = (
    "id, merchant_id, url, description, events, created_at, rotated_at,"
    " CASE WHEN previous_expires_at > clock_timestamp() THEN previous_expires_at END"
    " AS previous_expires_at"
)


async def create_endpoint(
    pool: asyncpg.Pool,
    *,
    endpoint_id: str,
    merchant_id: str,
    url: str,
    description: str | None,
    events: Sequence[str] | None,
    secret: SealedSecret,
) -> WebhookEndpointRecord:
    async with transaction(pool) as conn:
        # one creation at a time per merchant (the count below holds); NO KEY UPDATE leaves
        # the events being written for the merchant (their foreign key) unblocked
        if not await conn.fetchval(
            "SELECT true FROM merchants WHERE id = $1 FOR NO KEY UPDATE", merchant_id
        ):
            raise NotFound("no such merchant")
        count = await conn.fetchval(
            "SELECT count(*) FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_at IS NULL",
            merchant_id,
        )
        if count >= MAX_ENDPOINTS:
            raise TooManyEndpoints(
                f"a merchant has at most {MAX_ENDPOINTS} webhook endpoints: delete one first"
            )
        row = await conn.fetchrow(
            "INSERT INTO webhook_endpoints (id, merchant_id, url, description, events,"
            " secret_key_id, secret_sealed) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            f" RETURNING {_ENDPOINT_COLUMNS}",
            endpoint_id,
            merchant_id,
            url,
            description,
            list(events) if events is not None else None,
            secret.key_id,
            secret.sealed,
        )
    return WebhookEndpointRecord(**dict(row))


async def list_endpoints(pool: asyncpg.Pool, merchant_id: str) -> list[WebhookEndpointRecord]:
    async with connection(pool) as conn:
        rows = await conn.fetch(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints"
            " WHERE merchant_id = $1 AND deleted_at IS NULL ORDER BY created_at, id",
            merchant_id,
        )
    return [WebhookEndpointRecord(**dict(r)) for r in rows]


async def delete_endpoint(pool: asyncpg.Pool, merchant_id: str, endpoint_id: str) -> None:
    """No delivery to it from now on: what is queued for it goes (a pass in flight checks
    again before its next); 404 for none of the merchant's."""
    async with transaction(pool) as conn:
        done = await conn.execute(
            "UPDATE webhook_endpoints SET deleted_at = clock_timestamp()"
            " WHERE merchant_id = $1 AND id = $2 AND deleted_at IS NULL",
            merchant_id,
            endpoint_id,
        )
        if not affected(done):
            raise NotFound(f"no webhook endpoint {endpoint_id!r}")
        await conn.execute("DELETE FROM webhook_queue WHERE endpoint_id = $1", endpoint_id)


async def rotate_secret(
    pool: asyncpg.Pool,
    merchant_id: str,
    endpoint_id: str,
    secret: SealedSecret,
    previous_signs_for: timedelta,
) -> WebhookEndpointRecord:
    """The new secret signs from now on; the one it replaces signs too for
    `previous_signs_for` (a secret replaced earlier stops at once)."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            "UPDATE webhook_endpoints SET previous_key_id = secret_key_id,"
            " previous_sealed = secret_sealed,"
            " previous_expires_at = clock_timestamp() + $5::interval,"
            " secret_key_id = $3, secret_sealed = $4, rotated_at = clock_timestamp()"
            " WHERE merchant_id = $1 AND id = $2 AND deleted_at IS NULL"
            f" RETURNING {_ENDPOINT_COLUMNS}",
            merchant_id,
            endpoint_id,
            secret.key_id,
            secret.sealed,
            previous_signs_for,
        )
    if row is None:
        raise NotFound(f"no webhook endpoint {endpoint_id!r}")
    return WebhookEndpointRecord(**dict(row))


# ---- deliveries -----------------------------------------------------------------------------


async def delivery_target(
    pool: asyncpg.Pool, merchant_id: str, endpoint_id: str, event_id: str
) -> DeliveryTarget | None:
    """What one try sends where (the secrets that sign now), or None when the event or the
    endpoint is not the merchant's (pruned)."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            "SELECT e.url, e.deleted_at IS NOT NULL AS deleted, e.secret_key_id,"
            " e.secret_sealed, e.previous_key_id, e.previous_sealed,"
            " e.previous_expires_at > clock_timestamp() AS previous_signs,"
            " v.type, v.created_at, v.payload"
            " FROM webhook_endpoints e JOIN merchant_events v"
            "   ON v.merchant_id = e.merchant_id AND v.id = $3"
            " WHERE e.merchant_id = $1 AND e.id = $2",
            merchant_id,
            endpoint_id,
            event_id,
        )
    if row is None:
        return None
    secrets = [SealedSecret(row["secret_key_id"], row["secret_sealed"])]
    if row["previous_signs"]:
        secrets.append(SealedSecret(row["previous_key_id"], row["previous_sealed"]))
    return DeliveryTarget(
        merchant_id=merchant_id,
        endpoint_id=endpoint_id,
        url=row["url"],
        deleted=row["deleted"],
        secrets=tuple(secrets),
        event_id=event_id,
        event_type=row["type"],
        event_created_at=row["created_at"],
        payload=row["payload"],
    )


async def record_delivery(
    pool: asyncpg.Pool,
    req: WebhookDeliveryRequest,
    *,
    attempt: int,
    attempted_at: datetime,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
    next_retry_at: datetime | None,
) -> str:
    delivery_id = new_id("whd")
    async with connection(pool) as conn:
        await conn.execute(
            LOG_TRY,
            delivery_id,
            req.merchant_id,
            req.endpoint_id,
            req.event_id,
            attempt,
            req.manual,
            status_code,
            error[:1000] if error else None,
            duration_ms,
            attempted_at,
            next_retry_at,
        )
    return delivery_id


_DELIVERY_COLUMNS = (
    "d.id, d.endpoint_id, d.event_id, v.type, d.attempt, d.manual, d.status_code, d.error,"
    " d.duration_ms, d.attempted_at, d.next_retry_at"
)


async def list_deliveries(
    pool: asyncpg.Pool,
    merchant_id: str,
    *,
    endpoint_id: str | None,
    event_id: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[WebhookDeliveryRecord], str | None]:
    """The merchant's delivery tries, newest first."""
    args: list[Any] = [merchant_id, endpoint_id, event_id, limit + 1]
    after = ""
    if cursor:
        at, delivery_id = decode_cursor(cursor)
        args += [at, delivery_id]
        after = " AND (d.attempted_at, d.id) < ($5, $6)"
    async with connection(pool) as conn:
        rows = await conn.fetch(
            f"SELECT {_DELIVERY_COLUMNS}"
            " FROM webhook_deliveries d JOIN merchant_events v ON v.id = d.event_id"
            " WHERE d.merchant_id = $1 AND ($2::text IS NULL OR d.endpoint_id = $2)"
            f" AND ($3::text IS NULL OR d.event_id = $3){after}"
            " ORDER BY d.attempted_at DESC, d.id DESC LIMIT $4",
            *args,
        )
    items = [WebhookDeliveryRecord(**dict(r)) for r in rows[:limit]]
    more = len(rows) > limit
    return items, encode_cursor(items[-1].attempted_at, items[-1].id) if more else None


RECOVERY_EVENTS_SHOWN = 200
RECOVERY_DELIVERIES_SHOWN = 1000
"""At most this many events of one recovery, and tries of their deliveries (the newest), for
its console page; the whole log is on the webhooks page and `GET /v1/webhooks/deliveries`."""


async def recovery_events(
    pool: asyncpg.Pool, merchant_id: str, recovery_id: str
) -> list[MerchantEventRecord]:
    """The events the merchant was told of about one recovery run, oldest first, each with
    its delivery tries; only the merchant's own (another merchant's recovery has none)."""
    async with connection(pool) as conn:
        events = await conn.fetch(
            "SELECT id, type, created_at FROM merchant_events"
            " WHERE merchant_id = $1 AND recovery_id = $2 ORDER BY created_at, id LIMIT $3",
            merchant_id,
            recovery_id,
            RECOVERY_EVENTS_SHOWN,
        )
        tries = await conn.fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM merchant_events v"
            " JOIN webhook_deliveries d ON d.event_id = v.id AND d.merchant_id = v.merchant_id"
            " WHERE v.merchant_id = $1 AND v.recovery_id = $2"
            " ORDER BY d.attempted_at DESC, d.id DESC LIMIT $3",
            merchant_id,
            recovery_id,
            RECOVERY_DELIVERIES_SHOWN,
        )
    by_event: dict[str, list[WebhookDeliveryRecord]] = {}
    for row in reversed(tries):
        by_event.setdefault(row["event_id"], []).append(WebhookDeliveryRecord(**dict(row)))
    return [
        MerchantEventRecord(
            id=e["id"],
            type=e["type"],
            created_at=e["created_at"],
            deliveries=tuple(by_event.get(e["id"], ())),
        )
        for e in events
    ]


async def queue_redelivery(
    pool: asyncpg.Pool, merchant_id: str, endpoint_id: str, event_id: str
) -> str:
    """Deliver an event again (a new delivery with the same `webhook-id`, queued for the
    endpoint); 404 unless both are the merchant's (the endpoint not deleted). The id of the
    endpoint's workflow, which delivers it."""
    async with transaction(pool) as conn:
        found = await conn.fetchrow(
            "SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE merchant_id = $1 AND id = $2"
            "   AND deleted_at IS NULL) AS endpoint,"
            " EXISTS (SELECT 1 FROM merchant_events WHERE merchant_id = $1 AND id = $3) AS event",
            merchant_id,
            endpoint_id,
            event_id,
        )
        if not found["endpoint"]:
            raise NotFound(f"no webhook endpoint {endpoint_id!r}")
        if not found["event"]:
            raise NotFound(f"no event {event_id!r}", field="event_id")
        return await enqueue(conn, merchant_id, endpoint_id, event_id, manual=True)


async def prune(conn: asyncpg.Connection, older_than: timedelta) -> int:
    """Events older than `older_than` go, with their delivery log (no delivery of theirs is
    still retried by then), unless their recovery is still open: what it told is how it
    knows what not to tell again."""
    return affected(
        await conn.execute(
            "DELETE FROM merchant_events e WHERE e.created_at < now() - $1::interval"
            " AND NOT EXISTS (SELECT 1 FROM recoveries r"
            "   WHERE r.id = e.recovery_id AND r.ended_at IS NULL)",
            older_than,
        )
    )
