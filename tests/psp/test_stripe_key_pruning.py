"""Stripe forgets an idempotency key 24 hours after its first request; a try of an attempt
that comes later (workers down for a day, a task long in its queue) would run as a new
charge. The charge activity looks such an attempt up first (real activity, Postgres and
localstripe behind the proxy, which prunes keys as Stripe does)."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.recovery import RecoveryActivities
from recovery.models import ChargeRequest, Customer, Failure, PaymentMethod
from recovery.psp.dispatcher import PSPDispatcher
from recovery.settings import Settings
from recovery.store import Store
from tests.helpers import failure_body, ingest
from tests.psp.localstripe_server import (
    CARD_OK,
    KEY_LIFETIME,
    TEST_API_KEY,
    advance_clock,
    create_customer_with_card,
    inject_server_errors,
    localstripe,
    successful_charges,
)


@pytest.mark.parametrize("answer_lost", [True, False])
async def test_a_try_after_the_key_was_pruned_is_looked_up_before_charging(
    store: Store, merchant: str, answer_lost: bool
) -> None:
    with localstripe() as stripe_base:
        settings = Settings(
            environment="development", stripe_api_key=TEST_API_KEY, stripe_api_base=stripe_base
        )
        activities = RecoveryActivities(store, PSPDispatcher(store, settings), settings)
        card = create_customer_with_card(stripe_base, CARD_OK)
        body = failure_body(psp="stripe", pm=card.payment_method_id)
        res = await ingest(store, merchant, body)
        req = ChargeRequest(
            merchant_id=merchant,
            recovery_id=res.body["recovery_id"],
            payment_ref=body["payment_ref"],
            attempt=1,
            idempotency_key=f"{res.body['recovery_id']}:attempt:1",
            psp="stripe",
            amount=4999,
            currency="usd",
            customer=Customer(id=card.customer_id, email="c@example.com"),
            payment_method=PaymentMethod(type="card", id=card.payment_method_id),
            original_failure=Failure(code="card_declined", decline_code="insufficient_funds"),
        )
        # the first try: charged at Stripe, and its answer lost (a 500 saved for the key)
        inject_server_errors(stripe_base, "/v1/payment_intents", ran=answer_lost)
        with pytest.raises(ApplicationError, match="transient"):
            await ActivityEnvironment().run(activities.charge_payment, req)
        # a day later the next try: Stripe has pruned the key
        advance_clock(stripe_base, KEY_LIFETIME + 60)
        await store.pool.execute(
            "UPDATE attempts SET created_at = created_at - interval '25 hours'"
            " WHERE idempotency_key = $1",
            req.idempotency_key,
        )
        result = await ActivityEnvironment().run(activities.charge_payment, req)
        charges = successful_charges(stripe_base, card.customer_id)
        assert result.status == "succeeded"
        assert len(charges) == 1, "charged twice: the pruned key ran as a new charge"
        rec = await store.get_recovery(merchant, body["payment_ref"])
        assert [a.outcome for a in rec.attempts] == ["succeeded"]
