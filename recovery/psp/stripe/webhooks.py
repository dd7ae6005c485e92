"""Stripe's webhooks: the account's webhook secret alone verifies them (no adapter, no API
key), and each event is read as our `WebhookEvent`. Payloads, signatures and secrets are
never logged or chained into errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import stripe

from recovery.models import Failure, PaymentMethod, WebhookEvent, WebhookKind
from recovery.psp.base import InvalidWebhook, clip, header
from recovery.psp.stripe.transformers import failure_from_error, object_id

WEBHOOK_TOLERANCE_SECONDS = 300  # the SDK's default: a signature older than 5 minutes is refused


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
    signature = header(headers, "Stripe-Signature")
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
            kind, payment_id = "payment_succeeded", object_id(obj)
            amount = obj.get("amount_received") or amount
        case "payment_intent.payment_failed":
            kind, payment_id = "payment_failed", object_id(obj)
            error = obj.get("last_payment_error")
            failure = failure_from_error(error) if isinstance(error, dict) else None
        case "charge.refunded":
            kind, payment_id = "payment_refunded", object_id(obj.get("payment_intent"))
            amount = obj.get("amount_refunded") or amount
        case "customer.updated" if (method := _new_default_method(data)) is not None:
            kind, customer_id, new_method = "payment_method_updated", object_id(obj), method
        case "checkout.session.completed" | "checkout.session.async_payment_succeeded":
            # A session completed with a delayed method is `unpaid` until
            # `async_payment_succeeded`: only a paid session recovers the payment.
            if obj.get("payment_status") in ("paid", "no_payment_required"):
                kind = "checkout_completed"
            payment_id = object_id(obj.get("payment_intent"))
            amount = obj.get("amount_total")
        case _:
            pass
    return WebhookEvent(
        psp="stripe",
        event_id=event_id,
        kind=kind,
        psp_type=event_type,
        merchant_id=clip(metadata.get("merchant_id")),
        payment_ref=clip(metadata.get("payment_ref")),
        recovery_id=clip(metadata.get("recovery_id")),
        psp_payment_id=payment_id,
        amount=amount if isinstance(amount, int) else None,
        currency=clip(obj.get("currency")),
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
    method = object_id(now.get("default_payment_method")) if isinstance(now, Mapping) else None
    if method is None or method == object_id(before.get("default_payment_method")):
        return None
    return PaymentMethod(type="card", id=method)
