"""A recovery as merchants see it: `GET /v1/recoveries/by_ref/{ref}` answers it, and every
merchant webhook about a recovery carries it as `data.recovery`. One serialisation for both."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from recovery.models import Category, RecoveryStatus

if TYPE_CHECKING:  # the store imports this module: no import of it at run time
    from recovery.store.records import RecoveryRecord


class AttemptOut(BaseModel):
    number: int
    at: datetime
    outcome: str
    code: str | None


class RecoveryLinkOut(BaseModel):
    link_id: str
    created_at: datetime
    expires_at: datetime
    opened_at: datetime | None
    used_at: datetime | None
    revoked_at: datetime | None
    revoked_reason: str | None
    issued_by: str
    checkout_closed_at: datetime | None = None  # its hosted checkout takes no more payments


class PaymentOut(BaseModel):
    """A payment the customer made, and what became of it: it `recovered` the recovery, it
    was `paid_after_end` of a cancelled or exhausted one, or it was a `duplicate` or a
    `partial` payment (less than the amount), refunded (`refund_status`)."""

    id: str
    source: str
    psp: str
    psp_payment_id: str | None
    amount: int | None
    currency: str | None
    disposition: str
    refund_status: str | None
    refund_error: str | None
    received_at: datetime
    refunded_at: datetime | None


class RecoveryOut(BaseModel):
    recovery_id: str
    payment_ref: str
    workflow_id: str
    status: RecoveryStatus
    category: Category | None
    rule: str | None
    attempts: list[AttemptOut]
    next_attempt_at: datetime | None
    next_attempt_reason: str | None
    amount: int
    currency: str
    psp: str
    started_at: datetime
    ended_at: datetime | None
    ended_reason: str | None
    policy_version: int | None
    paused: bool
    paid: bool = False
    payments: list[PaymentOut] = Field(default_factory=list)
    links: list[RecoveryLinkOut] = Field(default_factory=list)


def recovery_out(
    r: RecoveryRecord, links: Iterable[Any] = (), payments: Iterable[Any] = ()
) -> RecoveryOut:
    """The recovery as merchants see it; `links` and `payments` are the store's records of
    them (the recovery lists leave them out)."""
    return RecoveryOut(
        recovery_id=r.id,
        payment_ref=r.payment_ref,
        workflow_id=r.workflow_id,
        status=RecoveryStatus(r.status),
        category=Category(r.category) if r.category else None,
        rule=r.rule,
        attempts=[
            AttemptOut(number=a.number, at=a.at, outcome=a.outcome, code=a.code) for a in r.attempts
        ],
        next_attempt_at=r.next_attempt_at,
        next_attempt_reason=r.next_attempt_reason,
        amount=r.amount,
        currency=r.currency,
        psp=r.psp,
        started_at=r.started_at,
        ended_at=r.ended_at,
        ended_reason=r.ended_reason,
        policy_version=r.policy_version,
        paused=r.paused,
        paid=r.paid_by is not None,
        links=[RecoveryLinkOut.model_validate(link, from_attributes=True) for link in links],
        payments=[PaymentOut.model_validate(p, from_attributes=True) for p in payments],
    )


class FailureOut(BaseModel):
    code: str | None = None
    decline_code: str | None = None
    message: str | None = None
    network_advice_code: str | None = None


class FailedAttemptOut(AttemptOut):
    failure: FailureOut


class AttemptFailedOut(BaseModel):
    """`recovery.attempt_failed`'s data, besides the recovery (`recovery.merchant_events`)."""

    attempt: FailedAttemptOut
    will_retry: bool
    next_attempt_at: datetime | None
    attempts_left: int
    rule: str | None
    reason: str | None
