"""Verified PSP webhook events, and the merchants' own PSP credentials."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from recovery.constants import SIGNAL_PAYMENT_METHOD_UPDATED, workflow_id_for
from recovery.models import PaymentMethod, PaymentMethodUpdate, WebhookEvent
from recovery.payments import Disposition, payment_identity
from recovery.store.db import connection, lock_payment, transaction
from recovery.store.outbox import queue_failure, queue_payment_succeeded, queue_signal
from recovery.store.payments import receive_payment
from recovery.store.records import StoredPSPCredentials
from recovery.webhook_routing import (
    OpenRecovery,
    PaymentFacts,
    WebhookOutcome,
    WebhookRoute,
    names_a_payment,
    paid_route,
    route_webhook,
)

_NOTHING_DONE = (
    WebhookOutcome.IGNORED,
    WebhookOutcome.UNKNOWN_PAYMENT,
    WebhookOutcome.NO_OPEN_RECOVERY,
)
"""Outcomes a method switch replaces: the event did nothing else."""

_CREDENTIALS = "SELECT merchant_id, psp, credentials, key_id, sealed, updated_at"


def _stored(row: asyncpg.Record) -> StoredPSPCredentials:
    return StoredPSPCredentials(
        row["merchant_id"],
        row["psp"],
        row["credentials"],
        row["key_id"],
        row["sealed"],
        row["updated_at"],
    )


async def psp_credentials(
    pool: asyncpg.Pool, merchant_id: str, psp: str
) -> StoredPSPCredentials | None:
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            f"{_CREDENTIALS} FROM merchant_psp_credentials WHERE merchant_id = $1 AND psp = $2",
            merchant_id,
            psp,
        )
    return _stored(row) if row is not None else None


async def all_psp_credentials(pool: asyncpg.Pool) -> list[StoredPSPCredentials]:
    """Every merchant's (the operator's `recovery psp reseal`; no request reads this)."""
    async with connection(pool) as conn:
        rows = await conn.fetch(
            f"{_CREDENTIALS} FROM merchant_psp_credentials ORDER BY merchant_id, psp"
        )
    return [_stored(row) for row in rows]


async def set_psp_credentials(
    pool: asyncpg.Pool,
    merchant_id: str,
    psp: str,
    key_id: str,
    sealed: bytes,
    *,
    if_updated_at: datetime | None = None,
) -> bool:
    """Store sealed credentials (a plaintext row loses its plaintext). With `if_updated_at`,
    only over that version of the row (False: someone wrote it meanwhile)."""
    async with connection(pool) as conn:
        if if_updated_at is not None:
            status = await conn.execute(
                "UPDATE merchant_psp_credentials SET credentials = NULL, key_id = $3,"
                " sealed = $4, updated_at = now()"
                " WHERE merchant_id = $1 AND psp = $2 AND updated_at = $5",
                merchant_id,
                psp,
                key_id,
                sealed,
                if_updated_at,
            )
            return status == "UPDATE 1"
        await conn.execute(
            "INSERT INTO merchant_psp_credentials (merchant_id, psp, key_id, sealed)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (merchant_id, psp) DO UPDATE SET"
            " credentials = NULL, key_id = excluded.key_id, sealed = excluded.sealed,"
            " updated_at = now()",
            merchant_id,
            psp,
            key_id,
            sealed,
        )
        return True


async def record_webhook(
    pool: asyncpg.Pool,
    event: WebhookEvent,
    payload: dict[str, Any],
    *,
    account: str | None = None,
) -> tuple[bool, WebhookOutcome]:
    """Record a verified PSP event once per account that signed it (`account`: the merchant
    whose own PSP account sent it; None: the environment's); queue the signal it means for
    its recovery (which `recovery.webhook_routing` decides). Returns (new, outcome). Events
    for payments we do not know are recorded, not errors."""
    async with transaction(pool) as conn:
        row_id = await conn.fetchval(
            "INSERT INTO webhook_events (psp, account, event_id, kind, psp_type, merchant_id,"
            " payment_ref, recovery_id, psp_payment_id, outcome, payload)"
            " VALUES ($1,$10,$2,$3,$4,$5,$6,$7,$8,'recorded',$9)"
            " ON CONFLICT (psp, account, event_id) DO NOTHING RETURNING id",
            event.psp,
            event.event_id,
            event.kind,
            event.psp_type,
            event.merchant_id,
            event.payment_ref,
            event.recovery_id,
            event.psp_payment_id,
            payload,
            account or "",
        )
        if row_id is None:
            return False, WebhookOutcome.DUPLICATE
        facts = await _payment_facts(conn, event, account)
        route = route_webhook(event, facts, account=account, now=datetime.now(UTC))
        if (succeeded := route.succeeded) and event.merchant_id and event.payment_ref:
            received = await receive_payment(
                conn,
                merchant_id=event.merchant_id,
                payment_ref=event.payment_ref,
                identity=payment_identity(
                    event.psp, event.psp_payment_id, f"event:{event.psp}:{event.event_id}"
                ),
                source=f"{event.psp}_webhook",
                psp=event.psp,
                psp_payment_id=event.psp_payment_id,
                amount=event.amount,
                currency=event.currency,
                partial=event.kind == "checkout_partially_paid",
                on_checkout=event.link_id is not None or event.kind == "checkout_completed",
            )
            route = paid_route(route, received.disposition if received else None)
            if received is not None and received.disposition is Disposition.RECOVERED:
                await queue_payment_succeeded(
                    conn, workflow_id_for(event.merchant_id, event.payment_ref), succeeded
                )
        if route.failed is not None:
            await queue_failure(conn, route.failed)
        if route.outcome is WebhookOutcome.CHECKOUT_CLOSED:
            await _checkout_closed(conn, event, account)
        switch = await _method_switch(conn, event, account)
        if switch is None and event.kind == "payment_method_updated" and not event.customer_id:
            route = WebhookRoute(WebhookOutcome.TOKEN_RECORDED)
        elif (
            switch is not None
            and await _switch_method(conn, event.psp, *switch, account)
            and route.outcome in _NOTHING_DONE
        ):
            route = WebhookRoute(WebhookOutcome.SIGNALLED_PAYMENT_METHOD_UPDATED)
        await conn.execute(
            "UPDATE webhook_events SET outcome = $2 WHERE id = $1", row_id, route.outcome.value
        )
        return True, route.outcome


async def _checkout_closed(
    conn: asyncpg.Connection, event: WebhookEvent, account: str | None
) -> None:
    """The PSP closed a hosted checkout of ours (expired, cancelled): recorded on its link,
    which opens a new one if the customer presses Pay again while the link is valid. Only a
    checkout of the merchant the event names (and a merchant's own account: its own)."""
    if not (event.checkout_id and event.merchant_id):
        return
    await conn.execute(
        "UPDATE recovery_links SET checkout_closed_at = coalesce(checkout_closed_at,"
        " clock_timestamp()) WHERE checkout_psp = $1 AND checkout_id = $2"
        " AND merchant_id = $3 AND ($4::text IS NULL OR merchant_id = $4)",
        event.psp,
        event.checkout_id,
        event.merchant_id,
        account,
    )


async def _payment_facts(
    conn: asyncpg.Connection, event: WebhookEvent, account: str | None
) -> PaymentFacts | None:
    """Lock the payment the event names and read what routing it needs; None when the
    event names no payment of ours (or one of another merchant than the account's)."""
    if not (event.merchant_id and event.payment_ref and names_a_payment(event, account)):
        return None
    if not await lock_payment(conn, event.merchant_id, event.payment_ref):
        return None
    already_failed = bool(
        event.psp_payment_id
        and await conn.fetchval(
            "SELECT true FROM attempts WHERE psp_payment_id = $1 AND status = 'failed'",
            event.psp_payment_id,
        )
    )
    row = await conn.fetchrow(
        "SELECT r.id AS recovery_id, t.psp, t.amount, t.currency, t.customer_id,"
        " t.customer_email, t.payment_method_type, t.payment_method_id FROM recoveries r"
        " JOIN transactions t USING (merchant_id, payment_ref)"
        " WHERE r.merchant_id = $1 AND r.payment_ref = $2 AND r.ended_at IS NULL",
        event.merchant_id,
        event.payment_ref,
    )
    return PaymentFacts(
        open_recovery=OpenRecovery(**dict(row)) if row else None,
        failure_already_known=already_failed,
    )


async def _method_switch(
    conn: asyncpg.Connection, event: WebhookEvent, account: str | None
) -> tuple[str, PaymentMethod] | None:
    """The (PSP customer, new method) the event tells us to switch to, if any. An event that
    names both (Stripe's changed default) says so itself. Razorpay's `token.confirmed` names
    no customer; the payment that registered the token does, and they may come in either
    order: `psp_tokens` keeps what each said, and the switch happens when both are known,
    once per token."""
    method = event.payment_method
    if not (method and method.id):
        return None
    confirms = event.kind == "payment_method_updated"
    if confirms and event.customer_id:
        return event.customer_id, method
    if not (confirms or event.customer_id):
        return None
    await conn.execute(
        "INSERT INTO psp_tokens AS t (psp, account, token_id, method, customer_id, confirmed_at)"
        " VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END)"
        " ON CONFLICT (psp, account, token_id) DO UPDATE SET"
        " customer_id = COALESCE(t.customer_id, EXCLUDED.customer_id),"
        " confirmed_at = COALESCE(t.confirmed_at, EXCLUDED.confirmed_at),"
        " method = CASE WHEN $6 THEN EXCLUDED.method ELSE t.method END",
        event.psp,
        account or "",
        method.id,
        method.type,
        event.customer_id,
        confirms,
    )
    row = await conn.fetchrow(
        "UPDATE psp_tokens SET switched_at = now() WHERE psp = $1 AND account = $2"
        " AND token_id = $3 AND customer_id IS NOT NULL AND confirmed_at IS NOT NULL"
        " AND switched_at IS NULL RETURNING customer_id, method",
        event.psp,
        account or "",
        method.id,
    )
    if row is None:
        return None
    return row["customer_id"], PaymentMethod(type=row["method"], id=method.id)


async def _switch_method(
    conn: asyncpg.Connection,
    psp: str,
    customer_id: str,
    method: PaymentMethod,
    account: str | None,
) -> int:
    """Queue `payment_method_updated` for every open recovery of the PSP customer that the
    sending account charges (a merchant's own account: that merchant's; the environment's:
    merchants without their own credentials for the PSP) and that does not use that method
    already. Each payment is locked, as for any webhook. Returns how many."""
    rows = await conn.fetch(
        "SELECT r.merchant_id, r.payment_ref FROM recoveries r"
        " JOIN transactions t USING (merchant_id, payment_ref)"
        " WHERE r.ended_at IS NULL AND t.psp = $1 AND t.customer_id = $2"
        " AND t.payment_method_id IS DISTINCT FROM $3"
        " AND CASE WHEN $4::text IS NULL THEN NOT EXISTS (SELECT 1 FROM"
        "   merchant_psp_credentials c WHERE c.merchant_id = r.merchant_id AND c.psp = $1)"
        "   ELSE r.merchant_id = $4 END"
        " ORDER BY r.merchant_id, r.payment_ref",
        psp,
        customer_id,
        method.id,
        account,
    )
    update = PaymentMethodUpdate(payment_method=method, actor=f"{psp}_webhook")
    for row in rows:
        if await lock_payment(conn, row["merchant_id"], row["payment_ref"]):
            workflow_id = workflow_id_for(row["merchant_id"], row["payment_ref"])
            await queue_signal(conn, workflow_id, SIGNAL_PAYMENT_METHOD_UPDATED, update)
    return len(rows)
