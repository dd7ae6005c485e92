"""Razorpay's vocabulary and ours: native statuses and their one exhaustive mapping each
(like hyperswitch's Razorpay connector), Razorpay's ``error`` object and which errors are
transient, the request bodies we send, and Razorpay's entities (payments, refunds, tokens)
read as our results. Pure: no I/O. A status this module does not know is an error
(`RazorpayResponseError`), never a guess."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeGuard, assert_never, get_args

from recovery.errors import RecoveryError
from recovery.models import CardIdentity, ChargeRequest, ChargeResult, Failure
from recovery.psp.base import (
    CheckoutRequest,
    PaymentStatus,
    PSPRequestRejected,
    RefundResult,
    RefundStatus,
    TransientPSPError,
    charge_metadata,
    checkout_metadata,
    clip,
    psp_failure,
)

if TYPE_CHECKING:
    import requests

MAX_REFERENCE_LENGTH = 40
"""Razorpay's limit for an order's or refund's ``receipt`` and a link's ``reference_id``."""

MIN_LINK_LIFETIME = 16 * 60
"""A Payment Link's `expire_by` is kept at least this far ahead: the customer is about to pay
(it is closed with its link anyway, by `close_checkout`)."""

# ---- native statuses and their one mapping each ----------------------------------------------

RazorpayPaymentStatus = Literal["created", "authorized", "captured", "refunded", "failed"]
"""Payment entity ``status`` (razorpay.com/docs/api/payments: "Payment States")."""

RazorpayRefundStatus = Literal["pending", "processed", "failed"]
"""Refund entity ``status`` (razorpay.com/docs/api/refunds)."""

_PAYMENT_STATUSES: frozenset[str] = frozenset(get_args(RazorpayPaymentStatus))
_REFUND_STATUSES: frozenset[str] = frozenset(get_args(RazorpayRefundStatus))


def map_payment_status(status: RazorpayPaymentStatus) -> PaymentStatus:
    """Razorpay payment status -> canonical status. Exhaustive: a new native status is a
    type error here."""
    match status:
        case "created":
            # Accepted, not yet authorised (file-based banks can take a working day).
            return PaymentStatus.PROCESSING
        case "authorized":
            # Our orders are created with payment_capture=true, so Razorpay captures an
            # authorised payment by itself; until it does the money is not ours yet. (An
            # authorised payment nobody captures is auto-refunded and ends `refunded`.)
            return PaymentStatus.PROCESSING
        case "captured":
            return PaymentStatus.SUCCEEDED
        case "refunded":
            return PaymentStatus.REFUNDED
        case "failed":
            return PaymentStatus.FAILED
        case _:
            assert_never(status)


def map_refund_status(status: RazorpayRefundStatus) -> RefundStatus:
    match status:
        case "pending":
            return "pending"
        case "processed":
            return "succeeded"
        case "failed":
            return "failed"
        case _:
            assert_never(status)


def _is_payment_status(value: object) -> TypeGuard[RazorpayPaymentStatus]:
    return isinstance(value, str) and value in _PAYMENT_STATUSES


def _is_refund_status(value: object) -> TypeGuard[RazorpayRefundStatus]:
    return isinstance(value, str) and value in _REFUND_STATUSES


# ---- errors ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RazorpayErrorBody:
    """Razorpay's ``error`` object (razorpay.com/docs/errors) plus the HTTP status."""

    http_status: int | None
    code: str | None = None
    description: str | None = None
    field: str | None = None
    source: str | None = None
    step: str | None = None
    reason: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_response(cls, response: requests.Response | None) -> RazorpayErrorBody:
        if response is None:
            return cls(http_status=None)
        try:
            body = response.json()
        except ValueError:
            return cls(http_status=response.status_code)
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return cls(http_status=response.status_code)
        metadata = error.get("metadata")
        return cls(
            http_status=response.status_code,
            code=text(error.get("code")),
            description=text(error.get("description")),
            field=text(error.get("field")),
            source=text(error.get("source")),
            step=text(error.get("step")),
            reason=text(error.get("reason")),
            metadata=metadata if isinstance(metadata, dict) else {},
        )

    def summary(self) -> str:
        parts = [f"HTTP {self.http_status}" if self.http_status else "no response"]
        parts += [p for p in (_na(self.code), _na(self.reason), _na(self.description)) if p]
        return ": ".join(parts)


class RazorpayError(RecoveryError, PSPRequestRejected):
    """Razorpay refused a request, or answered something this adapter cannot read: our
    side must change something, so retrying the same call cannot help (not transient)."""

    status = 502
    code = "psp_request_failed"

    def __init__(
        self,
        message: str,
        *,
        error: RazorpayErrorBody | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message, field=field or (error.field if error else None))
        self.error = error


class RazorpayRequestError(RazorpayError):
    """A request Razorpay rejected (``BAD_REQUEST_ERROR``: a missing or invalid field, an
    unknown id) or one we refuse to send (no customer id or token)."""


class RazorpayAuthError(RazorpayRequestError):
    """HTTP 401: the key id / key secret are wrong."""

    code = "psp_auth_failed"


class RazorpayIdempotencyConflict(RazorpayRequestError):
    """The idempotency key was used before for a different amount or currency."""

    code = "psp_idempotency_conflict"


class RazorpayResponseError(RazorpayError):
    """Razorpay answered something we cannot interpret (unknown status, bad signature)."""


class RazorpayConfigError(RazorpayError):
    """The adapter was built without the credentials it needs."""

    status = 500
    code = "psp_not_configured"


class RazorpayTransientError(TransientPSPError):
    """A timeout, connection error, 429, 5xx or ``SERVER_ERROR`` / ``GATEWAY_ERROR``."""

    def __init__(self, message: str, *, error: RazorpayErrorBody | None = None) -> None:
        super().__init__(message)
        self.error = error


_TRANSIENT_CODES = frozenset({"SERVER_ERROR", "GATEWAY_ERROR"})
_VALIDATION_REASONS = frozenset({"input_validation_failed"})


def classify_error(operation: str, error: RazorpayErrorBody) -> Exception:
    """The exception for an error response (or an unreadable one)."""
    status = error.http_status
    message = f"Razorpay {operation} failed ({error.summary()})"
    if status == 401:
        return RazorpayAuthError(message, error=error)
    if status is None or status in (409, 429) or status >= 500:
        # 409: the same idempotent request is still being processed (refunds): ask again
        return RazorpayTransientError(message, error=error)
    if (error.code or "").upper() in _TRANSIENT_CODES:
        return RazorpayTransientError(message, error=error)
    if 200 <= status < 300:  # a 2xx whose body was not JSON: a proxy, not Razorpay
        return RazorpayTransientError(message, error=error)
    return RazorpayRequestError(message, error=error)


def is_payment_failure(error: RazorpayErrorBody) -> bool:
    """Is this error answer to a payment request a *declined payment* (a result) rather
    than a request we got wrong? Razorpay names the payment it created and failed in
    ``metadata.payment_id``; a decline without one still carries a reason that is not
    input validation, and names no request field."""
    if error.http_status is None or error.http_status in (401, 429) or error.http_status >= 500:
        return False
    if error.metadata.get("payment_id"):
        return True
    reason = _na(error.reason)
    return reason is not None and reason not in _VALIDATION_REASONS and _na(error.field) is None


# ---- requests --------------------------------------------------------------------------------


def reference_for(idempotency_key: str) -> str:
    """A deterministic id of at most 40 characters for Razorpay's ``receipt`` /
    ``reference_id``: the key itself when it fits, else ``h_`` + 38 hex chars of its
    SHA-256 (152 bits: collisions are not a concern)."""
    if not idempotency_key:
        raise RazorpayRequestError("an idempotency key is required", field="idempotency_key")
    if len(idempotency_key) <= MAX_REFERENCE_LENGTH:
        return idempotency_key
    return "h_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[: MAX_REFERENCE_LENGTH - 2]


def refund_idempotency_header(idempotency_key: str) -> str:
    """Our refund key as Razorpay's ``X-Refund-Idempotency`` accepts one: at least 10 of
    ``[A-Za-z0-9_-]`` (razorpay.com/docs/api/refunds/normal-refunds-idempotent). A key that
    already is one is used as is; any other is its readable part plus a hash of it."""
    if re.fullmatch(r"[A-Za-z0-9_-]{10,64}", idempotency_key):
        return idempotency_key
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", idempotency_key)[:40]
    return f"{readable}-{hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]}"


def order_body(req: ChargeRequest, receipt: str) -> dict[str, Any]:
    """The attempt's order: captured automatically, found again by its receipt."""
    return {
        "amount": req.amount,
        "currency": req.currency.upper(),
        "receipt": receipt,
        "payment_capture": True,
        "notes": charge_metadata(req),
    }


def recurring_payment_body(
    req: ChargeRequest, order_id: str, customer: Mapping[str, Any]
) -> dict[str, Any]:
    """A recurring payment on the saved token. ``contact`` is mandatory and our `Customer`
    has no phone number, so it (and the email, when the event had none) comes from the
    Razorpay customer; when that has none either the request is sent anyway and Razorpay
    names the missing field (a `RazorpayRequestError`)."""
    body: dict[str, Any] = {
        "email": req.customer.email or customer.get("email"),
        "contact": customer.get("contact"),
        "amount": req.amount,
        "currency": req.currency.upper(),
        "order_id": order_id,
        "customer_id": req.customer.id,
        "token": req.payment_method.id,
        "recurring": "1",
        "description": f"Payment recovery for {req.payment_ref} (attempt {req.attempt})",
        "notes": charge_metadata(req),
    }
    return {k: v for k, v in body.items() if v is not None}


def refund_body(amount: int | None, idempotency_key: str) -> dict[str, Any]:
    """The ``receipt`` and notes carry our key too, for reconciliation; `amount` None
    refunds the whole (remaining) amount."""
    body: dict[str, Any] = {
        "receipt": reference_for(idempotency_key),
        "notes": {"idempotency_key": idempotency_key[:256]},
    }
    if amount is not None:
        body["amount"] = amount
    return body


def payment_link_body(req: CheckoutRequest, reference_id: str, now: float) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": req.amount,
        "currency": req.currency.upper(),
        "accept_partial": False,
        "description": req.description,
        "reference_id": reference_id,
        "notify": {"sms": False, "email": False},
        "reminder_enable": False,
        "callback_url": req.success_url,
        "callback_method": "get",
        "notes": checkout_metadata(req),
    }
    if req.customer.email:
        body["customer"] = {"email": req.customer.email}
    if req.expires_at is not None:  # the link takes no money after our link expired
        body["expire_by"] = max(int(req.expires_at.timestamp()), int(now) + MIN_LINK_LIFETIME)
    return body


# ---- responses -------------------------------------------------------------------------------


def failure_from_payment(payment: Mapping[str, Any]) -> Failure:
    """Our classifier's inputs from a failed payment entity: ``code`` = ``error_code``,
    ``decline_code`` = ``error_reason``, ``message`` = ``error_description``."""
    failure = psp_failure(
        _na(text(payment.get("error_code"))),
        _na(text(payment.get("error_reason"))),
        _na(text(payment.get("error_description"))),
    )
    if failure.is_empty():
        return Failure(message="Razorpay reported the payment failed without an error code")
    return failure


def failure_from_error(error: RazorpayErrorBody) -> Failure:
    failure = psp_failure(_na(error.code), _na(error.reason), _na(error.description))
    return failure if not failure.is_empty() else Failure(code="BAD_REQUEST_ERROR")


RECURRING_DEBIT_PENDING = "recurring_debit_pending"
"""Our code for a debit on a card or UPI token that Razorpay has accepted and not yet made:
it waits out the 24 h pre-debit notice and Razorpay's retries ("it may take between 24-36
hours for the subsequent payment to reflect", "do not create another subsequent payment
until you get the status of the previous one": Razorpay, "Create Subsequent Payments",
razorpay.com/docs/payments/payment-gateway/s2s-integration/recurring-payments/upi/
subsequent-payments)."""
MANDATE_DEBIT_PENDING = "mandate_debit_pending"
"""The same for a bank-account mandate (``emandate``, ``nach``): banks debit those in files,
in working-day cycles ("the payment entity returned will be in the created state since the
charge system of these banks are file-based": the same page), so it takes days."""
_MANDATE_METHODS = frozenset({"emandate", "nach"})
_TOKEN_STATES = frozenset(
    {"initiated", "paused", "cancelled", "cancellation_initiated", "rejected", "failed"}
)
"""Mandate states (``recurring_details.status``) a debit fails on, each its own code."""


def pending_debit(payment: Mapping[str, Any]) -> Failure | None:
    """What a recurring debit still ``created`` at Razorpay tells the classifier (how long
    it may take), or None when the payment is no such debit."""
    if payment.get("status") != "created" or not payment.get("token_id"):
        return None
    if payment.get("method") in _MANDATE_METHODS:
        return Failure(
            code=MANDATE_DEBIT_PENDING,
            message="the mandate debit is with the customer's bank (file-based, days)",
        )
    return Failure(
        code=RECURRING_DEBIT_PENDING,
        message="the recurring debit waits out the pre-debit notice (24-36 hours)",
    )


LATE_AUTH_REASONS = frozenset(
    {"payment_timed_out", "bank_technical_error", "gateway_technical_error"}
)
"""Failure reasons that mean the bank gave no answer in time. Razorpay then "polls the APIs
intermittently for 3 days to check the status" and moves a payment the bank did take to
`authorized` (and, our orders being auto-capture, `captured`): "Late Authorisation",
razorpay.com/docs/payments/payments/late-authorisation."""
LATE_AUTH_WINDOW = timedelta(days=3, hours=12)
"""How long such a failed payment may still complete: Razorpay's 3 days, and a margin."""


def charge_result(payment: Mapping[str, Any]) -> ChargeResult:
    """A payment entity as our canonical result (a pending recurring debit says how long it
    may take, `pending_debit`; a failed one the bank never answered may still complete)."""
    native = payment.get("status")
    if not _is_payment_status(native):
        raise RazorpayResponseError(f"Razorpay payment has an unknown status {native!r}")
    status = map_payment_status(native)
    failure = failure_from_payment(payment) if status is PaymentStatus.FAILED else None
    late = None
    if failure is not None and failure.decline_code in LATE_AUTH_REASONS:
        created = payment.get("created_at")
        if isinstance(created, int):
            late = datetime.fromtimestamp(created, UTC) + LATE_AUTH_WINDOW
    return ChargeResult(
        status=status.value,
        psp_payment_id=text(payment.get("id")),
        failure=failure or pending_debit(payment),
        may_complete_until=late,
    )


def refund_result(refund: Mapping[str, Any]) -> RefundResult:
    native = refund.get("status")
    if not _is_refund_status(native):
        raise RazorpayResponseError(f"Razorpay refund has an unknown status {native!r}")
    return RefundResult(
        psp_refund_id=str(refund.get("id")),
        status=map_refund_status(native),
        amount=int(refund.get("amount") or 0),
    )


def pick_payment(payments: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The payment that decides an order's outcome: the latest one that succeeded or may
    still succeed, else the latest failed one."""
    ordered = sorted(payments, key=lambda p: int(p.get("created_at") or 0), reverse=True)
    for payment in ordered:
        if payment.get("status") != "failed":
            return payment
    return ordered[0] if ordered else None


def mandate_refusal(token: Mapping[str, Any], amount: int) -> Failure | None:
    """Why the token cannot be debited now, or None. Only a ``confirmed`` mandate can be
    debited; one ``paused``, ``cancelled``, ``rejected`` (or on its way there), expired,
    or with a ``max_amount`` below the amount fails ("Token States",
    razorpay.com/docs/api/payments/recurring-payments/upi/tokens). A token without
    ``recurring_details`` (a saved card of the checkout) is not checked."""
    details = token.get("recurring_details")
    state = details.get("status") if isinstance(details, dict) else None
    if state is not None and state != "confirmed":
        return Failure(
            code="BAD_REQUEST_ERROR",
            decline_code=f"token_{state}" if state in _TOKEN_STATES else "token_not_confirmed",
            message=f"the customer's Razorpay mandate is {state}",
        )
    expired_at = token.get("expired_at")
    if isinstance(expired_at, int) and expired_at <= time.time():
        return Failure(
            code="BAD_REQUEST_ERROR",
            decline_code="token_expired",
            message="the customer's Razorpay mandate expired",
        )
    max_amount = token.get("max_amount")
    if isinstance(max_amount, int) and amount > max_amount:
        return Failure(
            code="BAD_REQUEST_ERROR",
            decline_code="token_amount_over_limit",
            message=f"the amount is over the mandate's limit of {max_amount}",
        )
    return None


def card_identity(token: Mapping[str, Any], token_id: str) -> CardIdentity:
    """The card behind a saved token: keyed by the token's card id when Razorpay gives one,
    else by the token; the brand is the card's ``network`` (``Visa``, ``RuPay``, ...)."""
    found = token.get("card")
    card: Mapping[str, Any] = found if isinstance(found, dict) else {}
    card_id = short(card.get("id"))
    return CardIdentity(
        key=f"razorpay:card:{card_id}" if card_id else f"razorpay:token:{token_id}",
        brand=short(card.get("network")),
        payment_method_id=token_id,
    )


def signed_by(secret: str, message: bytes, signature: str | None) -> bool:
    """Is `signature` the hex HMAC-SHA256 of `message` keyed with `secret`? Compared in
    constant time; Razorpay's signatures on payments and on webhooks are all made so."""
    if not signature:
        return False
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.strip().lower().encode())


# ---- reading Razorpay's JSON -----------------------------------------------------------------

_NOT_APPLICABLE = frozenset({"", "NA", "na", "null"})


def text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _na(value: str | None) -> str | None:
    """Razorpay fills error fields that do not apply with "NA"."""
    return None if value is None or value.strip() in _NOT_APPLICABLE else value


def short(value: object) -> str | None:
    """A short field (an id, a network name) without Razorpay's "NA"."""
    return clip(_na(text(value)))


def notes(entity: Mapping[str, Any] | None) -> dict[str, Any]:
    """An entity's notes. Razorpay sends empty notes as ``[]``."""
    found = entity.get("notes") if entity else None
    return found if isinstance(found, dict) else {}


def items(collection: Mapping[str, Any], key: str = "items") -> list[dict[str, Any]]:
    found = collection.get(key)
    return [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []


def lower(currency: object) -> str | None:
    return currency.lower() if isinstance(currency, str) else None
