"""PSP webhooks as Razorpay and Stripe deliver them (tests/psp/webhook_delivery.py): shuffled,
some twice, retried after failures. A late authorisation told that way (the debit `failed`
while the bank was silent, then authorised and captured) recovers the payment once, with
one payment recorded and nothing charged or refunded on top (the local Razorpay fake, the
real `razorpay` SDK, a Temporal dev server)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.helpers import INGEST, Stack, eventually, failure_body, recovery
from tests.helpers.bodies import payment_intent, stripe_event, stripe_signed
from tests.helpers.stack import expedite, stripe_failure
from tests.psp.localstripe_server import CARD_OK, create_customer_with_card, successful_charges
from tests.psp.razorpay_server import FakeRazorpay
from tests.psp.webhook_delivery import Post, WebhookDelivery

RECURRING = r"/v1/payments/create/recurring"


def poster(api: Stack, psp: str) -> Post:
    """Deliveries to our webhook endpoint for `psp`."""

    async def post(raw: bytes, headers: dict[str, str]) -> int:
        answer = await api.http.post(f"/v1/webhooks/{psp}", content=raw, headers=headers)
        return answer.status_code

    return post


async def delivered_and_recovered_once(
    api: Stack, delivery: WebhookDelivery, ref: str, psp_payment_id: str
) -> dict[str, Any]:
    """Deliver what is queued; every event ends answered 200 and the recovery ends
    `recovered` by that one payment."""
    labels = {label for label, _, _ in delivery.queued}
    await delivery.deliver()
    for label in labels:
        assert delivery.answered(label)[-1] == 200, (label, delivery.log)

    async def recovered() -> dict[str, Any]:
        rec = await recovery(api, ref)
        assert rec["status"] == "recovered", rec
        return rec

    rec = await eventually(recovered, within=60)
    assert [(p["psp_payment_id"], p["disposition"]) for p in rec["payments"]] == [
        (psp_payment_id, "recovered")
    ]
    return rec


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_late_authorisation_told_by_shuffled_repeated_webhooks_recovers_once(
    rzp_api: Stack, rzp: FakeRazorpay, seed: int
) -> None:
    api = rzp_api
    body = failure_body(psp="razorpay", decline_code="insufficient_funds")
    body["payment_method"] = {"type": "card", "id": f"token_timeout_once_{seed}"}
    body["currency"] = "inr"
    body["customer"] = {"id": f"cust_Hooks000000{seed}", "email": "c@example.com"}
    r = await api.http.post(INGEST, json=body, headers=api.auth())
    assert r.status_code == 202, r.text
    ref = body["payment_ref"]

    async def scheduled() -> bool:
        return (await recovery(api, ref))["next_attempt_at"] is not None

    await eventually(scheduled, within=60)
    await expedite(api, ref)

    async def waiting_for_the_customer() -> dict:
        rec = await recovery(api, ref)
        assert rec["status"] == "awaiting_customer", rec
        return rec

    rec = await eventually(waiting_for_the_customer, within=60)
    assert [a["code"] for a in rec["attempts"]] == ["payment_timed_out"]
    [debit] = rzp.payments

    delivery = WebhookDelivery(poster(api, "razorpay"), random.Random(seed), unreachable=2)
    delivery.queue("failed", *rzp.signed_webhook("payment.failed", payment_id=debit["id"]))
    rzp.late_authorise(debit["id"])  # the bank took the money after all
    delivery.queue("authorized", *rzp.signed_webhook("payment.authorized", payment_id=debit["id"]))
    delivery.queue("captured", *rzp.signed_webhook("payment.captured", payment_id=debit["id"]))
    rec = await delivered_and_recovered_once(api, delivery, ref, debit["id"])
    assert [a["outcome"] for a in rec["attempts"]] == ["succeeded"]
    assert len(rzp.requests_to("POST", RECURRING)) == 1 and rzp.refunds == {}
    stored = await api.store.pool.fetchval(
        "SELECT count(*) FROM webhook_events WHERE psp = 'razorpay'"
        " AND payload->'payload'->'payment'->'entity'->>'id' = $1",
        debit["id"],
    )
    assert stored == 3, "each event recorded once, however often it came"


@pytest.mark.parametrize("seed", [4, 5])
async def test_stripe_events_shuffled_repeated_and_retried_recover_once(
    psp_api: Stack, stripe_base: str, seed: int
) -> None:
    """The customer paid with a PaymentIntent of their own; its `payment_intent.succeeded`
    and a stale `payment_intent.payment_failed` of an earlier try come shuffled, some twice,
    after failed deliveries: recovered once, one payment, each event recorded once."""
    api = psp_api
    card = create_customer_with_card(stripe_base, CARD_OK)
    ref = await stripe_failure(api, card.customer_id, card.payment_method_id)
    earlier = payment_intent(api.merchant_id, ref, status="requires_payment_method")
    earlier["last_payment_error"] = {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "insufficient_funds",
    }
    paid = payment_intent(api.merchant_id, ref)

    delivery = WebhookDelivery(poster(api, "stripe"), random.Random(seed), unreachable=3)
    delivery.queue("failed", *stripe_signed(stripe_event("payment_intent.payment_failed", earlier)))
    delivery.queue("succeeded", *stripe_signed(stripe_event("payment_intent.succeeded", paid)))
    rec = await delivered_and_recovered_once(api, delivery, ref, paid["id"])
    assert rec["attempts"] == []  # nothing charged by us
    assert successful_charges(stripe_base, card.customer_id) == []
    stored = await api.store.pool.fetchval(
        "SELECT count(*) FROM webhook_events WHERE psp = 'stripe'"
        " AND payload->'data'->'object'->'metadata'->>'payment_ref' = $1",
        ref,
    )
    assert stored == 2, "each event recorded once, however often it came"
