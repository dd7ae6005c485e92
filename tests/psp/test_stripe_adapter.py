"""The Stripe adapter against localstripe (charges, declines, idempotency, refunds, webhooks)
and against a local server answering like Stripe's documented API (Checkout Sessions, which
localstripe lacks; full decline bodies; 5xx, 429, 409, timeouts). Nothing leaves 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, get_args
from urllib.parse import parse_qsl

import pytest
import stripe

from recovery.classifier import classify
from recovery.models import (
    ChargeRequest,
    ClassifyRequest,
    Customer,
    Failure,
    PaymentMethod,
    WebhookEvent,
)
from recovery.psp.base import (
    CheckoutRequest,
    InvalidWebhook,
    PaymentStatus,
    TransientPSPError,
)
from recovery.psp.stripe import StripeAdapter, verify_webhook
from recovery.psp.stripe.transformers import (
    CHECKOUT_MAX_LIFETIME,
    CHECKOUT_MIN_LIFETIME,
    StripePaymentIntentStatus,
    StripeRequestRejected,
    StripeUnexpectedResponse,
    canonical_status,
    charge_result,
    checkout_expiry,
)
from recovery.psp.stripe.webhooks import normalise_event
from tests.helpers import free_port
from tests.psp.localstripe_server import (
    CARD_DECLINED_ON_CHARGE,
    CARD_OK,
    CARD_REQUIRES_AUTH,
    TEST_API_KEY,
    attach_card,
    charges_for_customer,
    create_customer_with_card,
    inject_server_errors,
    payment_intents_for_customer,
    register_webhook_endpoint,
    reset,
    script_decline,
    stripe_client,
    successful_charges,
)

WEBHOOK_SECRET = "whsec_test_recovery"

# The SDK's httpx client posts its form body with `data=` (httpx prefers `content=`).
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


def charge_request(
    customer_id: str | None, pm_id: str | None, *, key: str | None = None, amount: int = 4999
) -> ChargeRequest:
    return ChargeRequest(
        merchant_id="m_1",
        recovery_id="rec_1",
        payment_ref="order_42",
        attempt=2,
        idempotency_key=key or f"rec_1-attempt-2-{uuid.uuid4().hex}",
        psp="stripe",
        amount=amount,
        currency="usd",
        customer=Customer(id=customer_id),
        payment_method=PaymentMethod(type="card", id=pm_id),
        original_failure=Failure(code="card_declined", decline_code="insufficient_funds"),
    )


# ---- localstripe ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def adapter(stripe_base: str) -> AsyncIterator[StripeAdapter]:
    a = StripeAdapter(TEST_API_KEY, api_base=stripe_base)
    yield a
    await a.aclose()


async def test_off_session_charge_succeeds_with_our_metadata(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    card = create_customer_with_card(stripe_base, CARD_OK)
    result = await adapter.create_payment_intent(
        charge_request(card.customer_id, card.payment_method_id)
    )

    assert result.status == "succeeded"
    assert result.failure is None
    assert result.psp_payment_id and result.psp_payment_id.startswith("pi_")
    intent = stripe_client(stripe_base).v1.payment_intents.retrieve(result.psp_payment_id).to_dict()
    assert intent["metadata"] == {
        "merchant_id": "m_1",
        "payment_ref": "order_42",
        "recovery_id": "rec_1",
        "attempt": "2",
    }
    assert (intent["amount"], intent["currency"]) == (4999, "usd")
    assert (intent["customer"], intent["payment_method"]) == (
        card.customer_id,
        card.payment_method_id,
    )
    assert len(successful_charges(stripe_base, card.customer_id)) == 1


async def test_a_decline_is_a_result_with_stripes_codes(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    card = create_customer_with_card(stripe_base, CARD_DECLINED_ON_CHARGE)
    result = await adapter.create_payment_intent(
        charge_request(card.customer_id, card.payment_method_id)
    )

    assert result.status == "failed"
    assert result.failure is not None
    assert result.failure.code == "card_declined"
    assert result.failure.message == "Your card was declined."
    # Stripe's 402 (as the proxy gives it): a card_error with a decline code and the
    # PaymentIntent, whose id is the attempt's payment
    assert result.failure.decline_code == "generic_decline"
    assert successful_charges(stripe_base, card.customer_id) == []
    [intent] = payment_intents_for_customer(stripe_base, card.customer_id)
    assert intent["status"] == "requires_payment_method"
    assert result.psp_payment_id == intent["id"]

    # The declined PaymentIntent reads as failed, with the decline from `last_payment_error`.
    retrieved = await adapter.retrieve_payment_intent(intent["id"])
    assert retrieved.status == "failed"
    assert retrieved.failure == result.failure


async def test_the_classifier_sees_exactly_what_stripe_sends_on_a_decline(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    card = create_customer_with_card(stripe_base, CARD_OK)
    script_decline(
        stripe_base,
        card.customer_id,
        decline_code="insufficient_funds",
        message="Your card has insufficient funds.",
        advice_code="try_again_later",
        network_advice_code="02",
        network_decline_code="51",
    )
    req = charge_request(card.customer_id, card.payment_method_id)
    result = await adapter.create_payment_intent(req)
    assert result.status == "failed" and result.failure is not None
    assert (result.failure.code, result.failure.decline_code) == (
        "card_declined",
        "insufficient_funds",
    )
    assert result.failure.network_advice_code == "02"  # the network's, before Stripe's own
    assert charges_for_customer(stripe_base, card.customer_id) == []
    found = await adapter.find_charge(req)
    assert found == result  # a lookup reads the same decline
    verdict = classify(
        ClassifyRequest(
            psp="stripe",
            code=result.failure.code,
            decline_code=result.failure.decline_code,
            message=result.failure.message,
            network_advice_code=result.failure.network_advice_code,
        )
    )
    assert verdict.category == "funds" and verdict.action == "retry"
    # the next charge (no script) goes through
    again = await adapter.create_payment_intent(
        charge_request(card.customer_id, card.payment_method_id)
    )
    assert again.status == "succeeded"


async def test_a_card_needing_authentication_goes_to_the_customer(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    """Off-session, Stripe answers a card that wants 3-D Secure with a 402
    `authentication_required` and leaves the PaymentIntent `requires_payment_method`."""
    card = create_customer_with_card(stripe_base, CARD_REQUIRES_AUTH)
    result = await adapter.create_payment_intent(
        charge_request(card.customer_id, card.payment_method_id)
    )

    assert result.status == "requires_action"
    assert result.failure is not None and result.failure.code == "authentication_required"
    assert result.failure.decline_code == "authentication_required"
    assert charges_for_customer(stripe_base, card.customer_id) == []
    assert result.psp_payment_id is not None
    retrieved = await adapter.retrieve_payment_intent(result.psp_payment_id)
    assert retrieved.status == "requires_action"  # for the customer, never charged again


async def test_the_same_idempotency_key_charges_once(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    card = create_customer_with_card(stripe_base, CARD_OK)
    req = charge_request(card.customer_id, card.payment_method_id)

    first = await adapter.create_payment_intent(req)
    again = await adapter.create_payment_intent(req)  # a retried activity

    assert first.status == again.status == "succeeded"
    assert again.psp_payment_id == first.psp_payment_id
    assert [pi["id"] for pi in payment_intents_for_customer(stripe_base, card.customer_id)] == [
        first.psp_payment_id
    ]
    assert len(charges_for_customer(stripe_base, card.customer_id)) == 1

    # Another attempt (another key) is another charge.
    other = await adapter.create_payment_intent(
        charge_request(card.customer_id, card.payment_method_id)
    )
    assert other.psp_payment_id != first.psp_payment_id
    assert len(successful_charges(stripe_base, card.customer_id)) == 2


async def test_an_answer_lost_to_a_replayed_500_is_found_by_looking_the_attempt_up(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    """Stripe saved a 500 for the key after the charge ran: every retry with that key gets
    the 500 again. Only a lookup tells, and it finds the one charge."""
    card = create_customer_with_card(stripe_base, CARD_OK)
    req = charge_request(card.customer_id, card.payment_method_id)
    inject_server_errors(stripe_base, "/v1/payment_intents", ran=True)
    for _ in range(3):
        with pytest.raises(TransientPSPError):
            await adapter.create_payment_intent(req)
    found = await adapter.find_charge(req)
    assert found is not None and found.status == "succeeded"
    (intent,) = payment_intents_for_customer(stripe_base, card.customer_id)
    assert found.psp_payment_id == intent["id"]
    assert len(successful_charges(stripe_base, card.customer_id)) == 1
    # another attempt of the same recovery is not this one
    other = req.model_copy(update={"attempt": 3, "idempotency_key": f"{req.idempotency_key}-3"})
    assert await adapter.find_charge(other) is None


async def test_a_500_before_the_charge_ran_is_found_to_have_charged_nothing(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    card = create_customer_with_card(stripe_base, CARD_OK)
    req = charge_request(card.customer_id, card.payment_method_id)
    inject_server_errors(stripe_base, "/v1/payment_intents", ran=False)
    with pytest.raises(TransientPSPError):
        await adapter.create_payment_intent(req)
    with pytest.raises(TransientPSPError):  # the key's saved answer, replayed
        await adapter.create_payment_intent(req)
    assert await adapter.find_charge(req) is None
    assert charges_for_customer(stripe_base, card.customer_id) == []


async def test_an_attempt_without_a_customer_is_looked_up_with_the_search_api(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    recovery_id = f"rec_{uuid.uuid4().hex}"
    req = charge_request(None, "pm_card_visa").model_copy(update={"recovery_id": recovery_id})
    assert await adapter.find_charge(req) is None
    intent = stripe_client(stripe_base).v1.payment_intents.create(
        {
            "amount": 4999,
            "currency": "usd",
            "metadata": {"recovery_id": recovery_id, "attempt": str(req.attempt)},
        }
    )
    found = await adapter.find_charge(req)
    assert found is not None and found.psp_payment_id == intent.id


async def test_concurrent_requests_with_one_key_charge_once(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    card = create_customer_with_card(stripe_base, CARD_OK)
    req = charge_request(card.customer_id, card.payment_method_id)

    outcomes = await asyncio.gather(
        *(adapter.create_payment_intent(req) for _ in range(4)), return_exceptions=True
    )

    # Each one either got the charge or was told to retry (409: the key is in use).
    ids = {o.psp_payment_id for o in outcomes if not isinstance(o, BaseException)}
    assert all(isinstance(o, TransientPSPError) for o in outcomes if isinstance(o, BaseException))
    retried = await adapter.create_payment_intent(req)
    assert ids <= {retried.psp_payment_id}
    assert len(successful_charges(stripe_base, card.customer_id)) == 1


async def test_a_replayed_decline_is_the_same_decline(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    card = create_customer_with_card(stripe_base, CARD_DECLINED_ON_CHARGE)
    req = charge_request(card.customer_id, card.payment_method_id)

    first = await adapter.create_payment_intent(req)
    again = await adapter.create_payment_intent(req)

    assert first == again
    assert len(charges_for_customer(stripe_base, card.customer_id)) == 1


async def test_a_key_reused_with_other_parameters_is_rejected(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    card = create_customer_with_card(stripe_base, CARD_OK)
    req = charge_request(card.customer_id, card.payment_method_id)
    await adapter.create_payment_intent(req)

    with pytest.raises(StripeRequestRejected) as caught:
        await adapter.create_payment_intent(req.model_copy(update={"amount": 5000}))
    assert caught.value.http_status == 400
    assert not isinstance(caught.value, TransientPSPError)
    assert len(charges_for_customer(stripe_base, card.customer_id)) == 1


async def test_without_a_payment_method_the_customers_default_is_charged(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    card = create_customer_with_card(stripe_base, CARD_DECLINED_ON_CHARGE)
    declined = await adapter.create_payment_intent(charge_request(card.customer_id, None))
    assert declined.status == "failed"

    new_pm = attach_card(stripe_base, card.customer_id, CARD_OK)  # the customer updates it
    result = await adapter.create_payment_intent(charge_request(card.customer_id, None))

    assert result.status == "succeeded"
    [charge] = successful_charges(stripe_base, card.customer_id)
    assert charge["payment_method"] == new_pm


async def test_no_payment_method_and_no_customer_is_rejected(adapter: StripeAdapter) -> None:
    with pytest.raises(StripeRequestRejected):
        await adapter.create_payment_intent(charge_request(None, None))


async def test_retrieve_and_refund(adapter: StripeAdapter, stripe_base: str) -> None:
    card = create_customer_with_card(stripe_base, CARD_OK)
    paid = await adapter.create_payment_intent(
        charge_request(card.customer_id, card.payment_method_id)
    )
    assert paid.psp_payment_id is not None
    assert (await adapter.retrieve_payment_intent(paid.psp_payment_id)).status == "succeeded"

    partial = await adapter.refund_payment(paid.psp_payment_id, amount=1000, idempotency_key="rf-1")
    assert partial.psp_refund_id.startswith("re_")
    assert (partial.status, partial.amount) == ("succeeded", 1000)
    replayed = await adapter.refund_payment(
        paid.psp_payment_id, amount=1000, idempotency_key="rf-1"
    )
    assert replayed.psp_refund_id == partial.psp_refund_id
    assert (await adapter.retrieve_payment_intent(paid.psp_payment_id)).status == "succeeded"

    assert await adapter.retrieve_refund(partial.psp_refund_id) == partial

    rest = await adapter.refund_payment(paid.psp_payment_id, amount=3999, idempotency_key="rf-2")
    assert rest.amount == 3999
    assert (await adapter.retrieve_payment_intent(paid.psp_payment_id)).status == "refunded"
    refunds = stripe_client(stripe_base).v1.refunds.list({"limit": 100}).to_dict()["data"]
    assert sum(r["amount"] for r in refunds if r["payment_intent"] == paid.psp_payment_id) == 4999


async def test_refunding_a_failed_payment_is_rejected(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    card = create_customer_with_card(stripe_base, CARD_DECLINED_ON_CHARGE)
    await adapter.create_payment_intent(charge_request(card.customer_id, card.payment_method_id))
    [intent] = payment_intents_for_customer(stripe_base, card.customer_id)

    with pytest.raises(StripeRequestRejected):
        await adapter.refund_payment(intent["id"], amount=None, idempotency_key="rf-failed")


async def test_retrieving_an_unknown_payment_is_rejected(adapter: StripeAdapter) -> None:
    with pytest.raises(StripeRequestRejected) as caught:
        await adapter.retrieve_payment_intent("pi_doesnotexist")
    assert caught.value.http_status == 404


async def test_localstripes_own_signed_webhooks_verify(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    """Webhooks as localstripe signs and sends them, not just as our tests sign them."""
    with capture_server() as capture:
        register_webhook_endpoint(
            stripe_base,
            capture.url,
            WEBHOOK_SECRET,
            events=["payment_intent.succeeded"],
            endpoint_id=f"t-{uuid.uuid4().hex[:8]}",
        )
        card = create_customer_with_card(stripe_base, CARD_OK)
        paid = await adapter.create_payment_intent(
            charge_request(card.customer_id, card.payment_method_id)
        )
        deadline = time.monotonic() + 15
        event = None
        while event is None or event.psp_payment_id != paid.psp_payment_id:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "localstripe sent no webhook for the payment"
            got = await asyncio.to_thread(capture.received.get, timeout=remaining)
            event = verify(got.body, got.headers)

    assert event.kind == "payment_succeeded"
    assert (event.merchant_id, event.payment_ref, event.recovery_id) == (
        "m_1",
        "order_42",
        "rec_1",
    )
    assert (event.amount, event.currency) == (4999, "usd")
    assert event.event_id.startswith("evt_")


async def test_reset_forgets_objects_and_saved_responses(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    card = create_customer_with_card(stripe_base, CARD_OK)
    req = charge_request(card.customer_id, card.payment_method_id)
    await adapter.create_payment_intent(req)

    reset(stripe_base)

    with pytest.raises(stripe.InvalidRequestError):
        stripe_client(stripe_base).v1.customers.retrieve(card.customer_id)
    with pytest.raises(StripeRequestRejected) as caught:  # not replayed: the customer is gone
        await adapter.create_payment_intent(req)
    assert caught.value.http_status == 404


# ---- webhooks, signed here -------------------------------------------------------------------


def verify(body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
    return verify_webhook(WEBHOOK_SECRET, body, headers)


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """Stripe's scheme: t=<unix time>,v1=HMAC-SHA256(secret, "<t>.<body>")."""
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event_body(event_type: str, obj: dict[str, Any]) -> bytes:
    event = {
        "id": f"evt_{uuid.uuid4().hex[:14]}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {"object": obj},
    }
    return json.dumps(event).encode()


OUR_METADATA = {"merchant_id": "m_1", "payment_ref": "order_42", "recovery_id": "rec_1"}


def test_a_signed_payment_succeeded_event_is_verified_and_normalised() -> None:
    body = event_body(
        "payment_intent.succeeded",
        {
            "id": "pi_123",
            "object": "payment_intent",
            "amount": 4999,
            "amount_received": 4999,
            "currency": "usd",
            "status": "succeeded",
            "metadata": {**OUR_METADATA, "attempt": "2"},
        },
    )

    event = verify(body, {"Stripe-Signature": sign(body)})

    assert event.psp == "stripe" and event.kind == "payment_succeeded"
    assert event.psp_type == "payment_intent.succeeded"
    assert event.event_id == json.loads(body)["id"]
    assert (event.merchant_id, event.payment_ref, event.recovery_id) == (
        "m_1",
        "order_42",
        "rec_1",
    )
    assert (event.psp_payment_id, event.amount, event.currency) == ("pi_123", 4999, "usd")
    assert event.failure is None
    # Header names are case-insensitive, and several v1 signatures (a rotated secret) pass.
    rotated = f"{sign(body, 'whsec_old')},{sign(body).split(',')[1]}"
    assert verify(body, {"stripe-signature": rotated}).kind == "payment_succeeded"


def test_a_payment_failed_event_carries_the_decline() -> None:
    body = event_body(
        "payment_intent.payment_failed",
        {
            "id": "pi_9",
            "object": "payment_intent",
            "amount": 1200,
            "currency": "eur",
            "status": "requires_payment_method",
            "metadata": OUR_METADATA,
            "last_payment_error": {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds.",
                "advice_code": "try_again_later",
                "network_advice_code": "02",
            },
        },
    )

    event = verify(body, {"Stripe-Signature": sign(body)})

    assert event.kind == "payment_failed"
    assert event.failure == Failure(
        code="card_declined",
        decline_code="insufficient_funds",
        message="Your card has insufficient funds.",
        network_advice_code="02",
    )
    assert (event.psp_payment_id, event.amount, event.currency) == ("pi_9", 1200, "eur")


@pytest.mark.parametrize(
    ("event_type", "obj", "kind", "payment_id", "amount"),
    [
        (
            "charge.refunded",
            {"id": "ch_1", "object": "charge", "payment_intent": "pi_7", "amount": 4999,
             "amount_refunded": 4999, "currency": "usd", "metadata": OUR_METADATA},
            "payment_refunded", "pi_7", 4999,
        ),
        (
            "checkout.session.completed",
            {"id": "cs_test_1", "object": "checkout.session", "payment_intent": "pi_8",
             "payment_status": "paid", "amount_total": 4999, "currency": "usd",
             "metadata": {**OUR_METADATA, "link_id": "lnk_1"}},
            "checkout_completed", "pi_8", 4999,
        ),
        (
            # Paid later with a delayed method: not yet a payment.
            "checkout.session.completed",
            {"id": "cs_test_2", "object": "checkout.session", "payment_intent": "pi_9",
             "payment_status": "unpaid", "amount_total": 4999, "currency": "usd",
             "metadata": OUR_METADATA},
            "ignored", "pi_9", 4999,
        ),
        (
            "checkout.session.async_payment_succeeded",
            {"id": "cs_test_2", "object": "checkout.session", "payment_intent": "pi_9",
             "payment_status": "paid", "amount_total": 4999, "currency": "usd",
             "metadata": OUR_METADATA},
            "checkout_completed", "pi_9", 4999,
        ),
        (
            "customer.created",
            {"id": "cus_1", "object": "customer", "metadata": {}},
            "ignored", None, None,
        ),
    ],
)  # fmt: skip
def test_other_events_are_normalised(
    event_type: str, obj: dict[str, Any], kind: str, payment_id: str | None, amount: int | None
) -> None:
    body = event_body(event_type, obj)

    event = verify(body, {"Stripe-Signature": sign(body)})

    assert (event.kind, event.psp_payment_id, event.amount) == (kind, payment_id, amount)
    assert event.psp_type == event_type
    if obj["metadata"]:
        assert (event.merchant_id, event.payment_ref, event.recovery_id) == (
            "m_1",
            "order_42",
            "rec_1",
        )


def _bad_webhooks() -> list[tuple[str, bytes, dict[str, str]]]:
    body = event_body("payment_intent.succeeded", {"id": "pi_1", "metadata": OUR_METADATA})
    not_json = b"this is not json"
    return [
        ("tampered body", body.replace(b"pi_1", b"pi_2"), {"Stripe-Signature": sign(body)}),
        ("wrong secret", body, {"Stripe-Signature": sign(body, "whsec_someone_else")}),
        (
            "stale timestamp",
            body,
            {"Stripe-Signature": sign(body, at=int(time.time()) - 301)},
        ),
        ("missing header", body, {}),
        ("empty header", body, {"Stripe-Signature": ""}),
        ("garbage header", body, {"Stripe-Signature": "nonsense"}),
        ("no v1 signature", body, {"Stripe-Signature": f"t={int(time.time())},v0=abc"}),
        ("signed but not JSON", not_json, {"Stripe-Signature": sign(not_json)}),
        ("signed but not UTF-8", b"\xff\xfe", {"Stripe-Signature": sign(b"\xff\xfe")}),
        ("signed JSON, not an event", b"[1, 2]", {"Stripe-Signature": sign(b"[1, 2]")}),
    ]


@pytest.mark.parametrize(("case", "body", "headers"), _bad_webhooks(), ids=lambda v: str(v)[:20])
def test_bad_webhooks_are_refused(case: str, body: bytes, headers: dict[str, str]) -> None:
    with pytest.raises(InvalidWebhook) as caught:
        verify(body, headers)
    # Nothing of the secret or the payload leaks into the error, nor into its chain.
    assert WEBHOOK_SECRET not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ or caught.value.__context__ is None


def test_webhooks_are_refused_without_a_secret() -> None:
    body = event_body("payment_intent.succeeded", {"id": "pi_1", "metadata": {}})
    with pytest.raises(InvalidWebhook):
        verify_webhook(None, body, {"Stripe-Signature": sign(body)})


def test_a_tolerance_of_zero_is_refused() -> None:
    """The SDK skips the timestamp check for 0: a replayed old signature would pass."""
    body = event_body("payment_intent.succeeded", {"id": "pi_1", "metadata": {}})
    with pytest.raises(ValueError, match="tolerance must be positive"):
        verify_webhook(WEBHOOK_SECRET, body, {"Stripe-Signature": sign(body)}, 0)


def test_within_tolerance_is_accepted() -> None:
    body = event_body("payment_intent.succeeded", {"id": "pi_1", "metadata": {}})
    at = int(time.time()) - 200
    assert verify(body, {"Stripe-Signature": sign(body, at=at)}).kind == ("payment_succeeded")


# ---- status mapping --------------------------------------------------------------------------


def test_every_stripe_status_has_a_canonical_status() -> None:
    expected = {
        "requires_payment_method": PaymentStatus.FAILED,
        "requires_confirmation": PaymentStatus.REQUIRES_ACTION,
        "requires_action": PaymentStatus.REQUIRES_ACTION,
        "processing": PaymentStatus.PROCESSING,
        "requires_capture": PaymentStatus.PROCESSING,
        "canceled": PaymentStatus.CANCELED,
        "succeeded": PaymentStatus.SUCCEEDED,
    }
    assert set(expected) == set(get_args(StripePaymentIntentStatus))
    for status, canonical in expected.items():
        assert canonical_status(status) is canonical  # type: ignore[arg-type]
    assert canonical_status("requires_payment_method", "authentication_required") is (
        PaymentStatus.REQUIRES_ACTION
    )


def test_an_off_session_authentication_failure_goes_to_the_customer() -> None:
    """Real Stripe: an off-session charge needing 3-D Secure fails with
    `authentication_required` and leaves the PaymentIntent in `requires_payment_method`."""
    result = charge_result(
        {
            "id": "pi_1",
            "status": "requires_payment_method",
            "last_payment_error": {
                "code": "authentication_required",
                "decline_code": "authentication_required",
                "message": "This transaction requires authentication.",
            },
        }
    )
    assert result.status == "requires_action"
    assert result.failure is not None and result.failure.decline_code == "authentication_required"


def test_an_unknown_status_is_not_guessed() -> None:
    with pytest.raises(StripeUnexpectedResponse):
        charge_result({"id": "pi_1", "status": "requires_teleportation"})


# ---- a local server answering like Stripe's documented API ------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up


Responder = Callable[[Received], tuple[int, Any]]
"""(status, body): a body that is a str is sent as is, anything else as JSON."""


@dataclass
class FakeServer:
    url: str
    requests: list[Received] = field(default_factory=list)
    received: queue.Queue[Received] = field(default_factory=queue.Queue)
    respond: Responder = lambda _: (200, {})
    delay_seconds: float = 0.0


@contextlib.contextmanager
def fake_stripe(respond: Responder | None = None) -> Iterator[FakeServer]:
    """A tiny HTTP server on a thread: records each request and answers with `respond`."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            got = Received(
                self.command, self.path, dict(self.headers.items()), self.rfile.read(length)
            )
            fake.requests.append(got)
            fake.received.put(got)
            if fake.delay_seconds:
                time.sleep(fake.delay_seconds)
            status, payload = fake.respond(got)
            body = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Request-Id", "req_fake")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = _handle

    server = _QuietServer(("127.0.0.1", 0), Handler)
    fake = FakeServer(url=f"http://127.0.0.1:{server.server_address[1]}")
    if respond is not None:
        fake.respond = respond
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


capture_server = fake_stripe  # a webhook receiver is the same thing: record, answer 200


@contextlib.asynccontextmanager
async def adapter_for(url: str, **kwargs: Any) -> AsyncIterator[StripeAdapter]:
    a = StripeAdapter("sk_test_fake", api_base=url, **kwargs)
    try:
        yield a
    finally:
        await a.aclose()


def checkout_request(**changes: Any) -> CheckoutRequest:
    values: dict[str, Any] = {
        "merchant_id": "m_1",
        "recovery_id": "rec_1",
        "payment_ref": "order_42",
        "link_id": "lnk_1",
        "amount": 4999,
        "currency": "usd",
        "customer": Customer(id="cus_1", email="a@example.com"),
        "description": "Order 42",
        "success_url": "https://pay.example.com/pay/done",
        "cancel_url": "https://pay.example.com/pay/retry/tok",
        "idempotency_key": "rec_1-link-lnk_1",
    }
    return CheckoutRequest(**{**values, **changes})


async def test_create_checkout_session_sends_what_stripe_documents() -> None:
    session = {
        "id": "cs_test_a1b2c3",
        "object": "checkout.session",
        "mode": "payment",
        "status": "open",
        "payment_status": "unpaid",
        "url": "https://checkout.stripe.com/c/pay/cs_test_a1b2c3",
    }
    with fake_stripe(lambda _: (200, session)) as fake:
        async with adapter_for(fake.url) as adapter:
            checkout = await adapter.create_checkout_session(checkout_request())

    assert checkout.psp_checkout_id == "cs_test_a1b2c3"
    assert checkout.url == "https://checkout.stripe.com/c/pay/cs_test_a1b2c3"
    [sent] = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/checkout/sessions")
    assert sent.headers["Idempotency-Key"] == "rec_1-link-lnk_1"
    assert sent.headers["Authorization"] == "Bearer sk_test_fake"
    form = dict(sent.form)
    expires_at = int(form.pop("expires_at"))
    assert time.time() + 30 * 60 < expires_at <= time.time() + 24 * 3600  # what Stripe takes
    assert form == {
        "mode": "payment",
        "payment_intent_data[setup_future_usage]": "off_session",
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": "4999",
        "line_items[0][price_data][product_data][name]": "Order 42",
        "success_url": "https://pay.example.com/pay/done",
        "cancel_url": "https://pay.example.com/pay/retry/tok",
        "client_reference_id": "order_42",
        "customer": "cus_1",
        **{
            f"{prefix}[{k}]": v
            for prefix in ("metadata", "payment_intent_data[metadata]")
            for k, v in {**OUR_METADATA, "link_id": "lnk_1"}.items()
        },
    }


def test_a_checkout_expires_with_its_link_within_what_stripe_accepts() -> None:
    now = 1_800_000_000.0
    at = datetime.fromtimestamp
    assert checkout_expiry(at(now + 3 * 3600, UTC), now) == now + 3 * 3600
    assert checkout_expiry(at(now + 15 * 60, UTC), now) == now + CHECKOUT_MIN_LIFETIME
    assert checkout_expiry(at(now + 7 * 86400, UTC), now) == now + CHECKOUT_MAX_LIFETIME
    assert checkout_expiry(None, now) == now + CHECKOUT_MAX_LIFETIME


async def test_checkout_for_a_customer_known_only_by_email() -> None:
    session = {
        "id": "cs_test_x",
        "object": "checkout.session",
        "url": "https://checkout.stripe.com/c/pay/cs_test_x",
    }
    with fake_stripe(lambda _: (200, session)) as fake:
        async with adapter_for(fake.url) as adapter:
            await adapter.create_checkout_session(
                checkout_request(customer=Customer(email="a@example.com"))
            )
    form = fake.requests[0].form
    assert form["customer_email"] == "a@example.com" and "customer" not in form


async def test_a_payment_intent_request_carries_the_off_session_parameters() -> None:
    """What goes to Stripe itself (localstripe's proxy drops `automatic_payment_methods`)."""
    intent = {"id": "pi_1", "object": "payment_intent", "status": "succeeded", "metadata": {}}
    with fake_stripe(lambda _: (200, intent)) as fake:
        async with adapter_for(fake.url) as adapter:
            await adapter.create_payment_intent(charge_request("cus_1", "pm_1", key="k-1"))
    [sent] = fake.requests
    assert (sent.method, sent.path, sent.headers["Idempotency-Key"]) == (
        "POST",
        "/v1/payment_intents",
        "k-1",
    )
    assert sent.form == {
        "amount": "4999",
        "currency": "usd",
        "customer": "cus_1",
        "payment_method": "pm_1",
        "off_session": "true",
        "confirm": "true",
        "automatic_payment_methods[enabled]": "true",
        "automatic_payment_methods[allow_redirects]": "never",
        "metadata[merchant_id]": "m_1",
        "metadata[payment_ref]": "order_42",
        "metadata[recovery_id]": "rec_1",
        "metadata[attempt]": "2",
    }


async def test_a_stripe_shaped_decline_keeps_every_code() -> None:
    """A 402 as Stripe documents it (docs.stripe.com/api/errors), with the PaymentIntent."""
    error = {
        "error": {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
            "advice_code": "try_again_later",
            "network_advice_code": "24",
            "network_decline_code": "51",
            "charge": "ch_1",
            "payment_intent": {
                "id": "pi_declined",
                "object": "payment_intent",
                "status": "requires_payment_method",
            },
        }
    }
    with fake_stripe(lambda _: (402, error)) as fake:
        async with adapter_for(fake.url) as adapter:
            result = await adapter.create_payment_intent(charge_request("cus_1", "pm_1"))

    assert result.status == "failed"
    assert result.psp_payment_id == "pi_declined"
    assert result.failure == Failure(
        code="card_declined",
        decline_code="insufficient_funds",
        message="Your card has insufficient funds.",
        network_advice_code="24",
    )


async def test_stripes_advice_code_is_used_without_a_network_advice_code() -> None:
    error = {
        "error": {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "do_not_honor",
            "advice_code": "do_not_try_again",
            "message": "Your card was declined.",
        }
    }
    with fake_stripe(lambda _: (402, error)) as fake:
        async with adapter_for(fake.url) as adapter:
            result = await adapter.create_payment_intent(charge_request("cus_1", "pm_1"))
    assert result.status == "failed" and result.psp_payment_id is None
    assert result.failure is not None
    assert result.failure.network_advice_code == "do_not_try_again"


async def test_an_off_session_authentication_decline_is_requires_action() -> None:
    error = {
        "error": {
            "type": "card_error",
            "code": "authentication_required",
            "decline_code": "authentication_required",
            "message": "Your card was declined. This transaction requires authentication.",
            "payment_intent": {"id": "pi_3ds", "status": "requires_payment_method"},
        }
    }
    with fake_stripe(lambda _: (402, error)) as fake:
        async with adapter_for(fake.url) as adapter:
            result = await adapter.create_payment_intent(charge_request("cus_1", "pm_1"))
    assert (result.status, result.psp_payment_id) == ("requires_action", "pi_3ds")
    assert result.failure is not None and result.failure.code == "authentication_required"


def _api_error(kind: str, message: str, code: str | None = None) -> dict[str, Any]:
    error = {"type": kind, "message": message}
    return {"error": {**error, "code": code} if code else error}


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, _api_error("api_error", "An unknown error occurred")),
        (502, _api_error("api_error", "Bad gateway")),
        (503, _api_error("api_error", "Service unavailable")),
        (429, _api_error("invalid_request_error", "Too many requests", "rate_limit")),
        (409, _api_error("idempotency_error", "Key in use", "idempotency_key_in_use")),
        (408, _api_error("api_error", "Request timeout")),
        (200, "<html>a proxy's error page</html>"),
        (400, _api_error("invalid_request_error", "lock timeout", "lock_timeout")),
    ],
)
async def test_transient_failures_raise_transient(status: int, body: Any) -> None:
    with fake_stripe(lambda _: (status, body)) as fake:
        async with adapter_for(fake.url) as adapter:
            with pytest.raises(TransientPSPError):
                await adapter.create_payment_intent(charge_request("cus_1", "pm_1"))
            with pytest.raises(TransientPSPError):
                await adapter.retrieve_payment_intent("pi_1")
            with pytest.raises(TransientPSPError):
                await adapter.refund_payment("pi_1", amount=None, idempotency_key="rf")
            with pytest.raises(TransientPSPError):
                await adapter.create_checkout_session(checkout_request())
    assert len(fake.requests) == 4  # no retries inside the SDK: Temporal retries


async def test_a_closed_port_is_transient() -> None:
    async with adapter_for(f"http://127.0.0.1:{free_port()}") as adapter:
        with pytest.raises(TransientPSPError):
            await adapter.create_payment_intent(charge_request("cus_1", "pm_1"))


async def test_a_timeout_is_transient() -> None:
    intent = {"id": "pi_1", "object": "payment_intent", "status": "succeeded"}
    with fake_stripe(lambda _: (200, intent)) as fake:
        fake.delay_seconds = 2.0
        async with adapter_for(fake.url, timeout_seconds=0.3) as adapter:
            started = time.monotonic()
            with pytest.raises(TransientPSPError):
                await adapter.create_payment_intent(charge_request("cus_1", "pm_1"))
            assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, _api_error("invalid_request_error", "No such customer: 'cus_1'", "resource_missing")),
        (401, _api_error("invalid_request_error", "Invalid API Key provided: sk_test_****fake")),
        (403, _api_error("invalid_request_error", "The provided key does not have access")),
        (404, _api_error("invalid_request_error", "Unrecognized request URL")),
    ],
)  # fmt: skip
async def test_our_mistakes_are_rejected_not_retried(status: int, body: dict[str, Any]) -> None:
    with fake_stripe(lambda _: (status, body)) as fake:
        async with adapter_for(fake.url) as adapter:
            with pytest.raises(StripeRequestRejected) as caught:
                await adapter.create_payment_intent(charge_request("cus_1", "pm_1"))
    assert caught.value.http_status == status
    assert caught.value.request_id == "req_fake"


# ---- the card a charge would use (card-network limits) ------------------------------------


async def test_the_default_card_resolves_to_one_card_under_every_id(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    card = create_customer_with_card(stripe_base, CARD_OK)
    default = await adapter.resolve_card(Customer(id=card.customer_id), PaymentMethod())
    assert default.payment_method_id == card.payment_method_id
    assert default.brand == "visa" and default.key.startswith("stripe:fingerprint:")
    # the same card number saved again (another PaymentMethod id): the same card
    again = attach_card(stripe_base, card.customer_id, CARD_OK, make_default=False)
    named = await adapter.resolve_card(Customer(id=card.customer_id), PaymentMethod(id=again))
    assert named.key == default.key and named.payment_method_id == again
    # another card is another card, and becomes what the default mode charges
    other = attach_card(stripe_base, card.customer_id, CARD_DECLINED_ON_CHARGE)
    moved = await adapter.resolve_card(Customer(id=card.customer_id), PaymentMethod())
    assert moved.payment_method_id == other and moved.key != default.key


async def test_a_legacy_default_source_is_the_default_card(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    client = stripe_client(stripe_base)
    token = client.v1.tokens.create(
        {"card": {"number": CARD_OK, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
    )
    customer = client.v1.customers.create({"source": token.id}).to_dict()
    assert customer["default_source"] and not customer["invoice_settings"].get(
        "default_payment_method"
    )
    card = await adapter.resolve_card(Customer(id=customer["id"]), PaymentMethod())
    assert card.payment_method_id == customer["default_source"]
    same = create_customer_with_card(stripe_base, CARD_OK)  # the same number as a PaymentMethod
    assert (
        card.key == (await adapter.resolve_card(Customer(id=same.customer_id), PaymentMethod())).key
    )


async def test_no_card_to_resolve_is_rejected(adapter: StripeAdapter, stripe_base: str) -> None:
    with pytest.raises(StripeRequestRejected):
        await adapter.resolve_card(Customer(), PaymentMethod())
    bare = stripe_client(stripe_base).v1.customers.create({})
    with pytest.raises(StripeRequestRejected):
        await adapter.resolve_card(Customer(id=bare.id), PaymentMethod())


@pytest.mark.parametrize(
    ("now", "before", "expected"),
    [
        ({"default_payment_method": "pm_new"}, {"default_payment_method": "pm_old"}, "pm_new"),
        ({"default_payment_method": {"id": "pm_new"}}, {"default_payment_method": None}, "pm_new"),
        ({"default_payment_method": "pm_same"}, {"default_payment_method": "pm_same"}, None),
        ({"default_payment_method": None}, {"default_payment_method": "pm_old"}, None),
        ({"default_payment_method": "pm_new"}, {"footer": "x"}, None),
        ({"default_payment_method": "pm_new"}, None, None),
    ],
)
def test_customer_updated_is_a_new_method_only_when_its_default_changed(
    now: dict, before: dict | None, expected: str | None
) -> None:
    data: dict = {"object": {"id": "cus_1", "object": "customer", "invoice_settings": now}}
    if before is not None:
        data["previous_attributes"] = {"invoice_settings": before}
    event = normalise_event({"id": "evt_1", "type": "customer.updated", "data": data})
    if expected is None:
        assert event.kind == "ignored" and event.payment_method is None
    else:
        assert event.kind == "payment_method_updated" and event.customer_id == "cus_1"
        assert event.payment_method is not None and event.payment_method.id == expected
