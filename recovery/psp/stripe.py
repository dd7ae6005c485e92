"""Stripe adapter: the official SDK (`StripeClient`, async methods, httpx) behind `PSPAdapter`.

What it maps, and why:

- A recovery attempt is an off-session PaymentIntent on the customer's saved payment method,
  created and confirmed in one call, with our idempotency key (a retried activity replays
  Stripe's first answer instead of charging twice) and our ids in its metadata (webhooks find
  their recovery by them).
- Stripe's PaymentIntent status goes to our `PaymentStatus` in one exhaustive `match`
  (`canonical_status`); a fully refunded succeeded payment reads as `refunded`.
- A card decline (HTTP 402, `stripe.CardError`) is a result, not an exception: status
  `failed` (or `requires_action` for `authentication_required`) with Stripe's `code`,
  `decline_code`, message and the card network's advice (`network_advice_code`, else
  Stripe's own `advice_code`) in `Failure`, which is what the classifier reads.
- Timeouts, connection errors, rate limits, 408/409 (a concurrent request holds the key),
  `lock_timeout`, 5xx and unreadable answers raise `TransientPSPError` (the activity retries
  them with the same idempotency key; note Stripe replays a saved 500 for that key, so a
  payment still unknown after the retries is one to look up, not to charge again); anything
  else Stripe refuses (invalid parameters, bad key, missing permission, a key reused with
  other parameters) raises `StripeRequestRejected`, which retrying cannot fix.
- Webhooks: `Stripe-Signature` is checked by the SDK (HMAC-SHA256, constant-time compare,
  timestamp tolerance) over the raw body before the body is parsed; events are normalised to
  `WebhookEvent`. Payloads, signatures and secrets are never logged or chained into errors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, assert_never, cast, get_args

import stripe
from stripe.params import PaymentIntentCreateParams, RefundCreateParams
from stripe.params.checkout import SessionCreateParams

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

_SHORT = 200  # `Failure` code fields
_LOOKUP_SCAN = 1000  # a customer's newest PaymentIntents searched for a lost attempt
_MESSAGE = 1000  # `Failure.message`
WEBHOOK_TOLERANCE_SECONDS = 300  # the SDK's default: a signature older than 5 minutes is refused


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


def refund_status(status: StripeRefundStatus) -> Literal["succeeded", "pending", "failed"]:
    match status:
        case "succeeded":
            return "succeeded"
        case "pending" | "requires_action":
            return "pending"
        case "failed" | "canceled":
            return "failed"
        case _:
            assert_never(status)


def _refund_result(refund: dict[str, Any], amount: int | None = None) -> RefundResult:
    status = refund.get("status")
    if status not in get_args(StripeRefundStatus) or not isinstance(refund.get("id"), str):
        raise StripeUnexpectedResponse(f"unexpected refund from Stripe (status {status!r})")
    return RefundResult(
        psp_refund_id=refund["id"],
        status=refund_status(cast(StripeRefundStatus, status)),
        amount=int(refund.get("amount") or amount or 0),
    )


class StripeAdapter:
    """`PSPAdapter` for Stripe. One instance holds one `StripeClient` (one merchant account)
    and one httpx connection pool; call `aclose()` when done with it."""

    name = "stripe"
    # "Keys are eligible to be removed from the system automatically after they're at least
    # 24 hours old" (docs.stripe.com/api/idempotent_requests)
    idempotency_window: timedelta | None = timedelta(hours=24)

    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        *,
        timeout_seconds: float = 30.0,
    ) -> None:
        """Charges, lookups, checkouts and refunds; webhooks need no adapter
        (`verify_webhook` takes the account's webhook secret alone)."""
        if not api_key:
            raise ValueError("a Stripe API key is required")
        # httpx for the async methods; no sync client (nothing here may block the loop).
        self._http = stripe.HTTPXClient(timeout=timeout_seconds)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")} if api_base else None,
            max_network_retries=0,  # Temporal retries, with the same idempotency key
            http_client=self._http,
        )

    async def aclose(self) -> None:
        await self._http.close_async()

    # ---- charges ----------------------------------------------------------------------

    async def create_payment_intent(self, req: ChargeRequest) -> ChargeResult:
        payment_method = req.payment_method.id or await self._default_payment_method(req)
        params: PaymentIntentCreateParams = {
            "amount": req.amount,
            "currency": req.currency,
            "payment_method": payment_method,
            "off_session": True,
            "confirm": True,
            # The customer is not here to be redirected anywhere: redirect-based methods are
            # excluded, which is also what lets Stripe confirm without a `return_url`.
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "metadata": {
                "merchant_id": req.merchant_id,
                "payment_ref": req.payment_ref,
                "recovery_id": req.recovery_id,
                "attempt": str(req.attempt),
            },
        }
        if req.customer.id:
            params["customer"] = req.customer.id
        try:
            intent = await self._client.v1.payment_intents.create_async(
                params, {"idempotency_key": req.idempotency_key}
            )
        except stripe.CardError as err:
            return declined(err)
        except stripe.StripeError as err:
            raise translate_error(err) from err
        return charge_result(intent.to_dict())

    async def _default_payment_method(self, req: ChargeRequest) -> str:
        """No method named: the customer's default (see `_default_card_id`), which is where an
        updated card goes, as Stripe Billing retries do."""
        if not req.customer.id:
            raise StripeRequestRejected("neither a payment method nor a customer to charge")
        return await self._default_card_id(req.customer.id)

    async def _default_card_id(self, customer_id: str) -> str:
        """The customer's default: `invoice_settings.default_payment_method`, else the legacy
        `default_source` (a `card_...` or `src_...`, which PaymentIntents also charge)."""
        try:
            customer = (await self._client.v1.customers.retrieve_async(customer_id)).to_dict()
        except stripe.StripeError as err:
            raise translate_error(err) from err
        default = (customer.get("invoice_settings") or {}).get("default_payment_method")
        default_id = _object_id(default) or _object_id(customer.get("default_source"))
        if not default_id:
            raise StripeRequestRejected(
                "no payment method named and the customer has no default payment method",
                param="payment_method",
            )
        return default_id

    async def find_charge(self, req: ChargeRequest) -> ChargeResult | None:
        """The PaymentIntent this attempt created, by its metadata (`recovery_id`, `attempt`).
        A customer's PaymentIntents are listed (consistent at once, newest first, the first
        `_LOOKUP_SCAN` of them); without a customer Stripe's Search API is asked, which
        lags writes by up to a minute (docs.stripe.com/search#data-freshness): the workflow
        waits before it looks. Not used in India, where Search is not offered."""
        try:
            if req.customer.id:
                page = await self._client.v1.payment_intents.list_async(
                    {"customer": req.customer.id, "limit": 100, "expand": ["data.latest_charge"]}
                )
                intents = page.data
                while page.has_more and len(intents) < _LOOKUP_SCAN:
                    page = await self._client.v1.payment_intents.list_async(
                        {
                            "customer": req.customer.id,
                            "limit": 100,
                            "starting_after": intents[-1].id,
                            "expand": ["data.latest_charge"],
                        }
                    )
                    intents = [*intents, *page.data]
            else:
                query = (
                    f"metadata['recovery_id']:'{_search_literal(req.recovery_id)}'"
                    f" AND metadata['attempt']:'{req.attempt}'"
                )
                found = await self._client.v1.payment_intents.search_async(
                    {"query": query, "expand": ["data.latest_charge"]}
                )
                intents = found.data
        except stripe.StripeError as err:
            raise translate_error(err) from err
        ours = {"recovery_id": req.recovery_id, "attempt": str(req.attempt)}
        for intent in (i.to_dict() for i in intents):
            metadata = intent.get("metadata") or {}
            if all(metadata.get(k) == v for k, v in ours.items()):
                return charge_result(intent)
        return None

    async def resolve_card(self, customer: Customer, payment_method: PaymentMethod) -> CardIdentity:
        """The card a charge would use, keyed by Stripe's card `fingerprint` (the same for
        every PaymentMethod or source of one card number in the account)."""
        method_id = payment_method.id
        if not method_id:
            if not customer.id:
                raise StripeRequestRejected("neither a payment method nor a customer to charge")
            method_id = await self._default_card_id(customer.id)
        try:
            if method_id.startswith(("card_", "src_")) and customer.id:
                source = await self._client.v1.customers.payment_sources.retrieve_async(
                    customer.id, method_id
                )
                card: Mapping[str, Any] = source.to_dict()
                if card.get("object") == "source":  # a Sources API source: its card is nested
                    card = card.get("card") or {}
            else:
                found = await self._client.v1.payment_methods.retrieve_async(method_id)
                card = found.to_dict().get("card") or {}
        except stripe.StripeError as err:
            raise translate_error(err) from err
        fingerprint = _text(card.get("fingerprint"), _SHORT)
        return CardIdentity(
            key=f"stripe:fingerprint:{fingerprint}" if fingerprint else f"stripe:pm:{method_id}",
            brand=_text(card.get("brand"), _SHORT),
            payment_method_id=method_id,
        )

    async def retrieve_payment_intent(self, psp_payment_id: str) -> ChargeResult:
        try:
            intent = await self._client.v1.payment_intents.retrieve_async(
                psp_payment_id, {"expand": ["latest_charge"]}
            )
        except stripe.StripeError as err:
            raise translate_error(err) from err
        return charge_result(intent.to_dict())

    async def refund_payment(
        self, psp_payment_id: str, *, amount: int | None, idempotency_key: str
    ) -> RefundResult:
        params: RefundCreateParams = {"payment_intent": psp_payment_id}
        if amount is not None:
            params["amount"] = amount
        try:
            refund = (
                await self._client.v1.refunds.create_async(
                    params, {"idempotency_key": idempotency_key}
                )
            ).to_dict()
        except stripe.StripeError as err:
            raise translate_error(err) from err
        return _refund_result(refund, amount)

    async def retrieve_refund(self, psp_refund_id: str) -> RefundResult:
        try:
            refund = (await self._client.v1.refunds.retrieve_async(psp_refund_id)).to_dict()
        except stripe.StripeError as err:
            raise translate_error(err) from err
        return _refund_result(refund)

    # ---- hosted page --------------------------------------------------------------------

    async def create_checkout_session(self, req: CheckoutRequest) -> Checkout:
        metadata = {
            "merchant_id": req.merchant_id,
            "payment_ref": req.payment_ref,
            "recovery_id": req.recovery_id,
            "link_id": req.link_id,
        }
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
            "expires_at": checkout_expiry(req.expires_at, time.time()),
        }
        if req.customer.id:
            params["customer"] = req.customer.id
            # the card the customer pays with is kept for the next off-session attempts
            params["payment_intent_data"]["setup_future_usage"] = "off_session"
        elif req.customer.email:
            params["customer_email"] = req.customer.email
        try:
            session = (
                await self._client.v1.checkout.sessions.create_async(
                    params, {"idempotency_key": req.idempotency_key}
                )
            ).to_dict()
        except stripe.StripeError as err:
            raise translate_error(err) from err
        session_id, url = session.get("id"), session.get("url")
        if not isinstance(session_id, str) or not isinstance(url, str):
            raise StripeUnexpectedResponse("Stripe returned a Checkout Session without id or url")
        return Checkout(psp_checkout_id=session_id, url=url)

    async def close_checkout(self, psp_checkout_id: str) -> None:
        """Expire the Checkout Session (Stripe keeps one open for 24 h by default). A session
        that is no longer `open` (complete or expired) takes no more money: done."""
        try:
            await self._client.v1.checkout.sessions.expire_async(psp_checkout_id)
        except stripe.InvalidRequestError as err:
            session = await self._client.v1.checkout.sessions.retrieve_async(psp_checkout_id)
            if session.status == "open":
                raise translate_error(err) from err
        except stripe.StripeError as err:
            raise translate_error(err) from err


# ---- webhooks (the account's webhook secret alone; no adapter) -------------------------------


def verify_webhook(
    secret: str | None,
    payload: bytes,
    headers: Mapping[str, str],
    tolerance_seconds: int = WEBHOOK_TOLERANCE_SECONDS,
) -> WebhookEvent:
    """Verify `Stripe-Signature` with the SDK (HMAC-SHA256 over "{t}.{body}", constant time,
    the timestamp within the tolerance) and normalise the event. Only the webhook secret is
    needed: no API key. The event id is the signed body's `id`."""
    if tolerance_seconds <= 0:
        # The SDK skips the timestamp check altogether for a tolerance of 0.
        raise ValueError("the webhook tolerance must be positive")
    if not secret:
        raise InvalidWebhook("Stripe webhooks are not configured (no webhook secret)")
    signature = _header(headers, "Stripe-Signature")
    if not signature:
        raise InvalidWebhook("missing Stripe-Signature header", field="Stripe-Signature")
    try:
        stripe.WebhookSignature.verify_header(payload, signature, secret, tolerance_seconds)
    except stripe.SignatureVerificationError as err:
        # `from None`: the SDK's error carries the payload and header.
        raise InvalidWebhook(
            f"invalid Stripe-Signature: {err.user_message}", field="Stripe-Signature"
        ) from None
    except UnicodeDecodeError:
        raise InvalidWebhook("webhook body is not UTF-8") from None
    try:
        event = json.loads(payload)
    except ValueError:
        raise InvalidWebhook("webhook body is not JSON") from None
    return normalise_event(event)


# ---- mapping helpers (pure; tested directly) -------------------------------------------------


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


def _search_literal(value: str) -> str:
    """A value inside a Search query's single quotes (docs.stripe.com/search#query-fields)."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


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
    return ChargeResult(status=status.value, psp_payment_id=_object_id(intent), failure=failure)


def failure_from_error(
    error: Mapping[str, Any], *, code: str | None = None, message: str | None = None
) -> Failure:
    """Stripe's error object (a 402 body's `error`, or a PaymentIntent's
    `last_payment_error`) → `Failure`. The card network's advice (`network_advice_code`) wins
    over Stripe's summary of it (`advice_code`); the classifier accepts both in one field."""
    return Failure(
        code=_text(error.get("code") or code, _SHORT),
        decline_code=_text(error.get("decline_code"), _SHORT),
        message=_text(error.get("message") or message, _MESSAGE),
        network_advice_code=_text(
            error.get("network_advice_code") or error.get("advice_code"), _SHORT
        ),
    )


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


def normalise_event(event: Any) -> WebhookEvent:
    """A verified Stripe event (parsed JSON) → `WebhookEvent`. Ids come from the metadata we
    put on the PaymentIntent / Checkout Session (a Charge carries them only if Stripe copied
    them; its `payment_intent` is always there)."""
    if not isinstance(event, dict):
        raise InvalidWebhook("webhook body is not a Stripe event")
    event_id, event_type = event.get("id"), event.get("type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if (
        not isinstance(event_id, str)
        or not isinstance(event_type, str)
        or not isinstance(obj, dict)
    ):
        raise InvalidWebhook("webhook body is not a Stripe event")
    found = obj.get("metadata")
    metadata: dict[str, Any] = found if isinstance(found, dict) else {}

    kind: WebhookKind = "ignored"
    payment_id: str | None = None
    customer_id: str | None = None
    new_method: PaymentMethod | None = None
    amount = obj.get("amount")
    failure: Failure | None = None
    match event_type:
        case "payment_intent.succeeded":
            kind, payment_id = "payment_succeeded", _object_id(obj)
            amount = obj.get("amount_received") or amount
        case "payment_intent.payment_failed":
            kind, payment_id = "payment_failed", _object_id(obj)
            error = obj.get("last_payment_error")
            failure = failure_from_error(error) if isinstance(error, dict) else None
        case "charge.refunded":
            kind, payment_id = "payment_refunded", _object_id(obj.get("payment_intent"))
            amount = obj.get("amount_refunded") or amount
        case "customer.updated" if (method := _new_default_method(data)) is not None:
            kind, customer_id, new_method = "payment_method_updated", _object_id(obj), method
        case "checkout.session.completed" | "checkout.session.async_payment_succeeded":
            # A session completed with a delayed method is `unpaid` until
            # `async_payment_succeeded`: only a paid session recovers the payment.
            if obj.get("payment_status") in ("paid", "no_payment_required"):
                kind = "checkout_completed"
            payment_id = _object_id(obj.get("payment_intent"))
            amount = obj.get("amount_total")
        case _:
            pass
    return WebhookEvent(
        psp="stripe",
        event_id=event_id,
        kind=kind,
        psp_type=event_type,
        merchant_id=_text(metadata.get("merchant_id"), _SHORT),
        payment_ref=_text(metadata.get("payment_ref"), _SHORT),
        recovery_id=_text(metadata.get("recovery_id"), _SHORT),
        psp_payment_id=payment_id,
        amount=amount if isinstance(amount, int) else None,
        currency=_text(obj.get("currency"), _SHORT),
        failure=failure,
        customer_id=customer_id,
        payment_method=new_method,
        raw=event,
    )


def _new_default_method(data: object) -> PaymentMethod | None:
    """The customer's new default payment method when a `customer.updated` event changed it
    (`data.previous_attributes.invoice_settings.default_payment_method`), else None.

    The customer updating a card sets it (the Customer Portal, the merchant's own page).
    `payment_method.attached` is not such a sign: our own Checkout Sessions attach the card
    a customer pays with (`setup_future_usage`), so attempting on it would charge the card
    that just paid."""
    if not isinstance(data, Mapping):
        return None
    obj, previous = data.get("object"), data.get("previous_attributes")
    if not isinstance(obj, Mapping) or not isinstance(previous, Mapping):
        return None
    before, now = previous.get("invoice_settings"), obj.get("invoice_settings")
    if not isinstance(before, Mapping) or "default_payment_method" not in before:
        return None
    method = _object_id(now.get("default_payment_method")) if isinstance(now, Mapping) else None
    if method is None or method == _object_id(before.get("default_payment_method")):
        return None
    return PaymentMethod(type="card", id=method)


def _auth_code(failure: Failure | None) -> str | None:
    if failure and AUTHENTICATION_REQUIRED in (failure.code, failure.decline_code):
        return AUTHENTICATION_REQUIRED
    return None


def _fully_refunded(charge: Any) -> bool:
    """`latest_charge` is an id unless expanded; only an expanded one says it was refunded."""
    return isinstance(charge, Mapping) and charge.get("refunded") is True


def _object_id(value: Any) -> str | None:
    """An expandable field: an id, an expanded object, or nothing."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return value["id"]
    return None


def _text(value: Any, limit: int) -> str | None:
    if value is None or value == "":
        return None
    return str(value)[:limit]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    if (value := headers.get(name)) is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)
