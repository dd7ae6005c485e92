"""Pure parts: the classifier rules and the retry policy math."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from recovery.classifier import classify
from recovery.models import Action, Category, ClassifyRequest
from recovery.policy import (
    DEFAULT_POLICY,
    AwaitStatus,
    CustomerAction,
    Exhausted,
    Retry,
    RetryPolicy,
    decide,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def c(**kw) -> object:
    return classify(ClassifyRequest(psp="stripe", **kw))


@pytest.mark.parametrize(
    ("kw", "category", "action", "rule"),
    [
        ({"decline_code": "insufficient_funds"}, Category.FUNDS, Action.RETRY,
         "stripe.decline_code.insufficient_funds"),
        ({"decline_code": "do_not_honor"}, Category.ISSUER_DECLINE, Action.RETRY,
         "stripe.decline_code.do_not_honor"),
        ({"decline_code": "stolen_card"}, Category.ISSUER_DECLINE, Action.CUSTOMER_ACTION,
         "stripe.decline_code.stolen_card"),
        ({"decline_code": "FRAUDULENT "}, Category.ISSUER_DECLINE, Action.CUSTOMER_ACTION,
         "stripe.decline_code.fraudulent"),
        ({"code": "processing_error"}, Category.NETWORK, Action.RETRY,
         "stripe.code.processing_error"),
        ({"code": "authentication_required"}, Category.AUTH_TIMEOUT, Action.CUSTOMER_ACTION,
         "stripe.code.authentication_required"),
        ({"decline_code": "payment_pending"}, Category.UPI_PENDING, Action.AWAIT_STATUS,
         "pending.payment_pending"),
        ({"message": "Request TIMED OUT at gateway"}, Category.NETWORK, Action.RETRY,
         "message.timed_out"),
        ({"code": "zz_never_heard_of_it"}, Category.UNKNOWN, Action.RETRY, "fallback.unknown"),
        ({"decline_code": "do_not_honor", "network_advice_code": "03"}, Category.ISSUER_DECLINE,
         Action.STOP, "advice.03"),
    ],
)  # fmt: skip
def test_rules(kw: dict, category: Category, action: Action, rule: str) -> None:
    out = c(**kw)
    assert (out.category, out.action, out.rule) == (category, action, rule)
    assert out.recommendation
    assert out == c(**kw)  # deterministic


def test_soft_decline_cooldown_grows_with_attempts_and_is_capped() -> None:
    cooldowns = [c(decline_code="do_not_honor", attempt=n).cooldown_seconds for n in (1, 2, 3)]
    assert cooldowns[0] < cooldowns[1] < cooldowns[2]
    assert c(decline_code="do_not_honor", attempt=50).cooldown_seconds == 3 * 24 * 3600
    assert c(decline_code="insufficient_funds", attempt=50).cooldown_seconds == 7 * 24 * 3600
    assert c(code="processing_error", attempt=50).cooldown_seconds == 2 * 3600


def test_decide_schedules_within_jitter() -> None:
    cls = c(decline_code="insufficient_funds")
    for rand, factor in ((0.0, 0.8), (0.5, 1.0), (0.999999, 1.2)):
        d = decide(DEFAULT_POLICY, cls, attempts_made=0, started_at=T0, now=T0, rand=rand)
        assert isinstance(d, Retry)
        expected = timedelta(seconds=cls.cooldown_seconds * factor)
        assert abs((d.at - T0) - expected) < timedelta(seconds=1)
        assert "attempt 1 of 4" in d.reason


def test_decide_stops_at_max_attempts_and_window() -> None:
    cls = c(decline_code="insufficient_funds")
    d = decide(DEFAULT_POLICY, cls, attempts_made=4, started_at=T0, now=T0, rand=0.5)
    assert isinstance(d, Exhausted) and "max attempts" in d.reason
    late = T0 + DEFAULT_POLICY.window - timedelta(hours=1)
    d = decide(DEFAULT_POLICY, cls, attempts_made=1, started_at=T0, now=late, rand=0.5)
    assert isinstance(d, Exhausted) and "window" in d.reason
    unknown = c(code="zz")
    d = decide(RetryPolicy(), unknown, attempts_made=2, started_at=T0, now=T0, rand=0.5)
    assert isinstance(d, Exhausted)


def test_decide_customer_action_and_await_status() -> None:
    d = decide(
        DEFAULT_POLICY,
        c(decline_code="lost_card"),
        attempts_made=0,
        started_at=T0,
        now=T0,
        rand=0.5,
    )
    assert isinstance(d, CustomerAction)
    d = decide(
        DEFAULT_POLICY,
        c(decline_code="payment_pending"),
        attempts_made=0,
        started_at=T0,
        now=T0,
        rand=0.5,
    )
    assert d == AwaitStatus(T0 + timedelta(minutes=30), d.reason)
