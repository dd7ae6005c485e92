"""Razorpay's webhooks: the account's webhook secret alone verifies them (no adapter, no
API key), and each event is read as our `WebhookEvent`. Nothing here logs a payload or a
secret."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from recovery.models import Failure, PaymentMethod, WebhookEvent, WebhookKind
from recovery.psp.base import InvalidWebhook, header
from recovery.psp.razorpay.transformers import (
    failure_from_payment,
    lower,
    notes,
    signed_by,
    text,
)

SIGNATURE_HEADER = "X-Razorpay-Signature"


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
    signature = header(headers, SIGNATURE_HEADER)
    if not signature:
        raise InvalidWebhook(f"missing {SIGNATURE_HEADER} header")
    if not signed_by(secret, payload, signature):
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
    customer_id = text(payment.get("customer_id")) if payment else None
    method = _token_method(payment, payment.get("token_id")) if payment else None

    kind: WebhookKind
    failure: Failure | None = None
    # Where our ids are, most specific first: the link carries them for a link payment, the
    # payment (and its order) for our recurring charges.
    notes_from: list[Mapping[str, Any] | None]
    amount_from: Mapping[str, Any] | None = payment
    payment_id = text(payment.get("id")) if payment else None
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
                payment_id = text(refund.get("payment_id"))
        case "payment_link.paid":
            kind = "checkout_completed"
            notes_from = [link, payment, order]
            amount_from = payment or link
        case "token.confirmed" if token is not None:
            kind = "payment_method_updated"
            notes_from = []
            customer_id = text(token.get("customer_id"))  # absent in Razorpay's samples
            method = _token_method(token, token.get("id"))
        case _:
            kind = "ignored"
            notes_from = [link, payment, order, refund]
            amount_from = refund or payment or link or order

    ours: dict[str, Any] = {}
    for entity in reversed(notes_from):
        ours.update(notes(entity))
    return WebhookEvent(
        psp="razorpay",
        event_id=event_id,
        kind=kind,
        psp_type=event_type,
        merchant_id=text(ours.get("merchant_id")),
        payment_ref=text(ours.get("payment_ref")),
        recovery_id=text(ours.get("recovery_id")),
        psp_payment_id=payment_id,
        amount=_amount(amount_from),
        currency=lower(amount_from.get("currency")) if amount_from else None,
        failure=failure,
        customer_id=customer_id,
        payment_method=method,
        raw=dict(body),
    )


def _token_method(entity: Mapping[str, Any], token_id: object) -> PaymentMethod | None:
    """The saved token an entity names, as the payment method our charges use."""
    if not isinstance(token_id, str) or not token_id:
        return None
    return PaymentMethod(type=text(entity.get("method")) or "card", id=token_id)
