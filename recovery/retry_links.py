"""Issuing a retry link: a row in Postgres, a signed token, and (for links the workflow
sends) a message for the customer waiting for the delivery integration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from recovery.links import issue_token, link_url
from recovery.settings import Settings
from recovery.store import Store


@dataclass(frozen=True)
class IssuedLink:
    link_id: str
    recovery_id: str
    url: str
    expires_at: datetime


async def issue_link(
    store: Store, settings: Settings, merchant_id: str, payment_ref: str, issued_by: str
) -> IssuedLink:
    """404 for an unknown payment, 409 for an ended recovery (from the store)."""
    now = datetime.now(UTC).replace(microsecond=0)
    ttl = timedelta(seconds=settings.link_ttl_seconds)
    link_id, recovery_id = await store.add_link(
        merchant_id, payment_ref, issued_by=issued_by, expires_at=now + ttl
    )
    token, expires_at = issue_token(
        settings.link_signing_secret.get_secret_value(),
        link_id=link_id,
        merchant_id=merchant_id,
        payment_ref=payment_ref,
        now=now,
        ttl=ttl,
    )
    return IssuedLink(link_id, recovery_id, link_url(settings.public_base_url, token), expires_at)
