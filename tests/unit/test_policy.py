"""Retry policy math: paydays, card-network limits, validation, schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from recovery.models import Action, Category, Classification
from recovery.policy import (
    DEFAULT_POLICY,
    LEGACY_POLICY,
    Exhausted,
    Retry,
    RetryPolicy,
    card_limit_reached,
    decide,
    next_payday,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def funds(cooldown: int = 86400) -> Classification:
    return Classification(
        category=Category.FUNDS,
        retryable=True,
        action=Action.RETRY,
        cooldown_seconds=cooldown,
        recommendation="r",
        rule="t.funds",
    )


def test_next_payday() -> None:
    assert next_payday(datetime(2026, 11, 13, 12, tzinfo=UTC)) == datetime(
        2026, 11, 15, 9, tzinfo=UTC
    )
    assert next_payday(datetime(2026, 11, 15, 10, tzinfo=UTC)) == datetime(
        2026, 12, 1, 9, tzinfo=UTC
    )
    assert next_payday(datetime(2026, 12, 31, 23, tzinfo=UTC)) == datetime(
        2027, 1, 1, 9, tzinfo=UTC
    )


def test_funds_retry_snaps_forward_to_a_near_payday_only() -> None:
    now = datetime(2026, 11, 12, 8, tzinfo=UTC)  # +1 day lands on the 13th: payday the 15th
    d = decide(DEFAULT_POLICY, funds(), attempts_made=0, started_at=now, now=now, rand=0.5)
    assert isinstance(d, Retry) and "payday" in d.reason
    assert d.at == datetime(2026, 11, 15, 9, tzinfo=UTC)
    d = decide(LEGACY_POLICY, funds(), attempts_made=0, started_at=now, now=now, rand=0.5)
    assert isinstance(d, Retry) and d.at == now + timedelta(days=1)
    far = datetime(2026, 11, 2, 8, tzinfo=UTC)  # the 3rd is 12 days before a payday
    d = decide(DEFAULT_POLICY, funds(), attempts_made=0, started_at=far, now=far, rand=0.5)
    assert isinstance(d, Retry) and d.at == far + timedelta(days=1)


def test_card_limits() -> None:
    p = RetryPolicy(card_attempts_per_30_days=15, card_attempts_per_day=10)
    assert card_limit_reached(p, 14, 9) is None
    assert "30 days" in (card_limit_reached(p, 15, 0) or "")
    assert "24 hours" in (card_limit_reached(p, 3, 10) or "")
    assert card_limit_reached(LEGACY_POLICY, 1000, 1000) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"max_attempts": 0},
        {"max_attempts": 16},
        {"window_days": 0},
        {"jitter": 0.9},
        {"card_attempts_per_30_days": 36},
        {"unknown_field": 1},
        {"max_attempts": "many"},
    ],
)
def test_policy_validation(bad: dict) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy.model_validate(bad)


@given(
    cooldown=st.integers(min_value=60, max_value=7 * 86400),
    attempts=st.integers(min_value=0, max_value=20),
    rand=st.floats(min_value=0, max_value=1, exclude_max=True),
    elapsed_hours=st.integers(min_value=0, max_value=30 * 24),
    max_attempts=st.integers(min_value=1, max_value=15),
    window_days=st.integers(min_value=1, max_value=60),
)
def test_schedules_are_capped_and_inside_the_window(
    cooldown: int,
    attempts: int,
    rand: float,
    elapsed_hours: int,
    max_attempts: int,
    window_days: int,
) -> None:
    policy = RetryPolicy(max_attempts=max_attempts, window_days=window_days)
    now = T0 + timedelta(hours=elapsed_hours)
    d = decide(policy, funds(cooldown), attempts_made=attempts, started_at=T0, now=now, rand=rand)
    if attempts >= max_attempts:
        assert isinstance(d, Exhausted)
    if isinstance(d, Retry):
        assert now < d.at <= T0 + policy.window
        assert d.at - now >= timedelta(seconds=cooldown * (1 - policy.jitter)) - timedelta(
            seconds=1
        )
    assert d == decide(
        policy, funds(cooldown), attempts_made=attempts, started_at=T0, now=now, rand=rand
    )


def _paydays_after(at: datetime) -> datetime:
    """An oracle written apart from `next_payday`: the 1st and 15th 09:00 of `at`'s month
    and the next, the first of them later than `at`."""
    first = at.replace(day=1, hour=9, minute=0, second=0, microsecond=0)
    following = (first + timedelta(days=32)).replace(day=1)
    candidates = [first, first.replace(day=15), following, following.replace(day=15)]
    return min(c for c in candidates if c > at)


@pytest.mark.parametrize("year", [2027, 2028])  # a common year and a leap year
@pytest.mark.parametrize("snap_days", [1, 3, 7])
def test_payday_rules_hold_on_every_day_of_a_year(year: int, snap_days: int) -> None:
    """Every start day and hour of a whole year: a funds retry is never earlier than its
    cooldown, moves only to the first payday after it, and only when that payday is near."""
    policy = RetryPolicy(payday_snap_days=snap_days)
    start = datetime(year, 1, 1, tzinfo=UTC)
    snapped_to_days: set[int] = set()
    for hour in range(0, (366 if year == 2028 else 365) * 24, 5):
        now = start + timedelta(hours=hour)
        for rand in (0.0, 0.5, 0.999):
            d = decide(policy, funds(), attempts_made=0, started_at=now, now=now, rand=rand)
            plain = decide(
                policy.model_copy(update={"payday_snap_days": 0}),
                funds(),
                attempts_made=0,
                started_at=now,
                now=now,
                rand=rand,
            )
            assert isinstance(d, Retry) and isinstance(plain, Retry)
            payday = _paydays_after(plain.at)
            assert next_payday(plain.at) == payday
            if payday - plain.at <= timedelta(days=snap_days):
                assert d.at == payday, (now, rand)
                assert f"moved to payday {payday.date().isoformat()}" in d.reason
                snapped_to_days.add(d.at.day)
            else:
                assert d.at == plain.at, (now, rand)
                assert "payday" not in d.reason
    assert snapped_to_days == {1, 15}
