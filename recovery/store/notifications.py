"""Messages to customers (`customer_notifications`): recorded once per notification key with
the retry link they carry, then marked sent, failed or suppressed by the one who sends them
(`activities/notifications.py`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from recovery.constants import OUTBOX_START_RECEIPT, receipt_workflow_id
from recovery.errors import NotFound, RecoveryFinished
from recovery.models import SendNotification
from recovery.store.db import connection, latest_recovery, lock_payment, transaction
from recovery.store.links import insert_link, link_view
from recovery.store.outbox import queue_signal
from recovery.store.policies import policy_version
from recovery.store.records import NotificationRecord, OutgoingNotification

RECOVERY_ENDED = "the recovery ended before it was sent"

_COLUMNS = (
    "id, merchant_id, payment_ref, recovery_id, channel, kind, recipient, status, link_id,"
    " subject, message_id, tries, error, created_at, sent_at"
)


def _record(row: asyncpg.Record) -> NotificationRecord:
    return NotificationRecord(**{k: row[k] for k in NotificationRecord.__dataclass_fields__})


async def record_notification(
    pool: asyncpg.Pool,
    *,
    key: str,
    merchant_id: str,
    payment_ref: str,
    kind: str,
    link_ttl: timedelta | None,
) -> NotificationRecord:
    """The notification `key` names, recorded on the payment's open recovery with a new retry
    link lasting `link_ttl` (None: no link, e.g. a receipt) the first time; the same one on
    every later call. NotFound / RecoveryFinished when there is no open recovery."""
    async with transaction(pool) as conn:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM customer_notifications WHERE notification_key = $1", key
        )
        if row is not None:
            return _record(row)
        await lock_payment(conn, merchant_id, payment_ref)
        latest = await latest_recovery(conn, merchant_id, payment_ref)
        if latest is None:
            raise NotFound(f"no recovery for payment_ref {payment_ref!r}")
        if latest.ended_at is not None:
            raise RecoveryFinished(f"the recovery of {payment_ref!r} already ended {latest.status}")
        link_id = None
        if link_ttl is not None:
            now = datetime.now(UTC).replace(microsecond=0)
            link_id = await insert_link(
                conn,
                merchant_id,
                payment_ref,
                latest.id,
                issued_by="workflow",
                expires_at=now + link_ttl,
            )
        row = await conn.fetchrow(
            "INSERT INTO customer_notifications (merchant_id, payment_ref, recovery_id,"
            " notification_key, kind, channel, recipient, link_id)"
            " SELECT $1, $2, $3, $4, $5, 'email', t.customer_email, $6 FROM transactions t"
            " WHERE t.merchant_id = $1 AND t.payment_ref = $2"
            f" RETURNING {_COLUMNS}",
            merchant_id,
            payment_ref,
            latest.id,
            key,
            kind,
            link_id,
        )
        return _record(row)


async def outgoing_notification(pool: asyncpg.Pool, notification_id: int) -> OutgoingNotification:
    """A notification with everything its message needs (NotFound for an unknown id)."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            f"SELECT {', '.join('n.' + c.strip() for c in _COLUMNS.split(','))},"
            " n.notification_key, m.name AS merchant_name, m.reply_to, t.amount, t.currency,"
            " r.ended_at IS NOT NULL AS recovery_ended,"
            " (SELECT b.error FROM customer_notifications b WHERE b.merchant_id = n.merchant_id"
            "   AND lower(b.recipient) = lower(n.recipient) AND b.bounced_at IS NOT NULL"
            "   ORDER BY b.bounced_at DESC LIMIT 1) AS bounced"
            " FROM customer_notifications n"
            " JOIN merchants m ON m.id = n.merchant_id"
            " JOIN transactions t ON t.merchant_id = n.merchant_id"
            "  AND t.payment_ref = n.payment_ref"
            " LEFT JOIN recoveries r ON r.id = n.recovery_id"
            " WHERE n.id = $1",
            notification_id,
        )
    if row is None:
        raise NotFound(f"no notification {notification_id}")
    link = await link_view(pool, row["link_id"]) if row["link_id"] else None
    return OutgoingNotification(
        notification=_record(row),
        notification_key=row["notification_key"] or f"notification:{row['id']}",
        merchant_name=row["merchant_name"],
        reply_to=row["reply_to"],
        amount=row["amount"],
        currency=row["currency"],
        recovery_ended=bool(row["recovery_ended"]),
        link=link,
        bounced=row["bounced"],
    )


async def suppress_unsent(conn: asyncpg.Connection, recovery_id: str) -> None:
    """No message goes out after its recovery ended: in the transaction that ends it, every
    one not yet sent is suppressed (a send already under way that succeeds still says so)."""
    await conn.execute(
        "UPDATE customer_notifications SET status = 'suppressed', error = $2,"
        " updated_at = clock_timestamp() WHERE recovery_id = $1 AND status = 'queued'",
        recovery_id,
        RECOVERY_ENDED,
    )


async def queue_receipt(
    conn: asyncpg.Connection, merchant_id: str, recovery_id: str, version: int | None
) -> int | None:
    """In the transaction that ends a recovery `recovered`: when its policy (`version`, the
    one it runs with) sends receipts and the payment that settled it was the customer's own
    (the retry link, a PSP's checkout: no charge of ours), record the receipt to the
    customer's address, once, and queue its sending (a CustomerReceiptWorkflow). Its id, or
    None when there is none to send."""
    if not (await policy_version(conn, merchant_id, version)).email_receipts:
        return None
    note_id: int | None = await conn.fetchval(
        "INSERT INTO customer_notifications (merchant_id, payment_ref, recovery_id,"
        " notification_key, kind, channel, recipient)"
        " SELECT r.merchant_id, r.payment_ref, r.id, 'receipt:' || r.id, 'receipt', 'email',"
        "        t.customer_email"
        "   FROM recoveries r"
        "   JOIN received_payments p ON p.id = r.paid_by"
        "   JOIN transactions t ON t.merchant_id = r.merchant_id AND t.payment_ref = r.payment_ref"
        "  WHERE r.id = $1 AND r.status = 'recovered' AND t.customer_email IS NOT NULL"
        "    AND p.source <> 'attempt'"
        "    AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.recovery_id = r.id"
        "                    AND a.psp_payment_id = p.psp_payment_id)"
        " ON CONFLICT (notification_key) DO NOTHING RETURNING id",
        recovery_id,
    )
    if note_id is not None:
        await queue_signal(
            conn,
            receipt_workflow_id(recovery_id),
            OUTBOX_START_RECEIPT,
            SendNotification(notification_id=note_id),
        )
    return note_id


async def begin_notification_try(
    pool: asyncpg.Pool, notification_id: int, *, subject: str, message_id: str
) -> None:
    """A try at sending is starting: count it, and keep what the message is."""
    async with connection(pool) as conn:
        await conn.execute(
            "UPDATE customer_notifications SET tries = tries + 1, subject = $2, message_id = $3,"
            " updated_at = clock_timestamp() WHERE id = $1",
            notification_id,
            subject,
            message_id,
        )


async def settle_notification(
    pool: asyncpg.Pool, notification_id: int, status: str, error: str | None = None
) -> NotificationRecord:
    """Record how a notification ended: sent, failed or suppressed (with why), once: a later
    call leaves an ended one as it was. `queued` with an error records a try that will be
    made again."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            "UPDATE customer_notifications SET status = $2, error = $3,"
            " sent_at = CASE WHEN $2 = 'sent' THEN clock_timestamp() END,"
            " updated_at = clock_timestamp()"
            # a message the server took is sent, even if its recovery ended meanwhile
            " WHERE id = $1 AND (status = 'queued' OR ($2 = 'sent' AND status = 'suppressed'"
            f" AND error = $4)) RETURNING {_COLUMNS}",
            notification_id,
            status,
            error[:1000] if error else None,
            RECOVERY_ENDED,
        )
        if row is None:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM customer_notifications WHERE id = $1", notification_id
            )
    if row is None:
        raise NotFound(f"no notification {notification_id}")
    return _record(row)


async def notifications_of(
    pool: asyncpg.Pool, merchant_id: str, payment_ref: str | None, limit: int
) -> list[NotificationRecord]:
    """A merchant's notifications (of one payment, when named), newest first."""
    async with connection(pool) as conn:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM customer_notifications WHERE merchant_id = $1"
            " AND ($2::text IS NULL OR payment_ref = $2) ORDER BY created_at DESC, id DESC"
            " LIMIT $3",
            merchant_id,
            payment_ref,
            limit,
        )
    return [_record(r) for r in rows]


async def record_bounce(
    pool: asyncpg.Pool, message_id: str, reason: str
) -> NotificationRecord | None:
    """The message `message_id` bounced: its notification is failed with `reason` (however it
    was recorded before: the server took it, and then it was not delivered), once; None when
    no message of ours has that id."""
    async with connection(pool) as conn:
        row = await conn.fetchrow(
            "UPDATE customer_notifications SET status = 'failed', error = $2,"
            " bounced_at = clock_timestamp(), updated_at = clock_timestamp()"
            f" WHERE message_id = $1 AND bounced_at IS NULL RETURNING {_COLUMNS}",
            message_id,
            reason[:1000],
        )
        if row is None:  # bounced already (a second report), or not ours
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM customer_notifications WHERE message_id = $1", message_id
            )
    return _record(row) if row is not None else None
