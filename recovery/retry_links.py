"""Issuing a retry link (a row in Postgres and a signed token), and its URL built again from
the row: messages to customers keep the link id only, and `url_of` signs the link's URL (its
own expiry) when a message is sent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from recovery.link_tokens import issue_token, link_url
from recovery.settings import Settings
from recovery.store import LinkView, Store


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


def url_of(view: LinkView, settings: Settings) -> str:
    """The link's URL, its token signed again from the row (same link id and expiry)."""
    issued = view.issued_at.replace(microsecond=0)
    token, _ = issue_token(
        settings.link_signing_secret.get_secret_value(),
        link_id=view.id,
        merchant_id=view.merchant_id,
        payment_ref=view.payment_ref,
        now=issued,
        ttl=view.expires_at - issued,
    )
    return link_url(settings.public_base_url, token)


async def notification_url(store: Store, settings: Settings, link_id: str) -> str | None:
    """What a customer notification about `link_id` links to (None: no such link)."""
    view = await store.link_page(link_id)
    return url_of(view, settings) if view is not None else None
