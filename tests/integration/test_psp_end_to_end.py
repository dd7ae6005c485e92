"""End to end through real PSP SDKs: a Stripe recovery against localstripe (a declined
charge, the customer's new card, a successful retry), and PSP webhooks driving recoveries."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from temporalio.testing import WorkflowEnvironment

from recovery.constants import workflow_id_for
from recovery.psp.dispatcher import PSPDispatcher, PSPNotConfigured
from recovery.psp.sealing import CredentialsCipher
from recovery.settings import Settings
from recovery.store import Store
from tests.helpers import (
    INGEST,
    Stack,
    add_merchant,
    assert_envelope,
    eventually,
    failure_body,
    has_next_attempt,
    recovery,
    running_stack,
)
from tests.helpers.bodies import (
    RAZORPAY_WHSEC,
    STRIPE_WHSEC,
    payment_intent,
    razorpay_event,
    razorpay_signed,
    stripe_event,
    stripe_signed,
)
from tests.helpers.stack import counts, razorpay_failure, stripe_failure
from tests.psp.localstripe_server import (
    CARD_DECLINED_ON_CHARGE,
    CARD_OK,
    attach_card,
    create_customer_with_card,
    pay_checkout,
    stripe_client,
    successful_charges,
)


async def test_stripe_decline_then_new_card_then_recovered_with_one_charge(
    psp_api: Stack, stripe_base: str
) -> None:
    api = psp_api
    saved = create_customer_with_card(stripe_base, CARD_DECLINED_ON_CHARGE)
    # no payment method on the event: Stripe charges the customer's default card, which is
    # where the customer's updated card goes
    ref = await stripe_failure(api, saved.customer_id, None)
    await api.http.post(f"/v1/recoveries/by_ref/{ref}/expedite", headers=api.auth())

    async def attempts(n: int, outcome: str) -> dict:
        rec = await recovery(api, ref)
        assert len(rec["attempts"]) == n and rec["attempts"][-1]["outcome"] == outcome, rec
        return rec

    rec = await eventually(lambda: attempts(1, "failed"), within=30)
    assert rec["attempts"][0]["code"] == "generic_decline" and rec["status"] == "active"
    assert successful_charges(stripe_base, saved.customer_id) == []

    attach_card(stripe_base, saved.customer_id, CARD_OK, make_default=True)
    await eventually(lambda: has_next_attempt(api, ref))
    await api.http.post(f"/v1/recoveries/by_ref/{ref}/expedite", headers=api.auth())
    await eventually(lambda: attempts(2, "succeeded"), within=30)

    async def recovered() -> bool:  # the end is written just after the attempt
        assert (await recovery(api, ref))["status"] == "recovered"
        return True

    await eventually(recovered)
    assert len(successful_charges(stripe_base, saved.customer_id)) == 1


async def test_a_signed_stripe_webhook_recovers_first(psp_api: Stack, stripe_base: str) -> None:
    api = psp_api
    saved = create_customer_with_card(stripe_base, CARD_OK)
    ref = await stripe_failure(api, saved.customer_id, saved.payment_method_id)
    body, headers = stripe_signed(
        stripe_event("payment_intent.succeeded", payment_intent(api.merchant_id, ref))
    )
    r = await api.http.post("/v1/webhooks/stripe", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "signalled_payment_succeeded"

    async def recovered() -> dict:
        rec = await recovery(api, ref)
        assert rec["status"] == "recovered", rec
        return rec

    rec = await eventually(recovered)
    assert rec["attempts"] == []  # never charged: the customer had paid
    assert successful_charges(stripe_base, saved.customer_id) == []
    again = await api.http.post("/v1/webhooks/stripe", content=body, headers=headers)
    assert again.status_code == 200 and again.json()["duplicate"] is True


async def test_bad_stripe_signatures_are_400_and_store_nothing(psp_api: Stack) -> None:
    api = psp_api
    before = await api.store.pool.fetchval("SELECT count(*) FROM webhook_events")
    event = stripe_event("payment_intent.succeeded", payment_intent(api.merchant_id, "order_x"))
    good, headers = stripe_signed(event)
    cases = [
        (good, stripe_signed(event, secret="whsec_wrong")[1]),
        (good.replace(b"4999", b"1"), headers),  # tampered body
        (good, stripe_signed(event, at=int(time.time()) - 3600)[1]),  # stale
        (good, {"Content-Type": "application/json"}),  # no signature
        (b"not json", stripe_signed({"x": 1})[1]),
    ]
    for body, hdrs in cases:
        r = await api.http.post("/v1/webhooks/stripe", content=body, headers=hdrs)
        assert_envelope(r, 400, "invalid_webhook")
    assert await api.store.pool.fetchval("SELECT count(*) FROM webhook_events") == before


async def test_webhook_for_an_unknown_payment_is_acknowledged_and_recorded(
    psp_api: Stack,
) -> None:
    api = psp_api
    body, headers = stripe_signed(
        stripe_event("payment_intent.succeeded", payment_intent(api.merchant_id, "never_seen"))
    )
    r = await api.http.post("/v1/webhooks/stripe", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["outcome"] == "unknown_payment"
    body, headers = stripe_signed(stripe_event("customer.created", {"id": "cus_1"}))
    r = await api.http.post("/v1/webhooks/stripe", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["outcome"] == "ignored"


# ---- webhooks per PSP account: signed identity, a merchant's own account, tenant isolation --


async def own_account(api: Stack, merchant_id: str, psp: str, **values: str) -> None:
    """The merchant's own PSP credentials, sealed as `recovery psp set` stores them; its API
    base is a closed local port, so nothing here can reach a real PSP."""
    values = {"api_base": "http://127.0.0.1:9", **values}
    sealed = CredentialsCipher(api.settings.credentials_keys()).seal(merchant_id, psp, values)
    await api.store.set_psp_credentials(merchant_id, psp, sealed.key_id, sealed.blob)


async def test_one_signed_razorpay_body_with_fresh_event_id_headers_counts_once(
    psp_api: Stack,
) -> None:
    api = psp_api
    ref = await razorpay_failure(api)
    event = razorpay_event("payment.failed", api.merchant_id, ref, "pay_replayed1")
    answers = []
    for header_id in ("evt_first", "evt_replay_1", "evt_replay_2"):
        raw, headers = razorpay_signed(event, RAZORPAY_WHSEC, header_id)
        r = await api.http.post("/v1/webhooks/razorpay", content=raw, headers=headers)
        assert r.status_code == 200, r.text
        answers.append((r.json()["duplicate"], r.json()["outcome"]))
    assert answers == [
        (False, "signalled_payment_failed"),
        (True, "duplicate"),
        (True, "duplicate"),
    ]
    stored = await api.store.pool.fetchval(
        "SELECT count(*) FROM webhook_events WHERE psp_payment_id = 'pay_replayed1'"
    )
    queued = await api.store.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE workflow_id = $1",
        workflow_id_for(api.merchant_id, ref),
    )
    assert (stored, queued) == (1, 2)  # the ingest and one webhook failure


async def test_a_merchant_own_razorpay_account_verifies_with_its_own_secret(
    psp_api: Stack,
) -> None:
    api = psp_api
    own_secret = "merchant-own-razorpay-webhook-secret"
    await own_account(
        api,
        api.merchant_id,
        "razorpay",
        key_id="rzp_test_own",
        key_secret="rzp_own_key_secret",
        webhook_secret=own_secret,
    )
    ref = await razorpay_failure(api)
    own_url = f"/v1/webhooks/razorpay/{api.merchant_id}"
    event = razorpay_event("payment.captured", api.merchant_id, ref, "pay_own1")
    with_env_secret = razorpay_signed(event, RAZORPAY_WHSEC, "e1")
    with_own_secret = razorpay_signed(event, own_secret, "e2")

    r = await api.http.post(own_url, content=with_env_secret[0], headers=with_env_secret[1])
    assert_envelope(r, 400, "invalid_webhook")
    r = await api.http.post(
        "/v1/webhooks/razorpay", content=with_own_secret[0], headers=with_own_secret[1]
    )
    assert_envelope(r, 400, "invalid_webhook")
    assert (await recovery(api, ref))["status"] == "active"

    r = await api.http.post(own_url, content=with_own_secret[0], headers=with_own_secret[1])
    assert r.status_code == 200, r.text
    assert r.json() == {
        "received": True,
        "duplicate": False,
        "outcome": "signalled_payment_succeeded",
    }

    async def recovered() -> bool:
        assert (await recovery(api, ref))["status"] == "recovered"
        return True

    await eventually(recovered)


async def test_a_merchant_own_account_acts_on_its_own_payments_only(
    psp_api: Stack, stripe_base: str
) -> None:
    """Merchant B holds its own webhook secret, so it can sign anything: an event naming
    merchant A's payment, under the id A's real event will carry. Neither may touch A."""
    api = psp_api
    other, _ = await add_merchant(api.store)
    other_secret = "whsec_other_merchant_0123456789"
    await own_account(api, other, "stripe", api_key="sk_test_other", webhook_secret=other_secret)
    saved = create_customer_with_card(stripe_base, CARD_OK)
    ref = await stripe_failure(api, saved.customer_id, saved.payment_method_id)
    event = stripe_event("payment_intent.succeeded", payment_intent(api.merchant_id, ref))

    body, headers = stripe_signed(event, secret=other_secret)
    r = await api.http.post(f"/v1/webhooks/stripe/{other}", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert (r.json()["duplicate"], r.json()["outcome"]) == (False, "other_merchant")
    rec = await recovery(api, ref)
    assert rec["status"] == "active" and rec["attempts"] == []

    body, headers = stripe_signed(event)  # A's real event, same id, from the environment's
    r = await api.http.post("/v1/webhooks/stripe", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert (r.json()["duplicate"], r.json()["outcome"]) == (False, "signalled_payment_succeeded")

    async def recovered() -> bool:
        assert (await recovery(api, ref))["status"] == "recovered"
        return True

    await eventually(recovered)


async def test_an_account_without_a_webhook_secret_is_a_clear_422_alike_for_any_merchant(
    psp_api: Stack,
) -> None:
    api = psp_api
    await own_account(api, api.merchant_id, "stripe", api_key="sk_test_no_webhooks")
    body, headers = stripe_signed(stripe_event("customer.created", {"id": "cus_1"}))
    messages = set()
    for merchant in (api.merchant_id, "mer_does_not_exist"):
        r = await api.http.post(f"/v1/webhooks/stripe/{merchant}", content=body, headers=headers)
        messages.add(assert_envelope(r, 422, "psp_not_configured")["message"])
    assert len(messages) == 1
    r = await api.http.post(f"/v1/webhooks/stripe/{'m' * 300}", content=body, headers=headers)
    assert r.status_code == 422


async def test_the_environment_webhook_secret_alone_verifies(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment
) -> None:
    address = dev_env.client.service_client.config.target_host
    async with running_stack(
        store,
        pg_dsn,
        address,
        worker=False,
        stripe_webhook_secret=STRIPE_WHSEC,
        razorpay_webhook_secret=RAZORPAY_WHSEC,
    ) as api:
        assert api.settings.stripe_api_key is None and api.settings.razorpay_key_id is None
        body, headers = stripe_signed(stripe_event("customer.created", {"id": "cus_1"}))
        r = await api.http.post("/v1/webhooks/stripe", content=body, headers=headers)
        assert r.status_code == 200 and r.json()["outcome"] == "ignored", r.text
        event = razorpay_event("payment.captured", api.merchant_id, "never_seen", "pay_env1")
        raw, headers = razorpay_signed(event, RAZORPAY_WHSEC, "e1")
        r = await api.http.post("/v1/webhooks/razorpay", content=raw, headers=headers)
        assert r.status_code == 200 and r.json()["outcome"] == "unknown_payment", r.text


def customer_updated(customer_id: str, new_default: str | None, old_default: str | None) -> dict:
    """Stripe's `customer.updated` for a changed default payment method: the object as it is
    now, `previous_attributes` with what changed (docs.stripe.com/api/events/object)."""
    event = stripe_event(
        "customer.updated",
        {
            "id": customer_id,
            "object": "customer",
            "invoice_settings": {"default_payment_method": new_default},
            "metadata": {},
        },
    )
    event["data"]["previous_attributes"] = {
        "invoice_settings": {"default_payment_method": old_default}
    }
    return event


async def test_a_new_default_card_at_stripe_is_attempted_at_once(
    psp_api: Stack, stripe_base: str
) -> None:
    api = psp_api
    saved = create_customer_with_card(stripe_base, CARD_DECLINED_ON_CHARGE)
    ref = await stripe_failure(api, saved.customer_id, saved.payment_method_id)
    new_card = attach_card(stripe_base, saved.customer_id, CARD_OK, make_default=True)

    async def post(event: dict, url: str = "/v1/webhooks/stripe", secret: str = STRIPE_WHSEC):
        body, headers = stripe_signed(event, secret=secret)
        r = await api.http.post(url, content=body, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()["outcome"]

    # not a sign of a new card: an attach (our own checkouts attach the card just paid with),
    # another field changed, or another merchant's own account naming this customer
    attached = {"id": new_card, "object": "payment_method", "customer": saved.customer_id}
    assert await post(stripe_event("payment_method.attached", attached)) == "ignored"
    email = stripe_event("customer.updated", {"id": saved.customer_id, "object": "customer"})
    email["data"]["previous_attributes"] = {"email": "old@example.com"}
    assert await post(email) == "ignored"
    other, _ = await add_merchant(api.store)
    other_secret = "whsec_other_merchant_0123456789"
    await own_account(api, other, "stripe", api_key="sk_test_other", webhook_secret=other_secret)
    theirs = customer_updated(saved.customer_id, new_card, saved.payment_method_id)
    assert await post(theirs, f"/v1/webhooks/stripe/{other}", other_secret) == "no_open_recovery"
    rec = await recovery(api, ref)
    assert rec["attempts"] == [] and rec["next_attempt_at"] is not None

    changed = customer_updated(saved.customer_id, new_card, saved.payment_method_id)
    assert await post(changed) == "signalled_payment_method_updated"

    async def recovered() -> dict:
        rec = await recovery(api, ref)
        assert rec["status"] == "recovered", rec
        return rec

    rec = await eventually(recovered, within=30)
    assert [a["outcome"] for a in rec["attempts"]] == ["succeeded"]
    charges = successful_charges(stripe_base, saved.customer_id)
    assert [c["payment_method"] for c in charges] == [new_card]


async def test_a_signed_razorpay_webhook_recovers(psp_api: Stack) -> None:
    api = psp_api
    ref = await razorpay_failure(api)
    raw, headers = razorpay_signed(
        razorpay_event("payment.captured", api.merchant_id, ref, "pay_e2e1"),
        RAZORPAY_WHSEC,
        "evt_rzp_e2e_1",
    )
    bad = await api.http.post(
        "/v1/webhooks/razorpay", content=raw, headers={"X-Razorpay-Signature": "0" * 64}
    )
    assert_envelope(bad, 400, "invalid_webhook")
    r = await api.http.post("/v1/webhooks/razorpay", content=raw, headers=headers)
    assert r.status_code == 200 and r.json()["outcome"] == "signalled_payment_succeeded", r.text

    async def recovered() -> bool:
        assert (await recovery(api, ref))["status"] == "recovered"
        return True

    await eventually(recovered)


async def test_stripe_without_credentials_is_a_clear_422(api: Stack) -> None:
    r = await api.http.post(INGEST, json=failure_body(psp="stripe"), headers=api.auth())
    err = assert_envelope(r, 422, "psp_not_configured")
    assert err["field"] == "psp" and "stripe" in err["message"]


# ---- hosted checkouts at Stripe (Checkout Sessions on the localstripe proxy) ------------------


async def stripe_checkout(api: Stack, ref: str) -> str:
    """Issue a retry link and open its checkout, as the customer does: the session's URL."""
    r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/link", headers=api.auth())
    assert r.status_code == 201, r.text
    opened = await api.http.post(urlsplit(r.json()["url"]).path)
    assert opened.status_code == 303, opened.text
    return opened.headers["location"]


def session_of(stripe_base: str, url: str) -> dict:
    return stripe_client(stripe_base).v1.checkout.sessions.retrieve(url.rsplit("/", 1)[1]).to_dict()


async def webhook_for_paid_checkout(api: Stack, stripe_base: str, intent_id: str) -> dict:
    """What Stripe posts when a checkout's PaymentIntent succeeds: the real object."""
    intent = stripe_client(stripe_base).v1.payment_intents.retrieve(intent_id).to_dict()
    body, headers = stripe_signed(stripe_event("payment_intent.succeeded", intent))
    r = await api.http.post("/v1/webhooks/stripe", content=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_stripe_checkout_b_after_checkout_a_recovered_takes_no_money(
    psp_api: Stack, stripe_base: str
) -> None:
    """Reproduced bug: two links, two Checkout Sessions; A paid and recovered the payment,
    and B still took the money (nothing expired the session)."""
    api = psp_api
    saved = create_customer_with_card(stripe_base, CARD_DECLINED_ON_CHARGE)
    ref = await stripe_failure(api, saved.customer_id, None)
    first, second = await stripe_checkout(api, ref), await stripe_checkout(api, ref)
    session = session_of(stripe_base, first)
    assert session["customer"] == saved.customer_id  # the session names the customer
    assert time.time() + 29 * 60 < session["expires_at"] <= time.time() + 24 * 3600

    status, paid = pay_checkout(first, CARD_OK)
    assert status == 200 and paid["status"] == "succeeded", paid
    await webhook_for_paid_checkout(api, stripe_base, paid["id"])

    async def closed() -> dict:
        rec = await recovery(api, ref)
        assert rec["status"] == "recovered", rec
        assert session_of(stripe_base, second)["status"] == "expired"
        return rec

    rec = await eventually(closed, within=30)
    status, refused = pay_checkout(second, CARD_OK)
    assert status == 400 and "expired" in refused["error"]["message"]
    assert len(successful_charges(stripe_base, saved.customer_id)) == 1
    assert [p["disposition"] for p in rec["payments"]] == ["recovered"]
    # the card the customer paid with is saved for the next off-session attempts
    methods = stripe_client(stripe_base).v1.payment_methods.list(
        {"customer": saved.customer_id, "type": "card"}
    )
    assert paid["payment_method"] in [m.id for m in methods.data]


async def test_stripe_checkout_paid_twice_before_closing_refunds_the_second(
    psp_api: Stack, stripe_base: str
) -> None:
    api = psp_api
    saved = create_customer_with_card(stripe_base, CARD_DECLINED_ON_CHARGE)
    ref = await stripe_failure(api, saved.customer_id, None)
    first, second = await stripe_checkout(api, ref), await stripe_checkout(api, ref)
    payments = [pay_checkout(url, CARD_OK) for url in (first, second)]  # before any webhook
    assert [status for status, _ in payments] == [200, 200]
    for _, paid in payments:
        await webhook_for_paid_checkout(api, stripe_base, paid["id"])

    async def refunded() -> dict:
        rec = await recovery(api, ref)
        assert rec["status"] == "recovered", rec
        assert [p["refund_status"] for p in rec["payments"]] == [None, "succeeded"], rec
        return rec

    rec = await eventually(refunded, within=30)
    duplicate = rec["payments"][1]
    assert duplicate["disposition"] == "duplicate"
    assert duplicate["psp_payment_id"] == payments[1][1]["id"]
    refunds = stripe_client(stripe_base).v1.refunds.list({"payment_intent": payments[1][1]["id"]})
    assert [(r.amount, r.status) for r in refunds.data] == [(4999, "succeeded")]


async def test_a_stripe_checkout_opened_before_a_cancel_takes_no_money_after_it(
    psp_api: Stack, stripe_base: str
) -> None:
    api = psp_api
    saved = create_customer_with_card(stripe_base, CARD_DECLINED_ON_CHARGE)
    ref = await stripe_failure(api, saved.customer_id, None)
    checkout = await stripe_checkout(api, ref)
    r = await api.http.post(
        f"/v1/recoveries/by_ref/{ref}/cancel", json={"reason": "x"}, headers=api.auth()
    )
    assert r.status_code == 200 and r.json()["status"] == "cancelled"

    async def expired() -> bool:
        assert session_of(stripe_base, checkout)["status"] == "expired"
        return True

    await eventually(expired, within=30)
    status, _ = pay_checkout(checkout, CARD_OK)
    assert status == 400
    assert successful_charges(stripe_base, saved.customer_id) == []
    rec = await recovery(api, ref)
    assert rec["status"] == "cancelled" and rec["paid"] is False


async def test_the_simulator_is_refused_unless_allowed(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment
) -> None:
    address = dev_env.client.service_client.config.target_host
    async with running_stack(store, pg_dsn, address, worker=False, allow_simulator=False) as api:
        r = await api.http.post(INGEST, json=failure_body(psp="simulator"), headers=api.auth())
        err = assert_envelope(r, 422, "psp_disabled")
        assert err["field"] == "psp" and "ALLOW_SIMULATOR" in err["message"]
        assert await counts(api, api.merchant_id) == (0, 0, 0)
        # the worker's dispatcher (charges, status checks, refunds) refuses it as well
        with pytest.raises(PSPNotConfigured, match="ALLOW_SIMULATOR"):
            await PSPDispatcher(store, api.settings).for_merchant(api.merchant_id, "simulator")
    assert Settings.model_fields["allow_simulator"].default is False  # the production default
