"""Stripe's vocabulary and ours: native statuses and their one exhaustive mapping each, the
request bodies we send, Stripe's objects (PaymentIntents, card errors, refunds) read as our
results, and which of its errors are transient. Pure: no I/O, tested directly."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, assert_never, cast, get_args

import stripe
from stripe.params import PaymentIntentCreateParams
from stripe.params.checkout import SessionCreateParams

from recovery.models import ChargeRequest, ChargeResult, Failure
from recovery.psp.base import (
    CheckoutRequest,
    PaymentStatus,
    PSPRequestRejected,
    RefundResult,
    RefundStatus,
    TransientPSPError,
    charge_metadata,
    checkout_metadata,
    psp_failure,
)

StripePaymentIntentStatus = Literal[
    "requires_payment_method",
    "requires_confirmation",
    "requires_action",
    "processing",
    "requires_capture",
    "canceled",
    "succeeded",
]
"""Every status of a Stripe PaymentIntent (docs.stripe.com/payments/paymentintents/lifecycle)."""

StripeRefundStatus = Literal["pending", "requires_action", "succeeded", "failed", "canceled"]

AUTHENTICATION_REQUIRED = "authentication_required"
"""Stripe's code (and decline code) for an off-session charge the issuer wants 3-D Secure for."""


# ---- errors: a card decline is a result (`declined`); the rest is transient or rejected ------


class StripeRequestRejected(PSPRequestRejected):
    """Stripe refused the request and will refuse it again: invalid parameters, an unknown
    object, a bad or revoked API key, a missing permission, an idempotency key reused with
    other parameters. Not transient: retrying with the same input cannot help."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.param = param
        self.request_id = request_id


class StripeUnexpectedResponse(StripeRequestRejected):
    """Stripe answered with something this adapter cannot map (an unknown status, no id)."""


def translate_error(err: stripe.StripeError) -> Exception:
    """Any non-card SDK error → `TransientPSPError` or `StripeRequestRejected`."""
    status = err.http_status
    what = f"Stripe {type(err).__name__}"
    if status is not None:
        what += f" (HTTP {status})"
    if err.request_id:
        what += f" [{err.request_id}]"
    message = f"{what}: {err.user_message or 'no message'}"
    transient = (
        isinstance(err, stripe.APIConnectionError | stripe.RateLimitError)
        # 409: a concurrent request holds the idempotency key (or a lock on the object)
        or status in (408, 409)
        or (status is not None and status >= 500)
        # The SDK's catch-all: an unexpected status or an unreadable body. Safe to retry:
        # the same idempotency key returns what Stripe did the first time.
        or (type(err) is stripe.APIError and not (status and 400 <= status < 500))
        or err.code == "lock_timeout"
    )
    if transient:
        return TransientPSPError(message)
    error = err.error
    return StripeRequestRejected(
        message,
        http_status=status,
        code=err.code,
        param=getattr(error, "param", None) if error is not None else None,
        request_id=err.request_id,
    )


# ---- statuses --------------------------------------------------------------------------------


def canonical_status(
    status: StripePaymentIntentStatus, error_code: str | None = None
) -> PaymentStatus:
    """Stripe's PaymentIntent status → ours. `error_code` is the `code` or `decline_code` of
    the PaymentIntent's `last_payment_error`, if any."""
    match status:
        case "succeeded":
            return PaymentStatus.SUCCEEDED
        case "processing":
            return PaymentStatus.PROCESSING
        case "requires_capture":
            # Authorised but not captured. We create PaymentIntents with automatic capture,
            # so this is a payment on its way to `succeeded`: pending, never charge again.
            return PaymentStatus.PROCESSING
        case "requires_action":
            # 3-D Secure or another customer step: only the customer can finish it.
            return PaymentStatus.REQUIRES_ACTION
        case "requires_confirmation":
            # Not confirmed yet (we always confirm on create, so not ours): nothing was
            # charged and someone must still act on it.
            return PaymentStatus.REQUIRES_ACTION
        case "requires_payment_method":
            # The attempt failed. An off-session charge the issuer wants authenticated also
            # lands here, with `authentication_required`: that one is for the customer.
            if error_code == AUTHENTICATION_REQUIRED:
                return PaymentStatus.REQUIRES_ACTION
            return PaymentStatus.FAILED
        case "canceled":
            return PaymentStatus.CANCELED
        case _:
            assert_never(status)


def refund_status(status: StripeRefundStatus) -> RefundStatus:
    match status:
        case "succeeded":
            return "succeeded"
        case "pending" | "requires_action":
            return "pending"
        case "failed" | "canceled":
            return "failed"
        case _:
            assert_never(status)


# ---- requests --------------------------------------------------------------------------------


def payment_intent_params(req: ChargeRequest, payment_method: str) -> PaymentIntentCreateParams:
    """An off-session PaymentIntent on the saved method, created and confirmed in one call."""
    params: PaymentIntentCreateParams = {
        "amount": req.amount,
        "currency": req.currency,
        "payment_method": payment_method,
        "off_session": True,
        "confirm": True,
        # The customer is not here to be redirected anywhere: redirect-based methods are
        # excluded, which is also what lets Stripe confirm without a `return_url`.
        "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
        "metadata": charge_metadata(req),
    }
    if req.customer.id:
        params["customer"] = req.customer.id
    return params


def attempt_search_query(req: ChargeRequest) -> str:
    """Stripe Search's query for the PaymentIntents of this attempt (by our metadata)."""
    recovery_id = req.recovery_id.replace("\\", "\\\\").replace("'", "\\'")
    return f"metadata['recovery_id']:'{recovery_id}' AND metadata['attempt']:'{req.attempt}'"


def made_by(intent: Mapping[str, Any], req: ChargeRequest) -> bool:
    """Did this attempt create this PaymentIntent (by its metadata)?"""
    metadata = intent.get("metadata") or {}
    ours = {"recovery_id": req.recovery_id, "attempt": str(req.attempt)}
    return all(metadata.get(k) == v for k, v in ours.items())


CHECKOUT_MIN_LIFETIME = 30 * 60 + 60
CHECKOUT_MAX_LIFETIME = 24 * 3600 - 60
"""Stripe takes `expires_at` 30 minutes to 24 hours after a session's creation
(docs.stripe.com/api/checkout/sessions/create#create_checkout_session-expires_at); a minute
of margin each side for the clocks."""


def checkout_expiry(link_expires_at: datetime | None, now: float) -> int:
    """The session's `expires_at`: the link's expiry, within what Stripe accepts. A link
    that expires sooner than Stripe allows is closed with its link instead (`close_checkout`
    when it is revoked, used, or its recovery ends)."""
    wanted = link_expires_at.timestamp() if link_expires_at else now + CHECKOUT_MAX_LIFETIME
    return int(min(max(wanted, now + CHECKOUT_MIN_LIFETIME), now + CHECKOUT_MAX_LIFETIME))


def checkout_session_params(req: CheckoutRequest, now: float) -> SessionCreateParams:
    metadata = checkout_metadata(req)
    params: SessionCreateParams = {
        "mode": "payment",
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": req.currency,
                    "unit_amount": req.amount,
                    "product_data": {"name": req.description},
                },
            }
        ],
        "success_url": req.success_url,
        "cancel_url": req.cancel_url,
        "client_reference_id": req.payment_ref,
        "metadata": metadata,
        # The PaymentIntent the session creates carries the ids too, so the
        # `payment_intent.*` webhooks of a hosted-page payment find the recovery.
        "payment_intent_data": {"metadata": metadata},
        "expires_at": checkout_expiry(req.expires_at, now),
    }
    if req.customer.id:
        params["customer"] = req.customer.id
        # the card the customer pays with is kept for the next off-session attempts
        params["payment_intent_data"]["setup_future_usage"] = "off_session"
    elif req.customer.email:
        params["customer_email"] = req.customer.email
    return params


# ---- responses -------------------------------------------------------------------------------


def charge_result(intent: Mapping[str, Any]) -> ChargeResult:
    """A PaymentIntent (as a dict) → our `ChargeResult`."""
    intent_id, status = intent.get("id"), intent.get("status")
    if not isinstance(intent_id, str):
        raise StripeUnexpectedResponse("Stripe returned a PaymentIntent without an id")
    if status not in get_args(StripePaymentIntentStatus):
        raise StripeUnexpectedResponse(f"unknown PaymentIntent status {status!r} ({intent_id})")
    error = intent.get("last_payment_error")
    failure = failure_from_error(error) if isinstance(error, Mapping) else None
    canonical = canonical_status(cast(StripePaymentIntentStatus, status), _auth_code(failure))
    match canonical:
        case PaymentStatus.SUCCEEDED:
            failure = None
            if _fully_refunded(intent.get("latest_charge")):
                canonical = PaymentStatus.REFUNDED
        case PaymentStatus.REQUIRES_ACTION if failure is None:
            failure = Failure(
                code=AUTHENTICATION_REQUIRED,
                message=f"the customer must complete a step on this payment ({status})",
            )
        case _:
            pass
    return ChargeResult(status=canonical.value, psp_payment_id=intent_id, failure=failure)


def declined(err: stripe.CardError) -> ChargeResult:
    """A 402 card error → a `failed` (or `requires_action`) result carrying Stripe's codes."""
    body = err.json_body if isinstance(err.json_body, dict) else {}
    found = body.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    failure = failure_from_error(error, code=err.code, message=err.user_message)
    intent = error.get("payment_intent")
    intent_status = intent.get("status") if isinstance(intent, Mapping) else None
    if intent_status in get_args(StripePaymentIntentStatus):
        status = canonical_status(
            cast(StripePaymentIntentStatus, intent_status), _auth_code(failure)
        )
    elif _auth_code(failure):
        status = PaymentStatus.REQUIRES_ACTION
    else:
        status = PaymentStatus.FAILED
    if status not in (PaymentStatus.REQUIRES_ACTION, PaymentStatus.CANCELED):
        status = PaymentStatus.FAILED  # a card error never means the money moved
    return ChargeResult(status=status.value, psp_payment_id=object_id(intent), failure=failure)


def failure_from_error(
    error: Mapping[str, Any], *, code: str | None = None, message: str | None = None
) -> Failure:
    """Stripe's error object (a 402 body's `error`, or a PaymentIntent's
    `last_payment_error`) → `Failure`. The card network's advice (`network_advice_code`) wins
    over Stripe's summary of it (`advice_code`); the classifier accepts both in one field."""
    return psp_failure(
        error.get("code") or code,
        error.get("decline_code"),
        error.get("message") or message,
        error.get("network_advice_code") or error.get("advice_code"),
    )


def refund_result(refund: dict[str, Any], amount: int | None = None) -> RefundResult:
    status = refund.get("status")
    if status not in get_args(StripeRefundStatus) or not isinstance(refund.get("id"), str):
        raise StripeUnexpectedResponse(f"unexpected refund from Stripe (status {status!r})")
    return RefundResult(
        psp_refund_id=refund["id"],
        status=refund_status(cast(StripeRefundStatus, status)),
        amount=int(refund.get("amount") or amount or 0),
    )


def object_id(value: Any) -> str | None:
    """An expandable field: an id, an expanded object, or nothing."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return value["id"]
    return None


def _auth_code(failure: Failure | None) -> str | None:
    if failure and AUTHENTICATION_REQUIRED in (failure.code, failure.decline_code):
        return AUTHENTICATION_REQUIRED
    return None


def _fully_refunded(charge: Any) -> bool:
    """`latest_charge` is an id unless expanded; only an expanded one says it was refunded."""
    return isinstance(charge, Mapping) and charge.get("refunded") is True
