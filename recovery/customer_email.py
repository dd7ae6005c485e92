"""What goes in a customer's message, and when a recorded one is not sent at all."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from recovery.mail import Email, NotificationKind
from recovery.store import OutgoingNotification
from recovery.store.notifications import RECOVERY_ENDED

NO_ADDRESS = "the customer has no e-mail address"
EMAIL_OFF = "e-mail is not configured (SMTP_URL is not set)"
POLICY_OFF = "the merchant's retry policy sends no e-mail (email_customers is false)"


def why_not_send(out: OutgoingNotification, *, now: datetime, email_on: bool) -> str | None:
    """Why a queued notification must not be sent (it is then `suppressed`), or None."""
    if not out.notification.recipient:
        return NO_ADDRESS
    if not email_on:
        return EMAIL_OFF
    if out.recovery_ended and out.notification.kind != "receipt":  # a receipt comes after it
        return RECOVERY_ENDED
    if out.bounced:
        return f"an earlier message to this address {out.bounced}"
    if out.link is not None and out.link.revoked_at is not None:
        return f"its link was revoked before it was sent ({out.link.revoked_reason})"
    if out.link is not None and out.link.expires_at <= now:
        return "its link expired before it was sent"
    return None


def email_of(out: OutgoingNotification, url: str | None) -> Email:
    """The message a notification stands for (`url`: its link's, signed for sending)."""
    note = out.notification
    return Email(
        kind=cast(NotificationKind, note.kind),
        to=note.recipient or "",
        merchant_name=out.merchant_name,
        reply_to=out.reply_to,
        payment_ref=note.payment_ref,
        amount=out.amount,
        currency=out.currency,
        url=url,
        link_expires_at=out.link.expires_at if out.link else None,
    )
