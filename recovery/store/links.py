"""Retry links and a link's one checkout (the messages that carry links: notifications.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg

from recovery.constants import workflow_id_for
from recovery.errors import NotFound, RecoveryFinished
from recovery.models import PaymentSucceeded
from recovery.payments import Disposition, payment_identity
from recovery.store import merchant_webhooks
from recovery.store.db import (
    affected,
    connection,
    latest_recovery,
    lock_payment,
    new_id,
    transaction,
)
from recovery.store.outbox import queue_payment_succeeded
from recovery.store.payments import receive_payment
from recovery.store.records import LinkSummary, LinkView, SimulatorCheckout
from recovery.store.views import read_links


async def add_link(
    pool: asyncpg.Pool,
    merchant_id: str,
    payment_ref: str,
    *,
    issued_by: str,
    expires_at: datetime,
) -> tuple[str, str]:
    """Record a new link on the payment's open recovery; returns (link_id, recovery_id)."""
    async with transaction(pool) as conn:
        await lock_payment(conn, merchant_id, payment_ref)
        latest = await latest_recovery(conn, merchant_id, payment_ref)
        if latest is None:
            raise NotFound(f"no recovery for payment_ref {payment_ref!r}")
        if latest.ended_at is not None:
            raise RecoveryFinished(f"the recovery of {payment_ref!r} already ended {latest.status}")
        link_id = await insert_link(
            conn, merchant_id, payment_ref, latest.id, issued_by=issued_by, expires_at=expires_at
        )
        return link_id, latest.id


async def insert_link(
    conn: asyncpg.Connection,
    merchant_id: str,
    payment_ref: str,
    recovery_id: str,
    *,
    issued_by: str,
    expires_at: datetime,
) -> str:
    """Insert a link row of `recovery_id` in the caller's transaction (which holds the
    payment's lock and checked that the recovery is open), and tell the merchant
    (`link.issued`); returns its id."""
    link_id = new_id("lnk")
    await conn.execute(
        "INSERT INTO recovery_links (id, merchant_id, payment_ref, recovery_id,"
        " issued_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        link_id,
        merchant_id,
        payment_ref,
        recovery_id,
        issued_by,
        expires_at,
    )
    await merchant_webhooks.tell_link(conn, link_id)
    return link_id


async def link_view(pool: asyncpg.Pool, link_id: str) -> LinkView | None:
    """Everything the customer's page shows about a link, or None for an unknown link."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            "SELECT l.id, l.merchant_id, l.payment_ref, l.recovery_id,"
            " l.created_at AS issued_at, l.expires_at,"
            " l.opened_at, l.used_at, l.revoked_at, l.revoked_reason, l.checkout_url,"
            " r.status AS recovery_status, r.workflow_id, t.amount, t.currency, t.psp,"
            " t.customer_id, t.customer_email, m.name AS merchant_name"
            " FROM recovery_links l JOIN recoveries r ON r.id = l.recovery_id"
            " JOIN transactions t ON t.merchant_id = l.merchant_id"
            "  AND t.payment_ref = l.payment_ref"
            " JOIN merchants m ON m.id = l.merchant_id WHERE l.id = $1",
            link_id,
        )
    return LinkView(**dict(row)) if row else None


async def mark_link_opened(pool: asyncpg.Pool, link_id: str) -> None:
    async with connection(pool) as conn:
        await conn.execute(
            "UPDATE recovery_links SET opened_at = coalesce(opened_at, clock_timestamp())"
            " WHERE id = $1",
            link_id,
        )


async def link_checkout(
    pool: asyncpg.Pool,
    link_id: str,
    create: Callable[[str | None], Awaitable[tuple[str, str, str]]],
    *,
    simulator_return_url: str,
) -> str:
    """The link's checkout URL, created once while it is open: concurrent redemptions wait
    on the link's row lock and then reuse the first one's checkout. One the PSP closed
    (expired, cancelled there) is replaced: `create` gets the closed checkout's id (None for
    the first), to make the new one under an idempotency key of its own. `create` makes the
    PSP's checkout and must not use the store (the row lock is held meanwhile); a simulator
    checkout is recorded here, in the same transaction."""
    async with transaction(pool) as conn:
        row = await conn.fetchrow(
            "SELECT checkout_psp, checkout_id, checkout_url, checkout_closed_at"
            " FROM recovery_links WHERE id = $1 FOR UPDATE",
            link_id,
        )
        if row is None:
            raise NotFound("no such link")
        reopen = row["checkout_closed_at"] is not None and row["checkout_psp"] != "simulator"
        if row["checkout_url"] and not reopen:
            return str(row["checkout_url"])
        psp, checkout_id, url = await create(row["checkout_id"] if reopen else None)
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
            " checkout_url = $4, checkout_closed_at = NULL WHERE id = $1",
            link_id,
            psp,
            checkout_id,
            url,
        )
        return url


async def revoke_links(pool: asyncpg.Pool, recovery_id: str, reason: str) -> int:
    async with connection(pool) as conn:
        return await _revoke(conn, recovery_id, reason)


async def _revoke(conn: asyncpg.Connection, recovery_id: str, reason: str) -> int:
    done = await conn.execute(
        "UPDATE recovery_links SET revoked_at = clock_timestamp(), revoked_reason = $2"
        " WHERE recovery_id = $1 AND revoked_at IS NULL",
        recovery_id,
        reason,
    )
    return affected(done)


async def revoke_at_the_end(conn: asyncpg.Connection, recovery_id: str, reason: str) -> bool:
    """As a recovery ends, in the caller's transaction: revoke its links and close the
    simulator's checkouts of them. True when a PSP's checkout of one is still open (to be
    closed at the PSP: `close_checkouts`)."""
    await _revoke(conn, recovery_id, reason)
    return bool(await _close_here(conn, recovery_id))


async def links_of(pool: asyncpg.Pool, recovery_id: str) -> list[LinkSummary]:
    async with connection(pool) as conn:
        return await read_links(conn, recovery_id)


async def _complete_link_payment(
    conn: asyncpg.Connection, link_id: str, source: str, *, psp: str, psp_payment_id: str
) -> str:
    """The customer paid through the link: mark it used and record the payment, which
    settles its recovery (then queue `payment_succeeded`) or is refunded as a duplicate."""
    link = await conn.fetchrow(
        "SELECT merchant_id, payment_ref FROM recovery_links WHERE id = $1", link_id
    )
    if link is None:
        raise NotFound("no such link")
    await lock_payment(conn, link["merchant_id"], link["payment_ref"])
    await conn.execute(
        "UPDATE recovery_links SET used_at = coalesce(used_at, clock_timestamp()) WHERE id = $1",
        link_id,
    )
    received = await receive_payment(
        conn,
        merchant_id=link["merchant_id"],
        payment_ref=link["payment_ref"],
        identity=payment_identity(psp, psp_payment_id, f"link:{link_id}"),
        source=source,
        psp=psp,
        psp_payment_id=psp_payment_id,
        amount=None,
        currency=None,
    )
    if received is not None and received.disposition is Disposition.RECOVERED:
        await queue_payment_succeeded(
            conn,
            workflow_id_for(link["merchant_id"], link["payment_ref"]),
            PaymentSucceeded(
                source=source, event_id=f"link:{link_id}", psp_payment_id=psp_payment_id
            ),
        )
    return link["payment_ref"]


async def simulator_checkout_view(pool: asyncpg.Pool, checkout_id: str) -> SimulatorCheckout | None:
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            "SELECT c.*, m.name AS merchant_name FROM simulator_checkouts c"
            " JOIN merchants m ON m.id = c.merchant_id WHERE c.id = $1",
            checkout_id,
        )
    return SimulatorCheckout(**dict(row)) if row else None


async def pay_simulator_checkout(pool: asyncpg.Pool, checkout_id: str) -> str:
    """The customer pays the simulated checkout: `paid`, `already_paid`, or `closed` (its
    link was revoked or expired, or its recovery ended: as a PSP's closed checkout, it takes
    no money). A payment is recorded in the same transaction as the checkout's."""
    async with transaction(pool) as conn:
        co = await conn.fetchrow(
            "SELECT c.link_id, c.paid_at, c.closed_at, l.revoked_at,"
            " l.expires_at < clock_timestamp() AS expired FROM simulator_checkouts c"
            " JOIN recovery_links l ON l.id = c.link_id WHERE c.id = $1 FOR UPDATE OF c",
            checkout_id,
        )
        if co is None:
            raise NotFound("no such checkout")
        if co["paid_at"] is not None:
            return "already_paid"
        if co["closed_at"] is not None or co["revoked_at"] is not None or co["expired"]:
            return "closed"
        await conn.execute(
            "UPDATE simulator_checkouts SET paid_at = clock_timestamp() WHERE id = $1",
            checkout_id,
        )
        await _complete_link_payment(
            conn, co["link_id"], "simulator_checkout", psp="simulator", psp_payment_id=checkout_id
        )
        return "paid"


async def close_checkouts(pool: asyncpg.Pool, recovery_id: str) -> list[tuple[str, str, str, str]]:
    """Close the hosted checkouts of a recovery's revoked links: the simulator's here; the
    PSPs' are returned as (link id, merchant id, psp, checkout id) to close at the PSP, then
    `checkout_closed`."""
    async with transaction(pool) as conn:
        rows = await _close_here(conn, recovery_id)
    return [(r["id"], r["merchant_id"], r["checkout_psp"], r["checkout_id"]) for r in rows]


async def _close_here(conn: asyncpg.Connection, recovery_id: str) -> list[asyncpg.Record]:
    """Close the simulator's checkouts of the recovery's revoked links; the PSPs' checkouts
    of them still open."""
    await conn.execute(
        "UPDATE simulator_checkouts c SET closed_at = clock_timestamp()"
        " FROM recovery_links l WHERE l.id = c.link_id AND l.recovery_id = $1"
        " AND l.revoked_at IS NOT NULL AND c.closed_at IS NULL",
        recovery_id,
    )
    await conn.execute(
        "UPDATE recovery_links SET checkout_closed_at = clock_timestamp()"
        " WHERE recovery_id = $1 AND revoked_at IS NOT NULL AND checkout_psp = 'simulator'"
        " AND checkout_closed_at IS NULL",
        recovery_id,
    )
    return list(
        await conn.fetch(
            "SELECT id, merchant_id, checkout_psp, checkout_id FROM recovery_links"
            " WHERE recovery_id = $1"
            " AND revoked_at IS NOT NULL AND checkout_id IS NOT NULL"
            " AND checkout_closed_at IS NULL ORDER BY created_at",
            recovery_id,
        )
    )


async def checkout_closed(pool: asyncpg.Pool, link_id: str) -> None:
    async with connection(pool) as conn:
        await conn.execute(
            "UPDATE recovery_links SET checkout_closed_at = clock_timestamp() WHERE id = $1",
            link_id,
        )
