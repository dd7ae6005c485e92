"""`GET /v1/notifications?ref=`: the messages a merchant's recoveries sent (or held back) to
their customers, newest first. The recipient is masked: the API shows that an address was
e-mailed, not the address."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import ScopeDep, StoreDep
from recovery.mail import mask_address
from recovery.models import PaymentRef
from recovery.store import NotificationRecord

router = APIRouter(prefix="/v1/notifications", tags=["notifications"])


class Notification(BaseModel):
    id: str
    payment_ref: str
    channel: Literal["email"]
    kind: Literal["retry_link", "reminder", "receipt"]
    recipient: str | None
    """masked, e.g. `a***@example.com`"""
    status: Literal["queued", "sent", "failed", "suppressed"]
    created_at: datetime
    sent_at: datetime | None
    link_id: str | None
    error: str | None
    """why it failed or was not sent"""

    @classmethod
    def of(cls, note: NotificationRecord) -> Notification:
        return cls(
            id=f"ntf_{note.id}",
            payment_ref=note.payment_ref,
            channel="email",
            kind=note.kind,  # type: ignore[arg-type]
            recipient=mask_address(note.recipient),
            status=note.status,  # type: ignore[arg-type]
            created_at=note.created_at,
            sent_at=note.sent_at,
            link_id=note.link_id,
            error=note.error,
        )


class NotificationList(BaseModel):
    data: list[Notification]


@router.get("", response_model=NotificationList)
async def list_notifications(
    scope: ScopeDep,
    store: StoreDep,
    ref: Annotated[PaymentRef | None, Query(description="only this payment's")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> NotificationList:
    rows = await store.notifications_of(scope.merchant_id, ref, limit)
    return NotificationList(data=[Notification.of(r) for r in rows])
