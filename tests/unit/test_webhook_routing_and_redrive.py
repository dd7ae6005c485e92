"""The domain decisions the store used to make: what a PSP webhook means, who may redrive."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recovery.errors import NotFound, RecoveryNotExhausted
from recovery.models import Customer, Failure, FailureEvent, PaymentMethod, WebhookEvent
from recovery.payments import Disposition, RecoveryFacts, dispose, short_of
from recovery.redrive import check_redrivable, redrive_event
from recovery.webhook_routing import (
    OpenRecovery,
    PaymentFacts,
    WebhookOutcome,
    WebhookRoute,
    names_a_payment,
    paid_route,
    route_webhook,
)

NOW = datetime(2026, 12, 1, tzinfo=UTC)
OPEN = OpenRecovery("rec_1", "stripe", 4999, "usd", "cus_1", "a@example.com", None, "pm_1")


def event(kind: str, **kw: object) -> WebhookEvent:
    base = {"psp": "stripe", "event_id": "evt_1", "kind": kind, "psp_type": "x"}
    return WebhookEvent.model_validate({**base, "merchant_id": "m", "payment_ref": "r", **kw})


@pytest.mark.parametrize("kind", ["ignored", "payment_refunded", "checkout_closed"])
def test_events_for_no_recovery_are_only_recorded(kind: str) -> None:
    assert not names_a_payment(event(kind))
    assert route_webhook(event(kind), None, now=NOW).outcome == kind


def test_an_event_without_a_known_payment_is_unknown() -> None:
    assert not names_a_payment(event("payment_succeeded", payment_ref=None))
    assert route_webhook(event("payment_failed"), None, now=NOW).outcome is (
        WebhookOutcome.UNKNOWN_PAYMENT
    )


def test_a_payment_signals_success_even_after_the_recovery_ended() -> None:
    route = route_webhook(
        event("checkout_completed", psp_payment_id="pi_1"), PaymentFacts(None, False), now=NOW
    )
    assert route.outcome is WebhookOutcome.SIGNALLED_PAYMENT_SUCCEEDED and route.failed is None
    assert route.succeeded is not None and route.succeeded.source == "stripe_webhook"
    assert route.succeeded.psp_payment_id == "pi_1"


def test_a_failure_joins_the_open_recovery_unless_known_or_ended() -> None:
    failed = event("payment_failed")
    assert route_webhook(failed, PaymentFacts(OPEN, True), now=NOW).outcome is (
        WebhookOutcome.ALREADY_KNOWN
    )
    assert route_webhook(failed, PaymentFacts(None, False), now=NOW).outcome is (
        WebhookOutcome.RECOVERY_ENDED
    )
    route = route_webhook(failed, PaymentFacts(OPEN, False), now=NOW)
    assert route.outcome is WebhookOutcome.SIGNALLED_PAYMENT_FAILED and route.failed is not None
    assert route.failed.event_id == "stripe:evt_1" and route.failed.recovery_id == "rec_1"
    assert route.failed.payment_method.type == "card" and route.failed.occurred_at == NOW
    assert route.failed.failure.code == "payment_failed"


def test_a_failed_try_on_our_checkout_is_no_failure_of_the_recovery() -> None:
    """The customer's card declined on our hosted page: they may try again there; the
    recovery neither decides again nor ends for it."""
    tried = event("payment_failed", link_id="lnk_1", psp_payment_id="pi_1")
    for facts in (PaymentFacts(OPEN, False), PaymentFacts(OPEN, True), PaymentFacts(None, False)):
        route = route_webhook(tried, facts, now=NOW)
        assert route.outcome is WebhookOutcome.CHECKOUT_PAYMENT_FAILED
        assert route.failed is None and route.succeeded is None


def test_a_part_payment_settles_nothing_and_is_refunded() -> None:
    running = RecoveryFacts(status="active", ended=False, settled=False)
    assert dispose(running, short=True) is Disposition.PARTIAL
    assert dispose(running) is Disposition.RECOVERED
    assert Disposition.PARTIAL.refunded and Disposition.DUPLICATE.refunded
    assert not Disposition.RECOVERED.refunded and not Disposition.PAID_AFTER_END.refunded
    paid = WebhookRoute(WebhookOutcome.SIGNALLED_PAYMENT_SUCCEEDED)
    assert paid_route(paid, Disposition.PARTIAL).outcome is WebhookOutcome.REFUNDING_PARTIAL


@pytest.mark.parametrize(
    ("amount", "currency", "short"),
    [
        (2000, "inr", True),
        (2000, "INR", True),
        (4999, "inr", False),
        (5000, "inr", False),
        (None, "inr", False),  # not said: the whole
        (2000, None, True),
        (2000, "usd", False),  # another currency is not compared
    ],
)
def test_a_payment_is_short_only_below_the_amount_in_its_currency(
    amount: int | None, currency: str | None, short: bool
) -> None:
    assert short_of(amount, currency, 4999, "inr") is short


@pytest.mark.parametrize(
    "kind", ["payment_succeeded", "checkout_completed", "payment_failed", "payment_refunded"]
)
def test_a_merchant_own_account_speaks_for_its_own_payments_only(kind: str) -> None:
    theirs = event(kind, merchant_id="another_merchant")
    assert not names_a_payment(theirs, account="m")
    facts = PaymentFacts(OPEN, False)
    route = route_webhook(theirs, facts, now=NOW, account="m")
    assert route.outcome is WebhookOutcome.OTHER_MERCHANT
    assert route.succeeded is None and route.failed is None
    assert route_webhook(event(kind), facts, now=NOW, account="m").outcome is not (
        WebhookOutcome.OTHER_MERCHANT
    )
    assert route_webhook(theirs, facts, now=NOW).outcome is not WebhookOutcome.OTHER_MERCHANT


def test_only_an_exhausted_recovery_is_redriven() -> None:
    with pytest.raises(NotFound):
        check_redrivable("r", None)
    with pytest.raises(RecoveryNotExhausted):
        check_redrivable("r", "active")
    check_redrivable("r", "exhausted")
    last = FailureEvent(
        event_id="evt_9",
        recovery_id="rec_1",
        merchant_id="m",
        payment_ref="r",
        psp="stripe",
        amount=100,
        currency="usd",
        customer=Customer(id="cus_1"),
        payment_method=PaymentMethod(type="card", id="pm_1"),
        failure=Failure(code="card_declined"),
        occurred_at=NOW,
    )
    again = redrive_event(last, "rec_2")
    assert (again.event_id, again.recovery_id) == ("redrive_rec_2", "rec_2")
    assert again.model_copy(update={"event_id": "evt_9", "recovery_id": "rec_1"}) == last
