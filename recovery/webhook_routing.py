"""What a verified PSP webhook means for a recovery.

Pure decisions over what the store read under the payment's row lock; the store records the
event, reads the facts, and queues whatever signal the decision names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import assert_never

from recovery.models import (
    Customer,
    Failure,
    FailureEvent,
    PaymentMethod,
    PaymentSucceeded,
    WebhookEvent,
)
from recovery.payments import Disposition

_NOT_FOR_A_RECOVERY = ("ignored", "payment_refunded", "checkout_closed")
_FOR_A_CUSTOMER = ("payment_method_updated",)  # the store finds the customer's recoveries
_PAID = ("payment_succeeded", "checkout_completed", "checkout_partially_paid")


class WebhookOutcome(StrEnum):
    """What became of a webhook event (stored with it, and in the webhook's answer)."""

    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    PAYMENT_REFUNDED = "payment_refunded"
    UNKNOWN_PAYMENT = "unknown_payment"
    SIGNALLED_PAYMENT_SUCCEEDED = "signalled_payment_succeeded"
    ALREADY_KNOWN = "already_known"
    RECOVERY_ENDED = "recovery_ended"
    SIGNALLED_PAYMENT_FAILED = "signalled_payment_failed"
    PAYMENT_ALREADY_RECORDED = "payment_already_recorded"  # e.g. our own charge's event
    PAID_AFTER_END = "paid_after_end"
    REFUNDING_DUPLICATE = "refunding_duplicate_payment"
    REFUNDING_PARTIAL = "refunding_partial_payment"  # less than the amount: settles nothing
    CHECKOUT_CLOSED = "checkout_closed"  # our link's hosted checkout takes no more payments
    CHECKOUT_PAYMENT_FAILED = "checkout_payment_failed"  # the customer's try on our checkout
    OTHER_MERCHANT = "other_merchant"  # a merchant's own account naming another's payment
    SIGNALLED_PAYMENT_METHOD_UPDATED = "signalled_payment_method_updated"
    NO_OPEN_RECOVERY = "no_open_recovery"  # a new method of a customer with nothing to recover
    TOKEN_RECORDED = "token_recorded"  # a confirmed token whose customer is not known yet


@dataclass(frozen=True)
class OpenRecovery:
    """The payment's running recovery, with what its transaction says about the payment."""

    recovery_id: str
    psp: str
    amount: int
    currency: str
    customer_id: str | None
    customer_email: str | None
    payment_method_type: str | None
    payment_method_id: str | None


@dataclass(frozen=True)
class PaymentFacts:
    """What the store knows about the payment a webhook names (which it has locked)."""

    open_recovery: OpenRecovery | None
    failure_already_known: bool  # an attempt of ours already failed with this PSP payment id


@dataclass(frozen=True)
class WebhookRoute:
    outcome: WebhookOutcome
    succeeded: PaymentSucceeded | None = None  # queue for the payment's workflow
    failed: FailureEvent | None = None  # record and queue for the open recovery


def paid_route(route: WebhookRoute, disposition: Disposition | None) -> WebhookRoute:
    """A payment event, once the ledger has it: signal the recovery only when it settles a
    running one (None: the ledger had this payment already)."""
    match disposition:
        case None:
            return WebhookRoute(WebhookOutcome.PAYMENT_ALREADY_RECORDED)
        case Disposition.RECOVERED:
            return route
        case Disposition.PAID_AFTER_END:
            return WebhookRoute(WebhookOutcome.PAID_AFTER_END)
        case Disposition.DUPLICATE:
            return WebhookRoute(WebhookOutcome.REFUNDING_DUPLICATE)
        case Disposition.PARTIAL:
            return WebhookRoute(WebhookOutcome.REFUNDING_PARTIAL)
        case other:
            assert_never(other)


def other_merchant(event: WebhookEvent, account: str | None) -> bool:
    """A merchant's own PSP account (`account`) speaks for that merchant's payments only: an
    event whose metadata names another merchant acts on nothing (tenant isolation)."""
    return account is not None and event.merchant_id not in (None, account)


def names_a_payment(event: WebhookEvent, account: str | None = None) -> bool:
    """Whether the event may concern one of our payments: then the store locks and reads it."""
    return (
        event.kind not in _NOT_FOR_A_RECOVERY + _FOR_A_CUSTOMER
        and bool(event.merchant_id and event.payment_ref)
        and not other_merchant(event, account)
    )


def route_webhook(
    event: WebhookEvent,
    facts: PaymentFacts | None,
    *,
    now: datetime,
    account: str | None = None,
) -> WebhookRoute:
    """`facts` is None when the event names no payment of ours. `account`: the merchant
    whose own PSP account sent the event (None: the environment's accounts)."""
    if other_merchant(event, account):
        return WebhookRoute(WebhookOutcome.OTHER_MERCHANT)
    if event.kind in _NOT_FOR_A_RECOVERY:
        return WebhookRoute(WebhookOutcome(event.kind))
    if event.kind in _FOR_A_CUSTOMER:
        return WebhookRoute(WebhookOutcome.NO_OPEN_RECOVERY)  # the store signals any it finds
    if facts is None or not (event.merchant_id and event.payment_ref):
        return WebhookRoute(WebhookOutcome.UNKNOWN_PAYMENT)
    if event.kind in _PAID:
        return WebhookRoute(
            WebhookOutcome.SIGNALLED_PAYMENT_SUCCEEDED,
            succeeded=PaymentSucceeded(
                source=f"{event.psp}_webhook",
                event_id=event.event_id,
                psp_payment_id=event.psp_payment_id,
            ),
        )
    # payment_failed. On one of our hosted checkouts it is the customer's own try, who may
    # try again on the same page: not a failure of the recovery (no new decision, no
    # cooldown started over, no end), only recorded.
    if event.link_id:
        return WebhookRoute(WebhookOutcome.CHECKOUT_PAYMENT_FAILED)
    # a failure we already know from the attempt that made it is not sent again
    if facts.failure_already_known:
        return WebhookRoute(WebhookOutcome.ALREADY_KNOWN)
    rec = facts.open_recovery
    if rec is None:
        return WebhookRoute(WebhookOutcome.RECOVERY_ENDED)
    failed = FailureEvent(
        event_id=f"{event.psp}:{event.event_id}",
        recovery_id=rec.recovery_id,
        merchant_id=event.merchant_id,
        payment_ref=event.payment_ref,
        psp=rec.psp,
        amount=rec.amount,
        currency=rec.currency,
        customer=Customer(id=rec.customer_id, email=rec.customer_email),
        payment_method=PaymentMethod(
            type=rec.payment_method_type or "card", id=rec.payment_method_id
        ),
        failure=event.failure or Failure(code="payment_failed"),
        occurred_at=now,
    )
    return WebhookRoute(WebhookOutcome.SIGNALLED_PAYMENT_FAILED, failed=failed)
