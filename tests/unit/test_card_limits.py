"""Card-network limits: the networks' ceilings, policies that may only lower them, the rolling
window that defers an attempt, and a property over random runs of several recoveries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from recovery.card_networks import (
    HIGHEST_PER_30_DAYS,
    HIGHEST_PER_DAY,
    MASTERCARD,
    STRICTEST,
    VISA,
    network_rule,
)
from recovery.models import Action, Category, Classification
from recovery.policy import (
    DEFAULT_POLICY,
    PolicyUpdate,
    Retry,
    RetryPolicy,
    card_limits,
    card_window,
    decide,
)
from recovery.psp.simulator import card_of, charged_method

T0 = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)
BRANDS = ["visa", "Visa", "mastercard", "MasterCard", "maestro", "elo", "amex", "RuPay", None]


def test_brands_map_to_their_network() -> None:
    assert network_rule("visa") is VISA and network_rule("Visa") is VISA
    assert network_rule("MasterCard") is MASTERCARD and network_rule("mastercard") is MASTERCARD
    assert network_rule("American Express") is STRICTEST and network_rule(None) is STRICTEST
    assert STRICTEST.per_30_days == 15 and STRICTEST.per_day == 9


def test_a_policy_lowers_the_network_ceiling_and_never_raises_or_unsets_it() -> None:
    assert card_limits(DEFAULT_POLICY, "visa") == (20, HIGHEST_PER_DAY)
    assert card_limits(DEFAULT_POLICY, "mastercard") == (34, 9)
    assert card_limits(RetryPolicy(card_attempts_per_30_days=5), "visa")[0] == 5
    # stored before the ceilings were enforced: 35 and None still give the network's
    legacy = RetryPolicy(card_attempts_per_30_days=35, card_attempts_per_day=None)
    assert card_limits(legacy, "visa") == (20, None)  # Visa publishes no 24-hour limit
    assert card_limits(legacy, "mastercard") == (34, 9)
    assert card_limits(legacy, "amex") == (15, 9)


@pytest.mark.parametrize(
    "bad",
    [
        {"card_attempts_per_30_days": None},
        {"card_attempts_per_day": None},
        {"card_attempts_per_30_days": HIGHEST_PER_30_DAYS + 1},
        {"card_attempts_per_day": HIGHEST_PER_DAY + 1},
        {"card_attempts_per_day": 0},
    ],
)
def test_a_published_policy_cannot_unset_or_raise_a_limit(bad: dict) -> None:
    with pytest.raises(ValidationError) as err:
        PolicyUpdate.model_validate(bad)
    assert err.value.errors()[0]["loc"] == (next(iter(bad)),)


def test_missing_limits_are_the_ceilings() -> None:
    p = PolicyUpdate.model_validate({})
    assert (p.card_attempts_per_30_days, p.card_attempts_per_day) == (
        HIGHEST_PER_30_DAYS,
        HIGHEST_PER_DAY,
    )


def test_a_full_window_defers_until_its_oldest_counted_attempt_falls_out() -> None:
    policy = RetryPolicy(card_attempts_per_30_days=3, card_attempts_per_day=2)
    now = T0 + 10 * DAY
    attempts = [T0, T0 + 2 * DAY, T0 + 9 * DAY]
    w = card_window(policy, "visa", attempts, now)
    assert w.not_before == T0 + 30 * DAY and w.last_30_days == 3
    assert "3 attempts on this Visa card in 30 days" in w.reason
    # one dropped out of the 30 days: the attempt may go
    assert card_window(policy, "visa", attempts, T0 + 30 * DAY).not_before is None
    # two in the last 24 hours: the day window decides, and the later of both wins
    busy = [now - timedelta(hours=5), now - timedelta(hours=1)]
    w = card_window(policy, "visa", busy, now)
    assert w.not_before == now - timedelta(hours=5) + DAY and "24 hours" in w.reason
    w = card_window(policy, "visa", [*attempts[:2], *busy], now)
    assert w.not_before == T0 + 2 * DAY + 30 * DAY  # 4 in 30 days: two must fall out


def test_simulated_cards() -> None:
    assert card_of("pm_sim_decline_x@card7") == "card7" == card_of("pm_sim_succeed_on_1@card7")
    assert card_of("pm_sim_decline_x") == "pm_sim_decline_x"
    from recovery.models import Customer, PaymentMethod

    assert charged_method(Customer(id="cus_sim_decline_x"), PaymentMethod()) == "pm_sim_decline_x"
    assert charged_method(Customer(id="cus_1"), PaymentMethod()) == "pm_sim_default"
    assert charged_method(Customer(id="cus_sim_x"), PaymentMethod(id="pm_a")) == "pm_a"


# ---- property: no policy and no path ever exceeds a network limit ---------------------------

FUNDS = Classification(
    category=Category.FUNDS,
    retryable=True,
    action=Action.RETRY,
    cooldown_seconds=3600,
    recommendation="r",
    rule="t.funds",
)

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 15),
    window_days=st.integers(1, 60),
    jitter=st.sampled_from([0.0, 0.2, 0.5]),
    cooldown_multiplier=st.sampled_from([0.1, 1.0, 3.0]),
    payday_snap_days=st.just(0),
    # whatever a policy holds, stored ones included: None, values above a network's
    card_attempts_per_30_days=st.one_of(st.none(), st.integers(1, 35)),
    card_attempts_per_day=st.one_of(st.none(), st.integers(1, 10)),
)
# one step of the world: a new failure starts a recovery; support expedites one; time passes
steps = st.lists(
    st.one_of(
        st.tuples(st.just("failure"), st.integers(0, 3)),
        st.tuples(st.just("expedite"), st.integers(0, 3)),
        st.tuples(st.just("wait"), st.integers(1, 72)),  # hours
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    policy=policies,
    brand=st.sampled_from(BRANDS),
    world=steps,
    rand=st.floats(0, 1, exclude_max=True),
)
def test_no_policy_and_no_path_exceeds_a_network_limit(
    policy: RetryPolicy, brand: str | None, world: list[tuple[str, int]], rand: float
) -> None:
    """Recoveries of one card, driven through the real `decide` and `card_window`: each
    attempt it allows is made, and at no time are there more attempts in a rolling window than
    the card's network allows (the merchant's first decline kept aside where it counts)."""
    now = T0
    made: list[datetime] = []
    recoveries: list[dict] = []  # started_at, attempts, due (None: ended)

    def try_attempt(rec: dict) -> None:
        w = card_window(policy, brand, made, now)
        if w.not_before is None:
            made.append(now)
            rec["attempts"] += 1
            d = decide(
                policy,
                FUNDS,
                attempts_made=rec["attempts"],
                started_at=rec["start"],
                now=now,
                rand=rand,
            )
            rec["due"] = d.at if isinstance(d, Retry) else None
        elif w.not_before > rec["start"] + policy.window:
            rec["due"] = None  # exhausted: the window allows it only after the recovery's
        else:
            rec["due"] = w.not_before

    def run_due() -> None:
        for rec in recoveries:
            if rec["due"] is not None and rec["due"] <= now:
                try_attempt(rec)

    for kind, n in world:
        if kind == "failure":
            d = decide(policy, FUNDS, attempts_made=0, started_at=now, now=now, rand=rand)
            recoveries.append(
                {"start": now, "attempts": 0, "due": d.at if isinstance(d, Retry) else None}
            )
        elif kind == "expedite" and recoveries:
            rec = recoveries[n % len(recoveries)]
            if rec["due"] is not None:
                try_attempt(rec)
        else:
            end = now + timedelta(hours=n)
            while now < end:
                now = min(end, now + timedelta(minutes=30))
                run_due()
    rule = network_rule(brand)
    for t in made:
        assert sum(t - timedelta(days=30) < u <= t for u in made) <= rule.per_30_days
        if rule.per_day is not None:
            assert sum(t - DAY < u <= t for u in made) <= rule.per_day
        lowered_month, lowered_day = card_limits(policy, brand)
        assert sum(t - timedelta(days=30) < u <= t for u in made) <= lowered_month
        if lowered_day is not None:
            assert sum(t - DAY < u <= t for u in made) <= lowered_day
