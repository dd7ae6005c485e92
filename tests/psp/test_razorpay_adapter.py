"""The Razorpay adapter against a local fake Razorpay (tests/psp/razorpay_server.py): the
official SDK does the HTTP, nothing reaches the internet."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any, get_args

import pytest

from recovery.classifier import classify
from recovery.models import (
    ChargeRequest,
    ChargeResult,
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
from recovery.psp.razorpay import RazorpayAdapter, verify_webhook
from recovery.psp.razorpay.transformers import (
    RazorpayAuthError,
    RazorpayConfigError,
    RazorpayIdempotencyConflict,
    RazorpayPaymentStatus,
    RazorpayRefundStatus,
    RazorpayRequestError,
    RazorpayResponseError,
    charge_result,
    map_payment_status,
    map_refund_status,
    reference_for,
    refund_idempotency_header,
)
from tests.helpers import free_port
from tests.psp.razorpay_server import FakeRazorpay, fake_razorpay, sign

RECURRING = r"/v1/payments/create/recurring"
NOTES = {"merchant_id": "m_1", "payment_ref": "order_42", "recovery_id": "rec_1", "attempt": "2"}


@pytest.fixture
def rzp() -> Iterator[FakeRazorpay]:
    with fake_razorpay(slow_seconds=1.0, debit_delay=0) as fake:
        yield fake


@pytest.fixture
def adapter(rzp: FakeRazorpay) -> Iterator[RazorpayAdapter]:
    a = RazorpayAdapter(rzp.key_id, rzp.key_secret, api_base=rzp.base_url, timeout=5.0)
    yield a
    a.close()


def charge(
    token: str = "token_ok",
    *,
    key: str = "rec_1-attempt-2",
    amount: int = 4999,
    currency: str = "inr",
    customer_id: str | None = "cust_Gaurav0000001",
    email: str | None = "a@example.com",
) -> ChargeRequest:
    return ChargeRequest(
        merchant_id="m_1",
        recovery_id="rec_1",
        payment_ref="order_42",
        attempt=2,
        idempotency_key=key,
        psp="razorpay",
        amount=amount,
        currency=currency,
        customer=Customer(id=customer_id, email=email),
        payment_method=PaymentMethod(type="card", id=token),
        original_failure=Failure(code="BAD_REQUEST_ERROR", decline_code="insufficient_funds"),
    )


def checkout(key: str = "rec_1-link-1", *, amount: int = 4999) -> CheckoutRequest:
    return CheckoutRequest(
        merchant_id="m_1",
        recovery_id="rec_1",
        payment_ref="order_42",
        link_id="lnk_1",
        amount=amount,
        currency="inr",
        customer=Customer(id="cust_Gaurav0000001", email="a@example.com"),
        description="Complete your payment for order_42",
        success_url="http://127.0.0.1:8000/pay/retry/done",
        cancel_url="http://127.0.0.1:8000/pay/retry/cancel",
        idempotency_key=key,
    )


# ---- charges -------------------------------------------------------------------------------


async def test_charge_on_a_token_succeeds_with_our_notes_on_order_and_payment(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    result = await adapter.create_payment_intent(charge())

    assert result.status == "succeeded" and result.failure is None
    [payment] = rzp.payments
    assert result.psp_payment_id == payment["id"]
    [order] = rzp.orders.values()
    assert order["receipt"] == "rec_1-attempt-2" and order["status"] == "paid"
    assert order["notes"] == NOTES and payment["notes"] == NOTES
    assert order["currency"] == "INR" and order["amount"] == 4999
    [create] = rzp.requests_to("POST", RECURRING)
    assert create.body == {
        "email": "a@example.com",
        "contact": "+919000090000",  # from the Razorpay customer: mandatory, not in our event
        "amount": 4999,
        "currency": "INR",
        "order_id": order["id"],
        "customer_id": "cust_Gaurav0000001",
        "token": "token_ok",
        "recurring": "1",
        "description": "Payment recovery for order_42 (attempt 2)",
        "notes": NOTES,
    }
    [order_create] = rzp.requests_to("POST", r"/v1/orders")
    assert order_create.body["payment_capture"] is True


async def test_email_comes_from_the_razorpay_customer_when_the_event_had_none(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    rzp.add_customer("cust_Known00000001", email="known@example.com", contact="+919876543210")
    result = await adapter.create_payment_intent(
        charge(customer_id="cust_Known00000001", email=None)
    )
    assert result.status == "succeeded"
    [create] = rzp.requests_to("POST", RECURRING)
    assert create.body["email"] == "known@example.com"
    assert create.body["contact"] == "+919876543210"


@pytest.mark.parametrize(
    ("token", "reason"),
    [("token_insufficient", "insufficient_funds"), ("token_declined", "card_declined")],
)
async def test_a_declined_token_is_a_failed_result_with_razorpay_codes(
    rzp: FakeRazorpay, adapter: RazorpayAdapter, token: str, reason: str
) -> None:
    result = await adapter.create_payment_intent(charge(token))

    assert result.status == "failed"
    assert result.failure is not None
    assert result.failure.code == "BAD_REQUEST_ERROR"
    assert result.failure.decline_code == reason
    assert result.failure.message
    [payment] = rzp.payments
    assert result.psp_payment_id == payment["id"] and payment["status"] == "failed"


async def test_a_payment_that_fails_after_being_accepted_is_a_failed_result(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    result = await adapter.create_payment_intent(charge("token_failed_async"))
    assert result.status == "failed"
    assert result.failure == Failure(
        code="BAD_REQUEST_ERROR",
        decline_code="card_declined",
        message="Your payment has been declined by your bank.",
    )


@pytest.mark.parametrize(
    ("token", "failure"),
    [
        # a debit on a token not yet made says how long it may take (the classifier's wait)
        ("token_pending", Failure(code="recurring_debit_pending")),
        ("token_authorized", None),  # authorised: Razorpay captures it by itself, soon
    ],
)
async def test_created_and_authorized_payments_are_processing(
    adapter: RazorpayAdapter, token: str, failure: Failure | None
) -> None:
    result = await adapter.create_payment_intent(charge(token))
    assert result.status == "processing"
    assert (result.failure and Failure(code=result.failure.code)) == failure


async def test_a_mandate_debit_still_created_is_pending_for_days(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    rzp.debit_delay = 3 * 24 * 3600.0
    rzp.add_token("token_Mandate0000001", method="emandate")
    result = await adapter.create_payment_intent(charge("token_Mandate0000001"))
    assert result.status == "processing"
    assert result.failure is not None and result.failure.code == "mandate_debit_pending"
    rzp.advance(3 * 24 * 3600.0)
    settled = await adapter.retrieve_payment_intent(str(result.psp_payment_id))
    assert settled.status == "succeeded" and settled.failure is None


async def test_a_lost_answer_on_a_debit_razorpay_does_not_list_yet_never_charges_again(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    """As in production, a debit still `created` (the 24 h pre-debit notice) is not in its
    order's payment list: the retry after a lost answer must wait, never debit again."""
    rzp.debit_delay = 25 * 3600.0
    rzp.inject("POST", RECURRING, drop=True, after=True)  # debit accepted, answer lost
    with pytest.raises(TransientPSPError):
        await adapter.create_payment_intent(charge())
    for _ in range(3):
        with pytest.raises(TransientPSPError, match="not listed yet"):
            await adapter.create_payment_intent(charge())
        with pytest.raises(TransientPSPError, match="not listed yet"):
            await adapter.find_charge(charge())
    rzp.advance(25 * 3600.0)  # debited: now it is listed
    result = await adapter.create_payment_intent(charge())
    assert result.status == "succeeded"
    assert len(rzp.payments) == 1 and len(rzp.requests_to("POST", RECURRING)) == 1


async def test_the_same_idempotency_key_charges_once(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    first = await adapter.create_payment_intent(charge())
    second = await adapter.create_payment_intent(charge())

    assert second == first
    assert len(rzp.orders) == 1 and len(rzp.payments) == 1
    assert len(rzp.requests_to("POST", RECURRING)) == 1
    assert len(rzp.requests_to("POST", r"/v1/orders")) == 1


async def test_a_replayed_declined_attempt_returns_the_decline_without_charging_again(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    first = await adapter.create_payment_intent(charge("token_insufficient"))
    second = await adapter.create_payment_intent(charge("token_insufficient"))
    assert second == first and second.status == "failed"
    assert len(rzp.payments) == 1


async def test_different_attempts_are_different_charges(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    a = await adapter.create_payment_intent(charge(key="rec_1-attempt-1"))
    b = await adapter.create_payment_intent(charge(key="rec_1-attempt-2"))
    assert a.psp_payment_id != b.psp_payment_id and len(rzp.payments) == 2


async def test_a_long_idempotency_key_becomes_a_deterministic_40_char_receipt(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    key = "merchant_with_a_long_id:order_with_a_long_reference:attempt-3"
    first = await adapter.create_payment_intent(charge(key=key))
    second = await adapter.create_payment_intent(charge(key=key))
    [order] = rzp.orders.values()
    assert order["receipt"] == reference_for(key) and len(order["receipt"]) == 40
    assert first == second and len(rzp.payments) == 1


def test_reference_for_keeps_short_keys_and_hashes_long_ones() -> None:
    assert reference_for("k" * 40) == "k" * 40
    long = "k" * 41
    assert reference_for(long) == "h_" + hashlib.sha256(long.encode()).hexdigest()[:38]
    assert reference_for(long) == reference_for(long) != reference_for(long + "x")


async def test_reusing_a_key_for_another_amount_is_refused(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    await adapter.create_payment_intent(charge(amount=4999))
    with pytest.raises(RazorpayIdempotencyConflict):
        await adapter.create_payment_intent(charge(amount=5999))
    assert len(rzp.payments) == 1


async def test_a_500_is_transient_and_the_retry_charges_once(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    with pytest.raises(TransientPSPError):
        await adapter.create_payment_intent(charge("token_5xx"))
    result = await adapter.create_payment_intent(charge("token_5xx"))
    assert result.status == "succeeded"
    assert len(rzp.orders) == 1 and len(rzp.payments) == 1


async def test_a_lost_answer_is_transient_and_the_retry_returns_the_first_payment(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    with pytest.raises(TransientPSPError):
        await adapter.create_payment_intent(charge("token_5xx_after"))
    [payment] = rzp.payments  # Razorpay did charge
    result = await adapter.create_payment_intent(charge("token_5xx_after"))
    assert result.status == "succeeded" and result.psp_payment_id == payment["id"]
    assert len(rzp.payments) == 1 and len(rzp.requests_to("POST", RECURRING)) == 1


async def test_a_dropped_connection_after_the_order_reuses_that_order(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    rzp.inject("POST", RECURRING, drop=True)
    with pytest.raises(TransientPSPError):
        await adapter.create_payment_intent(charge())
    assert len(rzp.orders) == 1 and rzp.payments == []
    result = await adapter.create_payment_intent(charge())
    assert result.status == "succeeded"
    assert len(rzp.orders) == 1 and len(rzp.payments) == 1


async def test_an_attempted_order_whose_payment_is_not_listed_yet_is_not_charged_again(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    rzp.inject("POST", RECURRING, drop=True, after=True)  # charged, answer lost
    with pytest.raises(TransientPSPError):
        await adapter.create_payment_intent(charge())
    empty = b'{"entity": "collection", "count": 0, "items": []}'
    rzp.inject("GET", r"/v1/orders/[^/]+/payments", status=200, raw_body=empty)  # lagging list
    with pytest.raises(TransientPSPError, match="not listed yet"):
        await adapter.create_payment_intent(charge())
    result = await adapter.create_payment_intent(charge())
    assert result.status == "succeeded"
    assert len(rzp.payments) == 1 and len(rzp.requests_to("POST", RECURRING)) == 1


async def test_a_lost_answer_right_after_a_new_order_never_charges_a_second_order(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    """Reproduced: Razorpay's receipt lookup may lag a new order. The try charged it and
    lost the answer; the retry, not seeing the order yet, made a second order and charged
    that too. Now an order is charged only once the lookup lists it."""
    rzp.order_list_lag = 1.0
    rzp.inject("POST", RECURRING, drop=True, after=True)  # charged, answer lost
    with pytest.raises(TransientPSPError):
        await adapter.create_payment_intent(charge())
    result = await adapter.create_payment_intent(charge())  # the retry, at once
    assert result.status == "succeeded"
    assert len(rzp.payments) == 1 and len(rzp.requests_to("POST", RECURRING)) == 1
    assert len(rzp.orders) == 1


async def test_an_order_never_listed_within_the_budget_is_not_charged(rzp: FakeRazorpay) -> None:
    rzp.order_list_lag = 60.0
    impatient = RazorpayAdapter(
        rzp.key_id, rzp.key_secret, api_base=rzp.base_url, timeout=5.0, charge_budget=1.0
    )
    try:
        with pytest.raises(TransientPSPError, match="not listed by its receipt yet"):
            await impatient.create_payment_intent(charge())
    finally:
        impatient.close()
    assert len(rzp.orders) == 1 and rzp.payments == []


async def test_a_timeout_is_transient_and_the_retry_finds_the_payment(
    rzp: FakeRazorpay,
) -> None:
    impatient = RazorpayAdapter(rzp.key_id, rzp.key_secret, api_base=rzp.base_url, timeout=0.3)
    try:
        with pytest.raises(TransientPSPError, match="timed out"):
            await impatient.create_payment_intent(charge("token_slow"))
        await asyncio.sleep(rzp.slow_seconds)  # the fake finishes its slow answer
        result = await impatient.create_payment_intent(charge("token_slow"))
    finally:
        impatient.close()
    assert result.status == "succeeded"
    assert len(rzp.payments) == 1 and len(rzp.requests_to("POST", RECURRING)) == 1


async def test_an_attempt_whose_answer_was_lost_is_found_by_its_receipt(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    assert await adapter.find_charge(charge()) is None  # nothing made yet
    rzp.inject("POST", RECURRING, drop=True, after=True)  # charged, answer lost
    with pytest.raises(TransientPSPError):
        await adapter.create_payment_intent(charge())
    found = await adapter.find_charge(charge())
    [payment] = rzp.payments
    assert found is not None and found.status == "succeeded"
    assert found.psp_payment_id == payment["id"]
    assert await adapter.find_charge(charge(key="rec_1-attempt-3")) is None


async def test_an_order_made_without_a_payment_is_found_to_have_charged_nothing(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    rzp.inject("POST", RECURRING, drop=True)  # the order exists, the payment was never sent
    with pytest.raises(TransientPSPError):
        await adapter.create_payment_intent(charge())
    assert len(rzp.orders) == 1
    assert await adapter.find_charge(charge()) is None


async def test_a_charge_stops_within_its_budget_however_slow_each_call(
    rzp: FakeRazorpay,
) -> None:
    """Reproduced bug: the chain of up to six calls could outlast the activity's
    start-to-close, so a retry ran beside it. The budget bounds the whole chain."""
    bounded = RazorpayAdapter(
        rzp.key_id, rzp.key_secret, api_base=rzp.base_url, timeout=5.0, charge_budget=0.5
    )
    try:
        started = time.monotonic()
        with pytest.raises(TransientPSPError):
            await bounded.create_payment_intent(charge("token_slow"))
        assert time.monotonic() - started < rzp.slow_seconds
    finally:
        bounded.close()


async def test_connection_refused_is_transient() -> None:
    nowhere = RazorpayAdapter(
        "rzp_test_x", "secret", api_base=f"http://127.0.0.1:{free_port()}", timeout=2
    )
    try:
        with pytest.raises(TransientPSPError):
            await nowhere.create_payment_intent(charge())
        with pytest.raises(TransientPSPError):
            await nowhere.retrieve_payment_intent("pay_x")
    finally:
        nowhere.close()


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 429, "code": "BAD_REQUEST_ERROR", "description": "Too many requests"},
        {"status": 503, "code": "SERVER_ERROR"},
        {"status": 502, "raw_body": b"<html><body>502 Bad Gateway</body></html>"},
        {"status": 400, "code": "GATEWAY_ERROR", "description": "Gateway timed out"},
    ],
    ids=["429", "503", "html-502", "gateway-error"],
)
async def test_rate_limits_5xx_and_gateway_errors_are_transient(
    rzp: FakeRazorpay, adapter: RazorpayAdapter, fault: dict[str, Any]
) -> None:
    rzp.inject("GET", r"/v1/orders", **fault)
    with pytest.raises(TransientPSPError):
        await adapter.create_payment_intent(charge())
    assert rzp.payments == []
    assert (await adapter.create_payment_intent(charge())).status == "succeeded"


async def test_a_429_token_is_transient_then_charges_once(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    with pytest.raises(TransientPSPError):
        await adapter.create_payment_intent(charge("token_429"))
    assert (await adapter.create_payment_intent(charge("token_429"))).status == "succeeded"
    assert len(rzp.payments) == 1


async def test_wrong_credentials_are_an_auth_error_not_transient(rzp: FakeRazorpay) -> None:
    wrong = RazorpayAdapter(rzp.key_id, "not-the-secret", api_base=rzp.base_url)
    try:
        with pytest.raises(RazorpayAuthError) as caught:
            await wrong.create_payment_intent(charge())
    finally:
        wrong.close()
    assert not isinstance(caught.value, TransientPSPError)
    assert caught.value.error is not None and caught.value.error.http_status == 401
    assert "not-the-secret" not in str(caught.value)


def test_missing_credentials_are_refused_at_construction() -> None:
    with pytest.raises(RazorpayConfigError):
        RazorpayAdapter("", "secret")


@pytest.mark.parametrize(
    "request_",
    [charge(customer_id=None), charge(token="")],
    ids=["no-customer", "no-token"],
)
async def test_a_charge_without_customer_or_token_is_our_error_and_sends_nothing(
    rzp: FakeRazorpay, adapter: RazorpayAdapter, request_: ChargeRequest
) -> None:
    with pytest.raises(RazorpayRequestError) as caught:
        await adapter.create_payment_intent(request_)
    assert not isinstance(caught.value, TransientPSPError)
    assert rzp.requests == []


async def test_a_missing_field_is_a_request_error_not_a_decline(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    rzp.add_customer("cust_NoContact00001", contact=None)
    with pytest.raises(RazorpayRequestError) as caught:
        await adapter.create_payment_intent(charge(customer_id="cust_NoContact00001"))
    error = caught.value.error
    assert error is not None and error.field == "contact"
    assert error.reason == "input_validation_failed"
    assert caught.value.field == "contact"
    assert rzp.payments == []


async def test_an_unknown_payment_status_is_an_error_not_a_guess(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    result = await adapter.create_payment_intent(charge("token_pending"))
    assert result.psp_payment_id is not None
    rzp.set_payment_status(result.psp_payment_id, "pending")
    with pytest.raises(RazorpayResponseError):
        await adapter.retrieve_payment_intent(result.psp_payment_id)


async def test_charges_run_on_the_pool_without_blocking_the_event_loop(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            adapter.create_payment_intent(charge("token_slow", key="slow-1")),
            *(adapter.create_payment_intent(charge(key=f"fast-{i}")) for i in range(6)),
        )
        elapsed = time.monotonic() - started
    finally:
        task.cancel()
    assert all(r.status == "succeeded" for r in results)
    assert len({r.psp_payment_id for r in results}) == 7
    assert elapsed >= rzp.slow_seconds
    assert ticks >= 10  # the loop kept running during the slow call


# ---- status mapping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("native", "canonical"),
    [
        ("created", PaymentStatus.PROCESSING),
        ("authorized", PaymentStatus.PROCESSING),
        ("captured", PaymentStatus.SUCCEEDED),
        ("refunded", PaymentStatus.REFUNDED),
        ("failed", PaymentStatus.FAILED),
    ],
)
def test_payment_status_mapping(native: RazorpayPaymentStatus, canonical: PaymentStatus) -> None:
    assert map_payment_status(native) is canonical


def test_every_native_status_is_mapped() -> None:
    for native in get_args(RazorpayPaymentStatus):
        assert map_payment_status(native) in PaymentStatus
    assert {map_refund_status(s) for s in get_args(RazorpayRefundStatus)} == {
        "succeeded",
        "pending",
        "failed",
    }


def test_charge_result_refuses_an_unknown_status() -> None:
    with pytest.raises(RazorpayResponseError):
        charge_result({"id": "pay_1", "status": "pending"})


# ---- retrieve ------------------------------------------------------------------------------


async def test_retrieve_follows_the_payment_to_its_final_status(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    pending = await adapter.create_payment_intent(charge("token_pending"))
    assert pending.status == "processing" and pending.psp_payment_id
    pay_id = pending.psp_payment_id

    assert (await adapter.retrieve_payment_intent(pay_id)).status == "processing"
    rzp.set_payment_status(pay_id, "captured")
    assert (await adapter.retrieve_payment_intent(pay_id)).status == "succeeded"
    rzp.set_payment_status(pay_id, "failed")
    failed = await adapter.retrieve_payment_intent(pay_id)
    assert failed.status == "failed" and failed.failure is not None
    assert failed.failure.decline_code == "card_declined"


async def test_retrieve_an_unknown_payment_is_a_request_error(adapter: RazorpayAdapter) -> None:
    with pytest.raises(RazorpayRequestError):
        await adapter.retrieve_payment_intent("pay_DoesNotExist01")


async def test_calls_at_once_each_read_their_own_answer(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    """Calls run in threads at the same time, each with a client of its own: an error is
    read from the response its own call got, never from another's."""
    paid = await adapter.create_payment_intent(charge())
    pay_id = paid.psp_payment_id or ""
    outcomes = await asyncio.gather(
        *(
            adapter.retrieve_payment_intent(pay_id if n % 2 else f"pay_Missing{n:07d}")
            for n in range(16)
        ),
        return_exceptions=True,
    )
    for n, outcome in enumerate(outcomes):
        if n % 2:
            assert isinstance(outcome, ChargeResult) and outcome.status == "succeeded"
        else:
            assert isinstance(outcome, RazorpayRequestError), outcome
            assert outcome.error is not None and outcome.error.http_status == 400


async def test_an_api_base_ending_in_v1_works(rzp: FakeRazorpay) -> None:
    a = RazorpayAdapter(rzp.key_id, rzp.key_secret, api_base=rzp.base_url + "/v1/")
    try:
        result = await a.create_payment_intent(charge())
        assert (await a.retrieve_payment_intent(result.psp_payment_id or "")).status == "succeeded"
    finally:
        a.close()


# ---- refunds -------------------------------------------------------------------------------


async def test_refund_twice_with_one_key_refunds_once(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    paid = await adapter.create_payment_intent(charge())
    pay_id = paid.psp_payment_id or ""

    first = await adapter.refund_payment(pay_id, amount=None, idempotency_key="refund-1")
    second = await adapter.refund_payment(pay_id, amount=None, idempotency_key="refund-1")

    assert first == second
    assert first.status == "succeeded" and first.amount == 4999
    [refund] = rzp.refunds.values()
    assert refund["id"] == first.psp_refund_id and refund["receipt"] == "refund-1"
    # Razorpay's own refund idempotency: one key on both tries, one refund
    sent = rzp.requests_to("POST", rf"/v1/payments/{pay_id}/refund")
    keys = {r.headers.get("x-refund-idempotency") for r in sent}
    assert len(sent) == 2 and keys == {refund_idempotency_header("refund-1")}
    assert (await adapter.retrieve_payment_intent(pay_id)).status == "refunded"


async def test_partial_refunds_with_different_keys_and_pending_status(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    pay_id = (await adapter.create_payment_intent(charge())).psp_payment_id or ""
    rzp.refund_status = "pending"
    long_key = "rec_1:refund:" + "x" * 40
    a = await adapter.refund_payment(pay_id, amount=1000, idempotency_key=long_key)
    b = await adapter.refund_payment(pay_id, amount=1000, idempotency_key="refund-b")
    again = await adapter.refund_payment(pay_id, amount=1000, idempotency_key=long_key)
    assert a.status == "pending" and a.amount == 1000
    assert again == a and a.psp_refund_id != b.psp_refund_id
    assert len(rzp.refunds) == 2
    sent = rzp.requests_to("POST", rf"/v1/payments/{pay_id}/refund")[0].body
    assert sent == {
        "receipt": reference_for(long_key),
        "notes": {"idempotency_key": long_key},
        "amount": 1000,
    }
    assert (await adapter.retrieve_payment_intent(pay_id)).status == "succeeded"
    assert await adapter.retrieve_refund(a.psp_refund_id) == a  # still with the bank
    rzp.set_refund_status(a.psp_refund_id, "processed")
    assert (await adapter.retrieve_refund(a.psp_refund_id)).status == "succeeded"
    rzp.set_refund_status(b.psp_refund_id, "failed")
    assert (await adapter.retrieve_refund(b.psp_refund_id)).status == "failed"


async def test_a_refund_whose_answer_was_lost_is_not_made_twice(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    pay_id = (await adapter.create_payment_intent(charge())).psp_payment_id or ""
    rzp.inject("POST", rf"/v1/payments/{pay_id}/refund", drop=True, after=True)  # refunded
    with pytest.raises(TransientPSPError):
        await adapter.refund_payment(pay_id, amount=4999, idempotency_key="refund:pay_dup1")
    again = await adapter.refund_payment(pay_id, amount=4999, idempotency_key="refund:pay_dup1")
    [refund] = rzp.refunds.values()
    assert again.psp_refund_id == refund["id"] and again.status == "succeeded"


def test_refund_idempotency_headers_are_what_razorpay_accepts() -> None:
    for key in ("refund:pay_dup1", "r", "x" * 300, "refund-0000000001", "a b/c"):
        header = refund_idempotency_header(key)
        assert re.fullmatch(r"[A-Za-z0-9_-]{10,}", header), header
        assert header == refund_idempotency_header(key)
    assert refund_idempotency_header("refund-0000000001") == "refund-0000000001"
    assert refund_idempotency_header("refund:a") != refund_idempotency_header("refund_a")


async def test_one_refund_key_with_another_body_is_refused(adapter: RazorpayAdapter) -> None:
    pay_id = (await adapter.create_payment_intent(charge())).psp_payment_id or ""
    await adapter.refund_payment(pay_id, amount=1000, idempotency_key="refund-0000000001")
    with pytest.raises(RazorpayRequestError, match="Different request"):
        await adapter.refund_payment(pay_id, amount=2000, idempotency_key="refund-0000000001")


async def test_refunding_more_than_captured_is_a_request_error(
    adapter: RazorpayAdapter,
) -> None:
    pay_id = (await adapter.create_payment_intent(charge())).psp_payment_id or ""
    with pytest.raises(RazorpayRequestError):
        await adapter.refund_payment(pay_id, amount=99_999, idempotency_key="too-much")


# ---- payment links -------------------------------------------------------------------------


async def test_payment_link_is_created_with_our_fields(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    result = await adapter.create_checkout_session(checkout())

    [link] = rzp.payment_links.values()
    assert result.psp_checkout_id == link["id"] and result.url == link["short_url"]
    [sent] = rzp.requests_to("POST", r"/v1/payment_links")
    assert sent.body == {
        "amount": 4999,
        "currency": "INR",
        "accept_partial": False,
        "description": "Complete your payment for order_42",
        "reference_id": "rec_1-link-1",
        "notify": {"sms": False, "email": False},
        "reminder_enable": False,
        "callback_url": "http://127.0.0.1:8000/pay/retry/done",
        "callback_method": "get",
        "notes": {
            "merchant_id": "m_1",
            "payment_ref": "order_42",
            "recovery_id": "rec_1",
            "link_id": "lnk_1",
        },
        "customer": {"email": "a@example.com"},
    }


async def test_a_duplicate_reference_id_returns_the_existing_link(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    first = await adapter.create_checkout_session(checkout())
    second = await adapter.create_checkout_session(checkout())
    assert second == first and len(rzp.payment_links) == 1
    assert len(rzp.requests_to("POST", r"/v1/payment_links")) == 2  # the second was refused
    [lookup] = rzp.requests_to("GET", r"/v1/payment_links")
    assert lookup.query == {"reference_id": "rec_1-link-1"}


async def test_a_lost_link_answer_is_transient_and_the_retry_returns_the_link(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    rzp.inject("POST", r"/v1/payment_links", after=True, status=504, code="GATEWAY_ERROR")
    with pytest.raises(TransientPSPError):
        await adapter.create_checkout_session(checkout())
    result = await adapter.create_checkout_session(checkout())
    [link] = rzp.payment_links.values()
    assert result.psp_checkout_id == link["id"]


async def test_a_link_refused_for_another_reason_is_a_request_error(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    with pytest.raises(RazorpayRequestError):
        await adapter.create_checkout_session(checkout(amount=50))
    assert rzp.payment_links == {}


# ---- webhooks ------------------------------------------------------------------------------


def verify(rzp: FakeRazorpay, body: bytes, headers: dict[str, str]) -> WebhookEvent:
    """As the webhook route does: the account's webhook secret alone."""
    return verify_webhook(rzp.webhook_secret, body, headers)


async def test_payment_captured_webhook_is_payment_succeeded(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    paid = await adapter.create_payment_intent(charge())
    body, headers = rzp.signed_webhook(
        "payment.captured", payment_id=paid.psp_payment_id, event_id="evt_Captured000001"
    )
    event = verify(rzp, body, headers)
    assert event.kind == "payment_succeeded" and event.psp == "razorpay"
    signed = json.loads(body)
    assert (
        event.event_id == f"payment.captured/payment={paid.psp_payment_id}/{signed['created_at']}"
    )
    assert event.psp_type == "payment.captured"
    assert (event.merchant_id, event.payment_ref, event.recovery_id) == ("m_1", "order_42", "rec_1")
    assert event.psp_payment_id == paid.psp_payment_id
    assert (event.amount, event.currency) == (4999, "inr")
    assert event.failure is None and event.raw["event"] == "payment.captured"


async def test_payment_failed_webhook_carries_the_failure(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    failed = await adapter.create_payment_intent(charge("token_insufficient"))
    event = verify(rzp, *rzp.signed_webhook("payment.failed", payment_id=failed.psp_payment_id))
    assert event.kind == "payment_failed" and event.payment_ref == "order_42"
    assert event.failure is not None
    assert (event.failure.code, event.failure.decline_code) == (
        "BAD_REQUEST_ERROR",
        "insufficient_funds",
    )


async def test_refund_processed_webhook_is_payment_refunded(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    pay_id = (await adapter.create_payment_intent(charge())).psp_payment_id or ""
    refund = await adapter.refund_payment(pay_id, amount=1500, idempotency_key="r-1")
    event = verify(rzp, *rzp.signed_webhook("refund.processed", refund_id=refund.psp_refund_id))
    assert event.kind == "payment_refunded"
    assert event.psp_payment_id == pay_id and event.amount == 1500 and event.currency == "inr"
    assert (event.merchant_id, event.recovery_id) == ("m_1", "rec_1")


async def test_payment_link_paid_webhook_is_checkout_completed(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    link = await adapter.create_checkout_session(checkout())
    callback = rzp.pay_payment_link(link.psp_checkout_id)
    event = verify(
        rzp, *rzp.signed_webhook("payment_link.paid", payment_link_id=link.psp_checkout_id)
    )
    assert event.kind == "checkout_completed"
    assert event.psp_payment_id == callback["razorpay_payment_id"]
    assert (event.merchant_id, event.payment_ref, event.recovery_id) == ("m_1", "order_42", "rec_1")
    assert (event.amount, event.currency) == (4999, "inr")


def test_a_confirmed_token_is_a_new_payment_method_whose_customer_its_payment_names(
    rzp: FakeRazorpay,
) -> None:
    registration, token = rzp.register_token("cust_NewCard000001")
    confirmed = verify(rzp, *rzp.signed_webhook("token.confirmed", token_id=token))
    assert confirmed.kind == "payment_method_updated" and confirmed.customer_id is None
    assert confirmed.payment_method == PaymentMethod(type="card", id=token)
    assert confirmed.event_id.startswith(f"token.confirmed/token={token}/")
    paid = verify(rzp, *rzp.signed_webhook("payment.captured", payment_id=registration))
    assert paid.customer_id == "cust_NewCard000001"
    assert paid.payment_method == PaymentMethod(id=token)
    assert paid.merchant_id is None  # not one of our payments
    # a token event that is not a confirmation changes nothing
    paused = verify(rzp, *rzp.signed_webhook("token.paused", token_id=token))
    assert paused.kind == "ignored"


@pytest.mark.parametrize("name", ["order.paid", "payment.authorized", "refund.created"])
async def test_other_events_are_ignored(
    rzp: FakeRazorpay, adapter: RazorpayAdapter, name: str
) -> None:
    paid = await adapter.create_payment_intent(charge())
    ids: dict[str, str | None] = {"payment_id": paid.psp_payment_id}
    if name == "refund.created":
        ids = {
            "refund_id": (
                await adapter.refund_payment(
                    paid.psp_payment_id or "", amount=None, idempotency_key="r"
                )
            ).psp_refund_id
        }
    event = verify(rzp, *rzp.signed_webhook(name, **ids))
    assert event.kind == "ignored" and event.psp_type == name
    assert event.payment_ref == "order_42"  # still recorded against the payment


async def test_the_event_id_is_what_razorpay_signed_never_the_event_id_header(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    paid = await adapter.create_payment_intent(charge())
    body, headers = rzp.signed_webhook("payment.failed", payment_id=paid.psp_payment_id)
    ids = set()
    for header in ("evt_1", "evt_2", "evt_3"):
        ids.add(verify(rzp, body, {**headers, "X-Razorpay-Event-Id": header}).event_id)
    assert len(ids) == 1
    signed = json.loads(body)
    later = json.dumps({**signed, "created_at": signed["created_at"] + 1}).encode()
    again = verify(rzp, later, {"X-Razorpay-Signature": sign(later, rzp.webhook_secret)})
    assert again.event_id not in ids  # a new delivery of a new event, e.g. a late capture


def test_header_names_are_case_insensitive_and_event_id_falls_back_to_a_body_hash(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    body = json.dumps({"entity": "event", "event": "payment.authorized", "payload": {}}).encode()
    headers = {"x-razorpay-signature": sign(body, rzp.webhook_secret)}
    event = verify(rzp, body, headers)
    assert event.event_id == "body_sha256:" + hashlib.sha256(body).hexdigest()
    assert verify(rzp, body, headers).event_id == event.event_id  # stable on redelivery


@pytest.mark.parametrize("case", ["tampered", "wrong-secret", "missing", "empty", "not-hex"])
def test_bad_signatures_are_invalid_webhooks(
    rzp: FakeRazorpay, adapter: RazorpayAdapter, case: str
) -> None:
    body = json.dumps({"entity": "event", "event": "payment.captured", "payload": {}}).encode()
    headers = {"X-Razorpay-Signature": sign(body, rzp.webhook_secret), "X-Razorpay-Event-Id": "e"}
    match case:
        case "tampered":
            body = body.replace(b"captured", b"failed__")
        case "wrong-secret":
            headers["X-Razorpay-Signature"] = sign(body, "another-secret")
        case "missing":
            del headers["X-Razorpay-Signature"]
        case "empty":
            headers["X-Razorpay-Signature"] = ""
        case "not-hex":
            headers["X-Razorpay-Signature"] = "zz\u00e9" * 20
    with pytest.raises(InvalidWebhook):
        verify(rzp, body, headers)


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", b'{"event": "payment.captured"}', b"\xff\xfe"]
)
def test_signed_bodies_that_are_not_events_are_invalid(
    rzp: FakeRazorpay, adapter: RazorpayAdapter, body: bytes
) -> None:
    with pytest.raises(InvalidWebhook):
        verify(rzp, body, {"X-Razorpay-Signature": sign(body, rzp.webhook_secret)})


def test_without_a_webhook_secret_every_webhook_is_invalid() -> None:
    body = b"{}"
    for secret in (None, ""):
        with pytest.raises(InvalidWebhook):
            verify_webhook(secret, body, {"X-Razorpay-Signature": sign(body, "")})


def test_webhook_verification_never_logs_payload_or_secret(
    rzp: FakeRazorpay, adapter: RazorpayAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = b'{"event": "payment.captured", "payload": {"secret_marker": 1}}'
    with pytest.raises(InvalidWebhook) as caught:
        verify(rzp, body, {"X-Razorpay-Signature": sign(body, "wrong")})
    verify(rzp, body, {"X-Razorpay-Signature": sign(body, rzp.webhook_secret)})
    text = caplog.text + str(caught.value) + repr(adapter)
    assert "secret_marker" not in text
    assert rzp.webhook_secret not in text and rzp.key_secret not in text


# ---- payment signatures --------------------------------------------------------------------


def test_payment_signature_helper(rzp: FakeRazorpay, adapter: RazorpayAdapter) -> None:
    good = sign(b"order_Abc|pay_Def", rzp.key_secret)
    assert adapter.verify_payment_signature(
        order_id="order_Abc", payment_id="pay_Def", signature=good
    )
    assert not adapter.verify_payment_signature(
        order_id="order_Abc", payment_id="pay_Other", signature=good
    )
    assert not adapter.verify_payment_signature(
        order_id="order_Abc", payment_id="pay_Def", signature=sign(b"order_Abc|pay_Def", "x")
    )


async def test_a_closed_payment_link_takes_no_money(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    """Razorpay Payment Links never expire by themselves: the recovery's end cancels them."""
    link = await adapter.create_checkout_session(checkout())
    await adapter.close_checkout(link.psp_checkout_id)
    assert rzp.payment_links[link.psp_checkout_id]["status"] == "cancelled"
    with pytest.raises(ValueError, match="cancelled"):
        rzp.pay_payment_link(link.psp_checkout_id)
    await adapter.close_checkout(link.psp_checkout_id)  # closing again is done


async def test_closing_a_paid_payment_link_is_done(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    link = await adapter.create_checkout_session(checkout())
    rzp.pay_payment_link(link.psp_checkout_id)
    await adapter.close_checkout(link.psp_checkout_id)
    assert rzp.payment_links[link.psp_checkout_id]["status"] == "paid"


async def test_the_card_behind_a_token_is_its_card_id_else_the_token(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    rzp.add_token("token_a", network="MasterCard", card_id="card_1")
    rzp.add_token("token_b", network="MasterCard", card_id="card_1")
    a = await adapter.resolve_card(Customer(id="cust_1"), PaymentMethod(id="token_a"))
    b = await adapter.resolve_card(Customer(id="cust_1"), PaymentMethod(id="token_b"))
    assert a.key == b.key == "razorpay:card:card_1" and a.brand == "MasterCard"
    assert a.payment_method_id == "token_a"
    plain = await adapter.resolve_card(Customer(id="cust_1"), PaymentMethod(id="token_ok"))
    assert plain.key == "razorpay:token:token_ok" and plain.brand == "Visa"
    with pytest.raises(RazorpayRequestError):
        await adapter.resolve_card(Customer(id="cust_1"), PaymentMethod())


# ---- token states --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "max_amount", "expired", "code"),
    [
        ("paused", None, False, "token_paused"),
        ("cancelled", None, False, "token_cancelled"),
        ("rejected", None, False, "token_rejected"),
        ("confirmed", 1000, False, "token_amount_over_limit"),
        ("confirmed", None, True, "token_expired"),
    ],
)
async def test_a_token_that_cannot_be_debited_fails_before_any_order(
    rzp: FakeRazorpay,
    adapter: RazorpayAdapter,
    state: str,
    max_amount: int | None,
    expired: bool,
    code: str,
) -> None:
    rzp.add_token(
        "token_Mandate0000002",
        status=state,
        max_amount=max_amount,
        expired_at=int(rzp.now()) - 60 if expired else None,
    )
    result = await adapter.create_payment_intent(charge("token_Mandate0000002"))
    assert result.status == "failed" and result.failure is not None
    assert result.failure.decline_code == code
    assert rzp.orders == {} and rzp.payments == []
    classified = classify(
        ClassifyRequest(
            psp="razorpay",
            code=result.failure.code,
            decline_code=result.failure.decline_code,
            message=result.failure.message,
        )
    )
    assert classified.action == "customer_action", classified


async def test_a_token_paused_between_the_check_and_the_debit_is_refused_by_razorpay(
    rzp: FakeRazorpay, adapter: RazorpayAdapter
) -> None:
    """The fake refuses a debit on a token that is not confirmed, as Razorpay does."""
    rzp.add_token("token_Mandate0000003", status="paused")
    token_fetch = r"/v1/customers/[^/]+/tokens/token_Mandate0000003"
    confirmed = b'{"id": "token_Mandate0000003", "recurring_details": {"status": "confirmed"}}'
    rzp.inject("GET", token_fetch, status=200, raw_body=confirmed)  # a stale answer
    with pytest.raises(RazorpayRequestError, match="paused"):
        await adapter.create_payment_intent(charge("token_Mandate0000003"))
    assert rzp.payments == []
