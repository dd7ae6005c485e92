"""What the recovery activities tell the workflow's retry policies when a PSP call goes wrong
(`activities/recovery.py`), each activity run alone in temporalio's `ActivityEnvironment`
with the real store (PostgreSQL) and real PSPs (the simulator, localstripe behind the
Stripe SDK):

- a PSP the merchant has no credentials for, or one this deployment turns off: a
  non-retryable `PSPNotConfigured`, before anything is recorded;
- a request the PSP refuses: a non-retryable `PSPRequestRejected`;
- a PSP that fails for now (a 5xx): a retryable `TransientPSPError`, retried under the same
  idempotency key, so a retry never charges twice;
- a slow PSP: the charge heartbeats while it waits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.recovery import RecoveryActivities
from recovery import constants as names
from recovery.models import (
    CardVerdict,
    ChargeRequest,
    ChargeResult,
    Customer,
    Failure,
    PaymentMethod,
    RefundRequest,
)
from recovery.policy import CardAttemptRequest, RetryPolicy
from recovery.psp.dispatcher import PSPDispatcher
from recovery.settings import Settings
from recovery.store import Store
from tests.helpers import failure_body, ingest
from tests.psp.localstripe_server import (
    CARD_OK,
    TEST_API_KEY,
    create_customer_with_card,
    inject_server_errors,
    successful_charges,
)


def activities_with(store: Store, **settings: Any) -> RecoveryActivities:
    """The activities as the worker builds them, with `settings` (development defaults)."""
    tuning = Settings(**{"environment": "development", **settings})
    return RecoveryActivities(store, PSPDispatcher(store, tuning), tuning)


async def first_attempt(
    store: Store,
    merchant: str,
    *,
    psp: str,
    pm: str | None,
    customer: str | None = None,
    currency: str = "usd",
) -> ChargeRequest:
    """The first attempt's charge of a recovery ingested now."""
    body = failure_body(psp=psp, pm=pm or "unused")
    res = await ingest(store, merchant, body)
    recovery_id = res.body["recovery_id"]
    return ChargeRequest(
        merchant_id=merchant,
        recovery_id=recovery_id,
        payment_ref=body["payment_ref"],
        attempt=1,
        idempotency_key=f"{recovery_id}:attempt:1",
        psp=psp,
        amount=body["amount"],
        currency=currency,
        customer=Customer(id=customer, email="c@example.com"),
        payment_method=PaymentMethod(type="card", id=pm),
        original_failure=Failure(code="card_declined", decline_code="insufficient_funds"),
    )


async def charge_refused(
    activities: RecoveryActivities, req: ChargeRequest, env: ActivityEnvironment | None = None
) -> ApplicationError:
    """Run `charge_payment`; the ApplicationError it fails with (fails the test if none)."""
    with pytest.raises(ApplicationError) as refused:
        await (env or ActivityEnvironment()).run(activities.charge_payment, req)
    return refused.value


async def attempt_rows(store: Store, req: ChargeRequest) -> list[str]:
    rows = await store.pool.fetch(
        "SELECT status FROM attempts WHERE idempotency_key = $1", req.idempotency_key
    )
    return [r["status"] for r in rows]


# ---- a PSP that is not configured -------------------------------------------------------------


@pytest.mark.parametrize(
    ("psp", "settings"),
    [
        ("razorpay", {}),  # no credentials, for the merchant or in the environment
        ("stripe", {}),
        ("simulator", {"allow_simulator": False}),  # moves no money: off in production
    ],
)
async def test_a_psp_that_is_not_configured_fails_the_charge_for_good_before_it_is_recorded(
    store: Store, merchant: str, psp: str, settings: dict[str, Any]
) -> None:
    activities = activities_with(store, **settings)
    req = await first_attempt(store, merchant, psp=psp, pm="pm_sim_succeed_on_1")
    error = await charge_refused(activities, req)
    assert error.type == "PSPNotConfigured" and error.non_retryable, error
    assert psp in error.message
    assert await attempt_rows(store, req) == []  # nothing began: no attempt to settle later


async def test_a_card_the_psp_cannot_name_is_still_counted_under_what_we_know(
    store: Store, merchant: str
) -> None:
    """A PSP without credentials cannot say which card it would charge: the attempt is still
    reserved against the card-network limits, on the payment method named."""
    activities = activities_with(store)

    async def reserve(attempt: int) -> CardVerdict:
        req = CardAttemptRequest(
            merchant_id=merchant,
            psp="razorpay",
            customer=Customer(id="cust_1"),
            payment_method=PaymentMethod(type="card", id="token_unknown"),
            idempotency_key=f"{merchant}:attempt:{attempt}",
            at=datetime.now(UTC),
            policy=RetryPolicy(),
        )
        return await ActivityEnvironment().run(activities.reserve_card_attempt, req)

    first = await reserve(1)
    assert first.card.key == "razorpay:pm:token_unknown" and first.card.brand is None
    assert first.not_before is None and first.last_30_days == 0
    second = await reserve(2)  # the first one counts on that card
    assert second.card == first.card and second.last_30_days == 1


# ---- a request the PSP refuses ----------------------------------------------------------------


async def test_a_request_stripe_refuses_fails_the_charge_for_good(
    store: Store, merchant: str, stripe_base: str
) -> None:
    """Stripe answers a PaymentMethod it does not know with a 4xx `invalid_request_error`:
    the same request would be refused again, so it is not retried."""
    activities = activities_with(store, stripe_api_key=TEST_API_KEY, stripe_api_base=stripe_base)
    card = create_customer_with_card(stripe_base, CARD_OK)
    req = await first_attempt(
        store, merchant, psp="stripe", pm="pm_nobody_has_this_one", customer=card.customer_id
    )
    error = await charge_refused(activities, req)
    assert error.type == "PSPRequestRejected" and error.non_retryable, error
    assert "rejected" in error.message
    assert successful_charges(stripe_base, card.customer_id) == []


async def test_refunding_a_payment_we_never_received_fails_for_good(store: Store) -> None:
    activities = activities_with(store)
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(
            activities.refund_duplicate_payment, RefundRequest(received_payment_id="rp_nope")
        )
    assert refused.value.type == "NotFound" and refused.value.non_retryable


# ---- a PSP that fails for now -----------------------------------------------------------------


async def test_a_stripe_server_error_is_retried_and_the_retry_never_charges_twice(
    store: Store, merchant: str, stripe_base: str
) -> None:
    """Stripe charged, then answered 500 (and saves that 500 for the key, replaying it to
    every retry): each try fails retryable, and there is one charge."""
    activities = activities_with(store, stripe_api_key=TEST_API_KEY, stripe_api_base=stripe_base)
    card = create_customer_with_card(stripe_base, CARD_OK)
    req = await first_attempt(
        store, merchant, psp="stripe", pm=card.payment_method_id, customer=card.customer_id
    )
    inject_server_errors(stripe_base, "/v1/payment_intents", ran=True)
    for _ in range(2):  # the first try, then the retry Temporal would make
        error = await charge_refused(activities, req)
        assert error.type == "TransientPSPError" and not error.non_retryable, error
    assert len(successful_charges(stripe_base, card.customer_id)) == 1
    assert await attempt_rows(store, req) == ["pending"]  # one attempt, its outcome unknown


async def test_a_simulated_server_error_is_retryable_and_charges_nothing(
    store: Store, merchant: str
) -> None:
    activities = activities_with(store, allow_simulator=True)
    req = await first_attempt(store, merchant, psp="simulator", pm="pm_sim_error")
    error = await charge_refused(activities, req)
    assert error.type == "TransientPSPError" and not error.non_retryable, error
    charged = await store.pool.fetchval(
        "SELECT count(*) FROM simulator_charges WHERE idempotency_key = $1", req.idempotency_key
    )
    assert charged == 0 and await attempt_rows(store, req) == ["pending"]


# ---- a slow PSP -------------------------------------------------------------------------------


async def test_a_charge_heartbeats_while_the_psp_works(store: Store, merchant: str) -> None:
    """The simulator takes 6 s to answer (`pm_sim_slow_6`): the charge heartbeats every
    `CHARGE_HEARTBEAT_EVERY` (2 s) meanwhile, well inside its heartbeat timeout."""
    activities = activities_with(store, allow_simulator=True)
    req = await first_attempt(store, merchant, psp="simulator", pm="pm_sim_slow_6")
    env = ActivityEnvironment()
    beats: list[float] = []
    env.on_heartbeat = lambda *_: beats.append(asyncio.get_running_loop().time())
    started = asyncio.get_running_loop().time()
    result: ChargeResult = await env.run(activities.charge_payment, req)
    assert result.status == "succeeded"
    assert len(beats) >= 2, beats
    gaps = [b - a for a, b in zip([started, *beats], beats, strict=False)]
    assert max(gaps) < names.CHARGE_HEARTBEAT_TIMEOUT.total_seconds(), gaps
    assert await attempt_rows(store, req) == ["succeeded"]
