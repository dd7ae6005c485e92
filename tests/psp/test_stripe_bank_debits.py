"""Stripe bank debits take days (SEPA Direct Debit, ACH Direct Debit, Bacs, ...): an
off-session PaymentIntent on a bank account is `processing` until the banks answer, then
`succeeded` or back to `requires_payment_method` with the bank's reason. The adapter says
which debit it is and how long it may take (`sepa_debit_pending`, `bank_debit_pending`),
which the classifier turns into a wait that long; never a new charge meanwhile.

Against localstripe behind the proxy, whose bank debits stay `processing` on its own clock
(`script_bank_debit`, `advance_clock`), and the transformers alone for the methods the proxy
does not model (Bacs, pre-authorised debits in Canada, BECS)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from recovery.classifier import classify
from recovery.models import (
    Action,
    Category,
    ChargeRequest,
    ClassifyRequest,
    Customer,
    Failure,
    PaymentMethod,
)
from recovery.psp.stripe import StripeAdapter
from recovery.psp.stripe.transformers import charge_result
from tests.psp.localstripe_server import (
    DAY,
    TEST_API_KEY,
    advance_clock,
    create_customer_with_bank_account,
    payment_intents_for_customer,
    script_bank_debit,
    successful_charges,
)

# The SDK's httpx client posts its form body with `data=` (httpx prefers `content=`).
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.fixture(scope="module")
async def adapter(stripe_base: str) -> AsyncIterator[StripeAdapter]:
    a = StripeAdapter(TEST_API_KEY, api_base=stripe_base)
    yield a
    await a.aclose()


def debit(customer_id: str, pm_id: str, currency: str, key: str | None = None) -> ChargeRequest:
    return ChargeRequest(
        merchant_id="m_1",
        recovery_id=f"rec_{uuid.uuid4().hex[:8]}",
        payment_ref="order_42",
        attempt=1,
        idempotency_key=key or f"debit-{uuid.uuid4().hex}",
        psp="stripe",
        amount=4999,
        currency=currency,
        customer=Customer(id=customer_id),
        payment_method=PaymentMethod(type="sepa_debit", id=pm_id),
        original_failure=Failure(code="insufficient_funds"),
    )


def waits(failure: Failure | None) -> tuple[Action, int]:
    """What the classifier makes of a pending result's failure: (action, seconds)."""
    assert failure is not None, "a bank debit still processing says how long it may take"
    c = classify(ClassifyRequest(psp="stripe", code=failure.code, message=failure.message))
    assert c.category is Category.UPI_PENDING
    return c.action, c.cooldown_seconds


async def test_a_sepa_debit_is_processing_for_days_then_succeeds_charged_once(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    account = create_customer_with_bank_account(stripe_base, "sepa_debit")
    script_bank_debit(stripe_base, account.customer_id, after=9 * DAY)
    req = debit(account.customer_id, account.payment_method_id, "eur")

    first = await adapter.create_payment_intent(req)
    assert first.status == "processing"
    assert first.failure is not None and first.failure.code == "sepa_debit_pending"
    # SEPA: up to 14 business days (docs.stripe.com/payments/sepa-debit): three weeks
    assert waits(first.failure) == (Action.AWAIT_STATUS, 21 * DAY)
    assert successful_charges(stripe_base, account.customer_id) == []

    again = await adapter.create_payment_intent(req)  # a retried try: the same debit
    advance_clock(stripe_base, 8 * DAY)  # a day short: still with the banks
    polled = await adapter.retrieve_payment_intent(first.psp_payment_id or "")
    found = await adapter.find_charge(req)
    for result in (again, polled, found):
        assert result is not None and result.psp_payment_id == first.psp_payment_id
        assert (result.status, result.failure) == ("processing", first.failure)
    assert len(payment_intents_for_customer(stripe_base, account.customer_id)) == 1

    advance_clock(stripe_base, DAY)
    settled = await adapter.retrieve_payment_intent(first.psp_payment_id or "")
    assert (settled.status, settled.failure) == ("succeeded", None)
    assert len(successful_charges(stripe_base, account.customer_id)) == 1


async def test_an_ach_debit_that_fails_days_later_carries_the_banks_reason(
    adapter: StripeAdapter, stripe_base: str
) -> None:
    account = create_customer_with_bank_account(stripe_base, "us_bank_account")
    script_bank_debit(
        stripe_base, account.customer_id, after=3 * DAY, failure={"code": "insufficient_funds"}
    )
    req = debit(account.customer_id, account.payment_method_id, "usd")

    first = await adapter.create_payment_intent(req)
    assert first.status == "processing"
    assert first.failure is not None and first.failure.code == "bank_debit_pending"
    # ACH: up to 4 business days; the longest of the others, Bacs on a new mandate, 7
    assert waits(first.failure) == (Action.AWAIT_STATUS, 12 * DAY)

    advance_clock(stripe_base, 3 * DAY)
    failed = await adapter.retrieve_payment_intent(first.psp_payment_id or "")
    assert failed.status == "failed"
    assert failed.failure is not None and failed.failure.code == "insufficient_funds"
    c = classify(ClassifyRequest(psp="stripe", code=failed.failure.code))
    assert (c.category, c.action) == (Category.FUNDS, Action.RETRY)
    assert successful_charges(stripe_base, account.customer_id) == []


def intent(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "pi_1", "object": "payment_intent", "status": status, **fields}


@pytest.mark.parametrize(
    ("shape", "code"),
    [
        ({"payment_method": {"id": "pm_1", "type": "bacs_debit"}}, "bank_debit_pending"),
        ({"payment_method": {"id": "pm_1", "type": "acss_debit"}}, "bank_debit_pending"),
        ({"payment_method": {"id": "pm_1", "type": "au_becs_debit"}}, "bank_debit_pending"),
        ({"payment_method": {"id": "pm_1", "type": "sepa_debit"}}, "sepa_debit_pending"),
        (  # the charge says which method it was, when the PaymentMethod is not expanded
            {
                "payment_method": "pm_1",
                "latest_charge": {"payment_method_details": {"type": "us_bank_account"}},
            },
            "bank_debit_pending",
        ),
        ({"payment_method": "pm_1", "payment_method_types": ["sepa_debit"]}, "sepa_debit_pending"),
        # one of several types the PaymentIntent allowed: not known, the generic wait
        ({"payment_method": "pm_1", "payment_method_types": ["card", "sepa_debit"]}, None),
        ({"payment_method": {"id": "pm_1", "type": "card"}}, None),
    ],
)
def test_a_processing_payment_says_which_bank_debit_it_is(
    shape: dict[str, Any], code: str | None
) -> None:
    result = charge_result(intent("processing", **shape))
    assert result.status == "processing"
    assert (result.failure.code if result.failure else None) == code


def test_a_processing_payment_is_not_read_as_its_earlier_error() -> None:
    """A PaymentIntent confirmed again after a failure keeps `last_payment_error` while it
    processes: it is pending, not that failure."""
    shape = {
        "payment_method": {"id": "pm_1", "type": "sepa_debit"},
        "last_payment_error": {"type": "card_error", "code": "insufficient_funds"},
    }
    result = charge_result(intent("processing", **shape))
    assert result.failure is not None and result.failure.code == "sepa_debit_pending"
