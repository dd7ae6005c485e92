"""Razorpay adapter: recurring charges on a saved token, Payment Links, refunds, webhooks.

Built on the official `razorpay` SDK (``razorpay.Client``), which is synchronous. Every
operation is a plain sync method (``*_sync``; a sync Temporal activity may call those
directly), and the async `PSPAdapter` interface runs them on this adapter's own bounded
``ThreadPoolExecutor`` (``loop.run_in_executor``), so a slow Razorpay never blocks the event
loop and never takes more than ``max_workers`` threads. Each worker thread has its own
``razorpay.Client`` and ``requests.Session`` (a Session is not documented as thread-safe).
An awaiting task that is cancelled does not stop the HTTP call already running in its
thread; the call ends at ``timeout`` at the latest, and idempotency (below) makes the
activity's retry safe either way.

Flow of a charge (Razorpay "Recurring Payments - Cards/eMandate/UPI: 3. Create Subsequent
Payments", razorpay.com/docs/api/payments/recurring-payments/*/create-subsequent-payments,
and the SDK's ``documents/card.md``):

1. ``GET /v1/orders?receipt=<ref>``: an order for this attempt may exist already (a retried
   activity). If it has a payment, that payment's result is returned and nothing is charged
   (``GET /v1/orders/{id}/payments``).
2. ``POST /v1/orders`` (amount, currency, ``receipt`` = ``ref``, ``payment_capture`` true,
   notes) when there is no order yet.
3. ``GET /v1/customers/{id}``: ``contact`` is mandatory on a recurring payment and our
   `Customer` carries no phone number, so contact (and the email, when the event had none)
   come from the Razorpay customer that owns the token.
4. ``POST /v1/payments/create/recurring`` (email, contact, amount, currency, order_id,
   customer_id, token, ``recurring: "1"``, description, notes). Razorpay answers
   ``{razorpay_payment_id, razorpay_order_id, razorpay_signature}``; the signature
   (HMAC-SHA256 of ``order_id|payment_id`` with the key secret) is checked, then
   ``GET /v1/payments/{id}`` gives the status. A declined token may instead be answered
   with HTTP 400 and an ``error`` object (reason, and the payment id in ``metadata``):
   that is a failed *result* carrying the codes, not an exception.

Idempotency: Razorpay has no idempotency header for these calls, so the attempt's
``idempotency_key`` becomes the order's ``receipt`` (`reference_for`: the key itself when it
fits Razorpay's 40 characters, else a deterministic hash of it), and the order is looked up
by receipt before anything is created. One order per key, one payment per order. An order
that counts an attempt (``attempts`` > 0) but whose payment Razorpay does not list yet makes
the retry wait (a transient error) instead of charging again. A new order is charged only once
the receipt lookup lists it (Razorpay's listing may lag a new order; a retry that could not
see it would make a second one and charge that too). Limits: ``receipt`` is not
unique at Razorpay, so two executions of the same attempt running *at the same time* could
both find nothing and both create an order (Temporal runs one execution of an activity at a
time; they only overlap when a timed-out execution is still running, which is why a charge's
whole chain of calls runs within ``charge_budget``, below the activity's start-to-close).
A recurring request whose answer was lost *and* that Razorpay has not yet counted on its
order when the retry looks would be sent again. An attempt whose tries all failed is settled
by `find_charge` (its order's payment, by receipt), never by charging again. Refunds use
Razorpay's ``X-Refund-Idempotency`` header; Payment Links use ``reference_id``, which
Razorpay itself keeps unique.

Statuses: one exhaustive ``match`` per native status type (`map_payment_status`,
`map_refund_status`), like hyperswitch's Razorpay connector. A status this adapter does not
know is an error (`RazorpayResponseError`), never a guess.

Errors: connection errors, timeouts, HTTP 429 and 5xx and ``SERVER_ERROR`` /
``GATEWAY_ERROR`` error responses raise `RazorpayTransientError` (a `TransientPSPError`:
the activity retries with the same key). Requests Razorpay refuses (a missing or invalid
field, an unknown id) raise `RazorpayRequestError`, wrong credentials `RazorpayAuthError`:
retrying those cannot help. The SDK's own exceptions keep only the description, so the
HTTP status and the full ``error`` object are read from the response itself (a response
hook on the session).

Nothing here logs a request body, a webhook payload or a secret; log lines carry ids only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeGuard, TypeVar, assert_never, get_args

import razorpay
import requests
from razorpay.errors import BadRequestError, GatewayError, ServerError

from recovery.constants import CHARGE_TRY_BUDGET
from recovery.errors import RecoveryError
from recovery.models import (
    CardIdentity,
    ChargeRequest,
    ChargeResult,
    Customer,
    Failure,
    PaymentMethod,
    WebhookEvent,
    WebhookKind,
)
from recovery.psp.base import (
    Checkout,
    CheckoutRequest,
    InvalidWebhook,
    PaymentStatus,
    PSPRequestRejected,
    RefundResult,
    TransientPSPError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_REFERENCE_LENGTH = 40
"""Razorpay's limit for an order's or refund's ``receipt`` and a link's ``reference_id``."""

MIN_LINK_LIFETIME = 16 * 60
"""A Payment Link's `expire_by` is kept at least this far ahead: the customer is about to pay
(it is closed with its link anyway, by `close_checkout`)."""

SIGNATURE_HEADER = "X-Razorpay-Signature"

# ---- native vocabularies and their one mapping each ------------------------------------------

RazorpayPaymentStatus = Literal["created", "authorized", "captured", "refunded", "failed"]
"""Payment entity ``status`` (razorpay.com/docs/api/payments: "Payment States")."""

RazorpayRefundStatus = Literal["pending", "processed", "failed"]
"""Refund entity ``status`` (razorpay.com/docs/api/refunds)."""

_PAYMENT_STATUSES: frozenset[str] = frozenset(get_args(RazorpayPaymentStatus))
_REFUND_STATUSES: frozenset[str] = frozenset(get_args(RazorpayRefundStatus))
_NOT_APPLICABLE = frozenset({"", "NA", "na", "null"})


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


def map_refund_status(status: RazorpayRefundStatus) -> Literal["succeeded", "pending", "failed"]:
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
            code=_text(error.get("code")),
            description=_text(error.get("description")),
            field=_text(error.get("field")),
            source=_text(error.get("source")),
            step=_text(error.get("step")),
            reason=_text(error.get("reason")),
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


# ---- small helpers ---------------------------------------------------------------------------


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


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _na(value: str | None) -> str | None:
    """Razorpay fills error fields that do not apply with "NA"."""
    return None if value is None or value.strip() in _NOT_APPLICABLE else value


def _short(value: object, limit: int = 200) -> str | None:
    text = _na(_text(value))
    return text[:limit] if text else None


def _notes(entity: Mapping[str, Any] | None) -> dict[str, Any]:
    """An entity's notes. Razorpay sends empty notes as ``[]``."""
    notes = entity.get("notes") if entity else None
    return notes if isinstance(notes, dict) else {}


def _items(collection: Mapping[str, Any], key: str = "items") -> list[dict[str, Any]]:
    items = collection.get(key)
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _lower(currency: object) -> str | None:
    return currency.lower() if isinstance(currency, str) else None


def _hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _same_signature(expected_hex: str, given: str | None) -> bool:
    if not given:
        return False
    return hmac.compare_digest(expected_hex.encode(), given.strip().lower().encode())


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, val in headers.items():
        if key.lower() == wanted:
            return val
    return None


def failure_from_payment(payment: Mapping[str, Any]) -> Failure:
    """Our classifier's inputs from a failed payment entity: ``code`` = ``error_code``,
    ``decline_code`` = ``error_reason``, ``message`` = ``error_description``."""
    failure = Failure(
        code=_short(payment.get("error_code")),
        decline_code=_short(payment.get("error_reason")),
        message=_short(payment.get("error_description"), 1000),
    )
    if failure.is_empty():
        return Failure(message="Razorpay reported the payment failed without an error code")
    return failure


def failure_from_error(error: RazorpayErrorBody) -> Failure:
    failure = Failure(
        code=_short(error.code),
        decline_code=_short(error.reason),
        message=_short(error.description, 1000),
    )
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
        psp_payment_id=_text(payment.get("id")),
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


def _pick_payment(payments: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The payment that decides an order's outcome: the latest one that succeeded or may
    still succeed, else the latest failed one."""
    ordered = sorted(payments, key=lambda p: int(p.get("created_at") or 0), reverse=True)
    for payment in ordered:
        if payment.get("status") != "failed":
            return payment
    return ordered[0] if ordered else None


# ---- the adapter -----------------------------------------------------------------------------


class _ThreadClient:
    """One SDK client per worker thread, remembering the last HTTP response it got."""

    def __init__(self, key_id: str, key_secret: str, api_base: str | None) -> None:
        self.session = requests.Session()
        self.session.hooks["response"].append(self._remember)
        options: dict[str, Any] = {"base_url": api_base} if api_base else {}
        self.client = razorpay.Client(session=self.session, auth=(key_id, key_secret), **options)
        self.client.set_app_details({"title": "payment-recovery", "version": "1"})
        self.last_response: requests.Response | None = None

    def _remember(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.last_response = response


class RazorpayAdapter:
    """`PSPAdapter` for Razorpay. See the module docstring for the flow and its limits."""

    name = "razorpay"
    idempotency_window: timedelta | None = None  # receipts: looked up by the adapter itself

    def __init__(
        self,
        key_id: str,
        key_secret: str,
        api_base: str | None = None,
        max_workers: int = 8,
        *,
        timeout: float = 30.0,
        charge_budget: float = CHARGE_TRY_BUDGET.total_seconds() - 10,
    ) -> None:
        """`api_base`: e.g. ``http://127.0.0.1:8123`` for a local fake; the SDK appends
        ``/v1/...`` itself, so a trailing ``/v1`` is dropped. `timeout`: seconds per HTTP
        request (the SDK sets none of its own); `charge_budget`: seconds for a charge's
        whole chain of calls (below the charge activity's own budget)."""
        if not key_id or not key_secret:
            raise RazorpayConfigError("Razorpay needs a key id and a key secret")
        self._key_id = key_id
        self._key_secret = key_secret
        self._api_base = _normalise_base(api_base)
        self._timeout = timeout
        self._charge_budget = charge_budget
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="razorpay")
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def __repr__(self) -> str:  # never the secrets
        return f"RazorpayAdapter(key_id={self._key_id!r}, api_base={self._api_base!r})"

    def close(self) -> None:
        """Stop the thread pool (waiting for calls in flight) and close the sessions."""
        self._executor.shutdown(wait=True)
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    # ---- async interface (PSPAdapter) ------------------------------------------------------

    async def create_payment_intent(self, req: ChargeRequest) -> ChargeResult:
        return await self._in_pool(self._within_budget, self.create_payment_intent_sync, req)

    async def find_charge(self, req: ChargeRequest) -> ChargeResult | None:
        return await self._in_pool(self.find_charge_sync, req)

    async def retrieve_payment_intent(self, psp_payment_id: str) -> ChargeResult:
        return await self._in_pool(self.retrieve_payment_intent_sync, psp_payment_id)

    async def resolve_card(self, customer: Customer, payment_method: PaymentMethod) -> CardIdentity:
        return await self._in_pool(self.resolve_card_sync, customer, payment_method)

    async def create_checkout_session(self, req: CheckoutRequest) -> Checkout:
        return await self._in_pool(self.create_checkout_session_sync, req)

    async def close_checkout(self, psp_checkout_id: str) -> None:
        await self._in_pool(self.close_checkout_sync, psp_checkout_id)

    def close_checkout_sync(self, payment_link_id: str) -> None:
        """Cancel the Payment Link (they never expire by themselves unless `expire_by` is
        set). A link that is no longer `created` (paid, cancelled, expired) takes no more
        money: closing it again is done."""
        try:
            self._call(
                "payment link cancel",
                lambda c: c.payment_link.cancel(payment_link_id, timeout=self._request_timeout()),
            )
        except RazorpayRequestError:
            link = self._call(
                "payment link fetch",
                lambda c: c.payment_link.fetch(payment_link_id, timeout=self._request_timeout()),
            )
            if link.get("status") == "created":
                raise

    async def refund_payment(
        self, psp_payment_id: str, *, amount: int | None, idempotency_key: str
    ) -> RefundResult:
        return await self._in_pool(
            self.refund_payment_sync,
            psp_payment_id,
            amount=amount,
            idempotency_key=idempotency_key,
        )

    async def _in_pool(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    # ---- charges ---------------------------------------------------------------------------

    def _within_budget(self, fn: Callable[[ChargeRequest], T], req: ChargeRequest) -> T:
        """Run a charge's whole chain of calls within `charge_budget` seconds: no call starts
        after it and none outlasts it, so the thread has stopped before the activity's
        start-to-close ends and its retry starts (tries never overlap)."""
        self._local.deadline = time.monotonic() + self._charge_budget
        try:
            return fn(req)
        finally:
            self._local.deadline = None

    def _request_timeout(self) -> float:
        """The timeout of the next HTTP call: `timeout`, or what is left of the budget."""
        deadline: float | None = getattr(self._local, "deadline", None)
        if deadline is None:
            return self._timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise RazorpayTransientError("the charge's time budget is spent")
        return min(self._timeout, left)

    def find_charge_sync(self, req: ChargeRequest) -> ChargeResult | None:
        """The payment of this attempt's order (found by its receipt), or None when the
        attempt made no payment. An order that counts a payment Razorpay does not list yet
        raises a transient error: ask again later."""
        _, payment = self._existing_order(reference_for(req.idempotency_key), req)
        return charge_result(payment) if payment is not None else None

    def create_payment_intent_sync(self, req: ChargeRequest) -> ChargeResult:
        """Charge the saved token once per ``req.idempotency_key`` (see module docstring)."""
        customer_id = req.customer.id
        token = req.payment_method.id
        if not customer_id:
            raise RazorpayRequestError(
                "a Razorpay charge needs the Razorpay customer id (cust_...)", field="customer.id"
            )
        if not token:
            raise RazorpayRequestError(
                "a Razorpay charge needs the saved token id (token_...)",
                field="payment_method.id",
            )
        receipt = reference_for(req.idempotency_key)
        notes = {
            "merchant_id": req.merchant_id,
            "payment_ref": req.payment_ref,
            "recovery_id": req.recovery_id,
            "attempt": str(req.attempt),
        }
        order, payment = self._existing_order(receipt, req)
        if payment is not None:
            log.info(
                "razorpay charge replayed",
                extra={"order_id": order and order.get("id"), "payment_id": payment.get("id")},
            )
            return charge_result(payment)
        if (refusal := self.token_refusal(customer_id, token, req.amount)) is not None:
            log.info("razorpay token cannot be charged", extra={"code": refusal.decline_code})
            return ChargeResult(status="failed", failure=refusal)
        if order is None:
            order = self._call(
                "order create",
                lambda c: c.order.create(
                    {
                        "amount": req.amount,
                        "currency": req.currency.upper(),
                        "receipt": receipt,
                        "payment_capture": True,
                        "notes": notes,
                    },
                    timeout=self._request_timeout(),
                ),
            )
            self._await_listed(receipt, str(order["id"]))
        return self._charge_order(order, req, customer_id, token, notes)

    def token_refusal(self, customer_id: str, token_id: str, amount: int) -> Failure | None:
        """Why the token cannot be debited now, or None. Only a ``confirmed`` mandate can be
        debited; one ``paused``, ``cancelled``, ``rejected`` (or on its way there), expired,
        or with a ``max_amount`` below the amount fails ("Token States",
        razorpay.com/docs/api/payments/recurring-payments/upi/tokens). Checked before any
        order, so such an attempt charges nothing and says what the customer must do. A
        token without ``recurring_details`` (a saved card of the checkout) is not checked."""
        token = self._call(
            "token fetch",
            lambda c: c.token.fetch(customer_id, token_id, timeout=self._request_timeout()),
        )
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

    def _orders_with_receipt(self, receipt: str) -> list[dict[str, Any]]:
        found = self._call(
            "order lookup",
            lambda c: c.order.all(
                {"receipt": receipt, "count": 100}, timeout=self._request_timeout()
            ),
        )
        return [o for o in _items(found) if o.get("receipt") == receipt]

    def _await_listed(self, receipt: str, order_id: str) -> None:
        """Charge a new order only once the receipt lookup lists it. A retry after a lost
        answer knows the attempt's order by that lookup alone, and Razorpay's listing may lag
        a new order: one charged before it is listed could be charged again on a second
        order. Not listed within the budget (or `timeout`): a transient error, and nothing
        was charged on it."""
        deadline: float | None = getattr(self._local, "deadline", None)
        give_up = deadline if deadline is not None else time.monotonic() + self._timeout
        pause = 0.1
        while not any(o.get("id") == order_id for o in self._orders_with_receipt(receipt)):
            if time.monotonic() + pause >= give_up:
                raise RazorpayTransientError(
                    f"Razorpay order {order_id} is not listed by its receipt yet"
                )
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

    def _existing_order(
        self, receipt: str, req: ChargeRequest
    ) -> tuple[dict[str, Any] | None, Mapping[str, Any] | None]:
        """(the attempt's order, its deciding payment), either may be None."""
        orders = sorted(
            self._orders_with_receipt(receipt), key=lambda o: int(o.get("created_at") or 0)
        )
        for order in orders:
            if order.get("amount") != req.amount or _lower(order.get("currency")) != req.currency:
                raise RazorpayIdempotencyConflict(
                    f"idempotency key {req.idempotency_key!r} was used for order {order.get('id')}"
                    " with a different amount or currency",
                    field="idempotency_key",
                )
        for order in orders:
            order_id = str(order["id"])
            payments = self._call("order payments", self._order_payments(order_id))
            payment = _pick_payment(_items(payments))
            if payment is not None:
                return order, payment
            if int(order.get("attempts") or 0) > 0 or order.get("status") in ("attempted", "paid"):
                # A payment was made on this order but Razorpay does not list it yet: wait
                # for it (the activity retries) rather than charge a second time.
                raise RazorpayTransientError(
                    f"Razorpay order {order_id} has a payment attempt that is not listed yet"
                )
        return (orders[0] if orders else None), None

    def _charge_order(
        self,
        order: Mapping[str, Any],
        req: ChargeRequest,
        customer_id: str,
        token: str,
        notes: dict[str, str],
    ) -> ChargeResult:
        order_id = str(order["id"])
        customer = self._call(
            "customer fetch",
            lambda c: c.customer.fetch(customer_id, timeout=self._request_timeout()),
        )
        body: dict[str, Any] = {
            "email": req.customer.email or customer.get("email"),
            "contact": customer.get("contact"),
            "amount": req.amount,
            "currency": req.currency.upper(),
            "order_id": order_id,
            "customer_id": customer_id,
            "token": token,
            "recurring": "1",
            "description": f"Payment recovery for {req.payment_ref} (attempt {req.attempt})",
            "notes": notes,
        }
        # Razorpay requires both; when the customer has none we send the request anyway
        # and let Razorpay name the missing field (a RazorpayRequestError).
        body = {k: v for k, v in body.items() if v is not None}
        try:
            created = self._call(
                "recurring payment",
                lambda c: c.payment.createRecurring(body, timeout=self._request_timeout()),
            )
        except RazorpayRequestError as exc:
            if exc.error is not None and is_payment_failure(exc.error):
                payment_id = _text(exc.error.metadata.get("payment_id"))
                log.info(
                    "razorpay recurring payment declined",
                    extra={"order_id": order_id, "payment_id": payment_id},
                )
                return ChargeResult(
                    status="failed",
                    psp_payment_id=payment_id,
                    failure=failure_from_error(exc.error),
                )
            raise
        payment_id = _text(created.get("razorpay_payment_id"))
        if not payment_id:
            raise RazorpayResponseError("Razorpay's recurring payment answer has no payment id")
        signature = _text(created.get("razorpay_signature"))
        if signature is not None and not self.verify_payment_signature(
            order_id=order_id, payment_id=payment_id, signature=signature
        ):
            raise RazorpayResponseError("Razorpay's recurring payment answer has a bad signature")
        payment = self._call(
            "payment fetch", lambda c: c.payment.fetch(payment_id, timeout=self._request_timeout())
        )
        return charge_result(payment)

    def resolve_card_sync(self, customer: Customer, payment_method: PaymentMethod) -> CardIdentity:
        """The card behind the saved token (``GET /v1/customers/{id}/tokens/{token_id}``): a
        Razorpay charge always names its token, so there is no default to look up. Keyed by
        the token's card id when Razorpay gives one, else by the token; the brand is the
        card's ``network`` (``Visa``, ``MasterCard``, ``RuPay``, ...)."""
        token_id = payment_method.id
        if not customer.id or not token_id:
            raise RazorpayRequestError(
                "a Razorpay charge needs the customer id and the saved token id",
                field="payment_method.id",
            )
        token = self._call(
            "token fetch",
            lambda c: c.token.fetch(customer.id, token_id, timeout=self._timeout),
        )
        found = token.get("card")
        card: dict[str, Any] = found if isinstance(found, dict) else {}
        card_id = _short(card.get("id"))
        return CardIdentity(
            key=f"razorpay:card:{card_id}" if card_id else f"razorpay:token:{token_id}",
            brand=_short(card.get("network")),
            payment_method_id=token_id,
        )

    def retrieve_payment_intent_sync(self, psp_payment_id: str) -> ChargeResult:
        payment = self._call(
            "payment fetch",
            lambda c: c.payment.fetch(psp_payment_id, timeout=self._request_timeout()),
        )
        return charge_result(payment)

    # ---- refunds ---------------------------------------------------------------------------

    def refund_payment_sync(
        self, psp_payment_id: str, *, amount: int | None, idempotency_key: str
    ) -> RefundResult:
        """Refund once per `idempotency_key`, by Razorpay's own refund idempotency: the
        ``X-Refund-Idempotency`` header (`refund_idempotency_header`) with the same body on
        every try answers the first refund; one still being processed is a 409 (transient:
        ask again). The ``receipt`` and notes carry the key too, for reconciliation. `amount`
        None refunds the whole (remaining) amount."""
        body: dict[str, Any] = {
            "receipt": reference_for(idempotency_key),
            "notes": {"idempotency_key": idempotency_key[:256]},
        }
        if amount is not None:
            body["amount"] = amount
        headers = {"X-Refund-Idempotency": refund_idempotency_header(idempotency_key)}
        refund = self._call(
            "refund create",
            lambda c: c.payment.refund(
                psp_payment_id, body, headers=headers, timeout=self._request_timeout()
            ),
        )
        return refund_result(refund)

    async def retrieve_refund(self, psp_refund_id: str) -> RefundResult:
        return await self._in_pool(self.retrieve_refund_sync, psp_refund_id)

    def retrieve_refund_sync(self, psp_refund_id: str) -> RefundResult:
        """``GET /v1/refunds/{id}``: a normal refund is ``pending`` until the bank has it
        (Razorpay: 5-7 working days), then ``processed`` (or ``failed``)."""
        refund = self._call(
            "refund fetch",
            lambda c: c.refund.fetch(psp_refund_id, timeout=self._request_timeout()),
        )
        return refund_result(refund)

    # ---- payment links ---------------------------------------------------------------------

    def create_checkout_session_sync(self, req: CheckoutRequest) -> Checkout:
        """A Razorpay Payment Link, once per ``req.idempotency_key`` (its ``reference_id``,
        which Razorpay keeps unique: a duplicate is answered with the existing link)."""
        reference_id = reference_for(req.idempotency_key)
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
            "notes": {
                "merchant_id": req.merchant_id,
                "payment_ref": req.payment_ref,
                "recovery_id": req.recovery_id,
                "link_id": req.link_id,
            },
        }
        if req.customer.email:
            body["customer"] = {"email": req.customer.email}
        if req.expires_at is not None:  # the link takes no money after our link expired
            body["expire_by"] = max(
                int(req.expires_at.timestamp()), int(time.time()) + MIN_LINK_LIFETIME
            )
        try:
            link = self._call(
                "payment link create",
                lambda c: c.payment_link.create(body, timeout=self._request_timeout()),
            )
        except RazorpayAuthError:
            raise
        except RazorpayRequestError:
            # Razorpay rejects a reference_id it has seen; its wording is not documented, so
            # any rejection is followed by a look-up, and only an existing link answers it.
            existing = self._find_payment_link(reference_id)
            if existing is None:
                raise
            link = existing
        url = _text(link.get("short_url"))
        if not url:
            raise RazorpayResponseError("Razorpay's payment link has no short_url")
        return Checkout(psp_checkout_id=str(link["id"]), url=url)

    def _find_payment_link(self, reference_id: str) -> dict[str, Any] | None:
        found = self._call(
            "payment link lookup",
            lambda c: c.payment_link.all(
                {"reference_id": reference_id}, timeout=self._request_timeout()
            ),
        )
        for link in _items(found, "payment_links"):
            if link.get("reference_id") == reference_id:
                return link
        return None

    # ---- signatures and webhooks -----------------------------------------------------------

    def verify_payment_signature(self, *, order_id: str, payment_id: str, signature: str) -> bool:
        """Checkout/recurring answer: ``razorpay_signature`` = hex HMAC-SHA256 of
        ``order_id|payment_id`` keyed with the key secret (constant-time compare)."""
        expected = _hmac_hex(self._key_secret, f"{order_id}|{payment_id}".encode())
        return _same_signature(expected, signature)

    def verify_payment_link_signature(
        self,
        *,
        payment_link_id: str,
        payment_link_reference_id: str,
        payment_link_status: str,
        payment_id: str,
        signature: str,
    ) -> bool:
        """Payment Link callback: ``razorpay_signature`` = hex HMAC-SHA256 of
        ``payment_link_id|payment_link_reference_id|payment_link_status|razorpay_payment_id``
        keyed with the key secret."""
        message = (
            f"{payment_link_id}|{payment_link_reference_id}|{payment_link_status}|{payment_id}"
        )
        expected = _hmac_hex(self._key_secret, message.encode())
        return _same_signature(expected, signature)

    def verify_payment_link_callback(self, params: Mapping[str, str]) -> bool:
        """The query string Razorpay appends to a Payment Link's ``callback_url``
        (``razorpay_payment_id``, ``razorpay_payment_link_id``,
        ``razorpay_payment_link_reference_id``, ``razorpay_payment_link_status``,
        ``razorpay_signature``). False when a parameter is missing."""
        names = (
            "razorpay_payment_link_id",
            "razorpay_payment_link_reference_id",
            "razorpay_payment_link_status",
            "razorpay_payment_id",
            "razorpay_signature",
        )
        values = [params.get(n) for n in names]
        if any(v is None for v in values):
            return False
        link_id, reference_id, status, payment_id, signature = (str(v) for v in values)
        return self.verify_payment_link_signature(
            payment_link_id=link_id,
            payment_link_reference_id=reference_id,
            payment_link_status=status,
            payment_id=payment_id,
            signature=signature,
        )

    # ---- HTTP plumbing ---------------------------------------------------------------------

    def _thread_client(self) -> _ThreadClient:
        tc: _ThreadClient | None = getattr(self._local, "client", None)
        if tc is None:
            tc = _ThreadClient(self._key_id, self._key_secret, self._api_base)
            self._local.client = tc
            with self._sessions_lock:
                self._sessions.append(tc.session)
        return tc

    def _order_payments(self, order_id: str) -> Callable[[Any], Any]:
        return lambda c: c.order.payments(order_id, timeout=self._request_timeout())

    def _call(self, operation: str, fn: Callable[[Any], Any]) -> dict[str, Any]:
        """Run one SDK call; translate every failure into our exception types."""
        tc = self._thread_client()
        tc.last_response = None
        try:
            result = fn(tc.client)
        except requests.Timeout as exc:
            raise RazorpayTransientError(f"Razorpay {operation} timed out") from exc
        except requests.ConnectionError as exc:
            raise RazorpayTransientError(f"Razorpay {operation}: connection failed") from exc
        except (BadRequestError, GatewayError, ServerError, requests.RequestException) as exc:
            if tc.last_response is None and isinstance(exc, requests.RequestException):
                # No answer at all and not a network failure: a malformed URL or similar.
                raise RazorpayRequestError(
                    f"Razorpay {operation} could not be sent: {type(exc).__name__}"
                ) from exc
            error = RazorpayErrorBody.from_response(tc.last_response)
            failure = classify_error(operation, error)
            log.warning(
                "razorpay call failed",
                extra={
                    "operation": operation,
                    "http_status": error.http_status,
                    "error_code": error.code,
                    "error_reason": error.reason,
                },
            )
            raise failure from exc
        if not isinstance(result, dict):
            raise RazorpayResponseError(f"Razorpay {operation} answered a non-object")
        return result


def _normalise_base(api_base: str | None) -> str | None:
    if not api_base:
        return None
    base = api_base.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base


# ---- webhook normalisation ------------------------------------------------------------------


def verify_webhook(secret: str | None, payload: bytes, headers: Mapping[str, str]) -> WebhookEvent:
    """Verify ``X-Razorpay-Signature`` (hex HMAC-SHA256 of the raw body keyed with the
    webhook secret, compared in constant time) and normalise the event. Only the webhook
    secret is needed: no API key.

    The SDK's ``utility.verify_webhook_signature`` is constant-time too, but takes the body
    as ``str``; we sign the raw bytes exactly as received. The event id comes from what
    Razorpay signed (`signed_event_id`), never from the unsigned ``X-Razorpay-Event-Id``
    header: one captured body replayed with fresh headers is the same event. Events:
    ``payment.captured`` -> payment_succeeded, ``payment.failed`` -> payment_failed,
    ``refund.processed`` -> payment_refunded (Razorpay has no ``payment.refunded`` event),
    ``payment_link.paid`` -> checkout_completed, ``token.confirmed`` -> payment_method_updated
    (see `normalise_event`). ``order.paid`` is ignored: Razorpay sends it
    together with ``payment.captured`` for the same payment, which alone decides success.
    Everything else (``payment.authorized``, ``refund.created``, ...) is ignored. Our ids come
    from the notes we put on every order, payment and link."""
    if not secret:
        raise InvalidWebhook("no Razorpay webhook secret is configured")
    signature = _header(headers, SIGNATURE_HEADER)
    if not signature:
        raise InvalidWebhook(f"missing {SIGNATURE_HEADER} header")
    expected = _hmac_hex(secret, payload)
    if not _same_signature(expected, signature):
        raise InvalidWebhook("Razorpay webhook signature does not match")
    try:
        body = json.loads(payload)
    except ValueError:
        raise InvalidWebhook("Razorpay webhook body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidWebhook("Razorpay webhook body is not a JSON object")
    return normalise_event(signed_event_id(body, payload), body)


def signed_event_id(body: Mapping[str, Any], payload: bytes) -> str:
    """The event's identity from the signed body: its event name, the ids of the entities it
    carries and its ``created_at``. Razorpay redelivers an event for 24 h and replays it "exactly
    as it was originally generated" (razorpay.com/docs/webhooks/best-practices,
    /docs/webhooks/replay-events), so these are the same on every delivery of one event, and
    a late capture after a failure is a new one. A body without them is identified by its
    SHA-256."""
    event, created_at, entities = body.get("event"), body.get("created_at"), body.get("payload")
    ids = []
    if isinstance(entities, dict):
        for name in sorted(entities):
            entity = _entity(entities, name)
            if entity is not None and isinstance(entity.get("id"), str):
                ids.append(f"{name}={entity['id']}")
    identity = f"{event}/{','.join(ids)}/{created_at}"
    if (
        isinstance(event, str)
        and ids
        and isinstance(created_at, int)
        and not isinstance(created_at, bool)
        and len(identity) <= 255
    ):
        return identity
    return "body_sha256:" + hashlib.sha256(payload).hexdigest()


def _entity(payload: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    wrapper = payload.get(name)
    entity = wrapper.get("entity") if isinstance(wrapper, dict) else None
    return entity if isinstance(entity, dict) else None


def _amount(entity: Mapping[str, Any] | None) -> int | None:
    value = entity.get("amount") if entity else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def normalise_event(event_id: str, body: Mapping[str, Any]) -> WebhookEvent:
    """A verified Razorpay event body as our `WebhookEvent`.

    A customer's new card or mandate is a token that Razorpay confirms (``token.confirmed``;
    razorpay.com/docs/api/payments/recurring-payments/webhooks). That event's token entity
    names no customer in Razorpay's samples; the authorisation payment that registered the
    token does (``customer_id``, ``token_id``). So every payment event carries the token it
    names and its customer, and the store joins the two (`recovery.store.webhooks`)."""
    event_type = body.get("event")
    payload = body.get("payload")
    if not isinstance(event_type, str) or not isinstance(payload, dict):
        raise InvalidWebhook("not a Razorpay event (no event name or payload)")
    payment = _entity(payload, "payment")
    refund = _entity(payload, "refund")
    link = _entity(payload, "payment_link")
    order = _entity(payload, "order")
    token = _entity(payload, "token")
    customer_id = _text(payment.get("customer_id")) if payment else None
    method = _token_method(payment, payment.get("token_id")) if payment else None

    kind: WebhookKind
    failure: Failure | None = None
    # Where our ids are, most specific first: the link carries them for a link payment, the
    # payment (and its order) for our recurring charges.
    notes_from: list[Mapping[str, Any] | None]
    amount_from: Mapping[str, Any] | None = payment
    payment_id = _text(payment.get("id")) if payment else None
    match event_type:
        case "payment.captured":
            kind = "payment_succeeded"
            notes_from = [payment, order]
        case "payment.failed":
            kind = "payment_failed"
            notes_from = [payment, order]
            failure = failure_from_payment(payment) if payment else None
        case "refund.processed":
            kind = "payment_refunded"
            notes_from = [payment, refund]
            amount_from = refund
            if refund and refund.get("payment_id"):
                payment_id = _text(refund.get("payment_id"))
        case "payment_link.paid":
            kind = "checkout_completed"
            notes_from = [link, payment, order]
            amount_from = payment or link
        case "token.confirmed" if token is not None:
            kind = "payment_method_updated"
            notes_from = []
            customer_id = _text(token.get("customer_id"))  # absent in Razorpay's samples
            method = _token_method(token, token.get("id"))
        case _:
            kind = "ignored"
            notes_from = [link, payment, order, refund]
            amount_from = refund or payment or link or order

    notes: dict[str, Any] = {}
    for entity in reversed(notes_from):
        notes.update(_notes(entity))
    return WebhookEvent(
        psp="razorpay",
        event_id=event_id,
        kind=kind,
        psp_type=event_type,
        merchant_id=_text(notes.get("merchant_id")),
        payment_ref=_text(notes.get("payment_ref")),
        recovery_id=_text(notes.get("recovery_id")),
        psp_payment_id=payment_id,
        amount=_amount(amount_from),
        currency=_lower(amount_from.get("currency")) if amount_from else None,
        failure=failure,
        customer_id=customer_id,
        payment_method=method,
        raw=dict(body),
    )


def _token_method(entity: Mapping[str, Any], token_id: object) -> PaymentMethod | None:
    """The saved token an entity names, as the payment method our charges use."""
    if not isinstance(token_id, str) or not token_id:
        return None
    return PaymentMethod(type=_text(entity.get("method")) or "card", id=token_id)
