"""Retry policy: the merchant-tunable limits, and the pure math that schedules attempts.

This is workflow code: the recovery workflow calls `decide` inside its history, so changing
what it answers for a given input changes running recoveries' decisions on replay. Such a
change needs a `workflow.patched()` branch (or a new policy field whose default keeps the old
answer), and a stored history of its own.

Pure and deterministic, so workflow code can call it: the caller passes `now`
(``workflow.now()``) and a uniform random number in [0, 1) (``workflow.random().random()``);
nothing here reads a clock or a random source.

Card-network limits on re-attempts of the same card (merchant-initiated retries):
- Visa: Category 1 declines ("issuer will never approve": pick up, lost, stolen, closed
  account, ...) must never be retried; other declines at most 15 re-attempts in a rolling
  30 days (20 from May 2025, counted separately for merchant-initiated transactions).
- Mastercard: merchant advice codes 03 and 21 ("do not try again") must never be retried;
  otherwise at most 10 re-attempts in 24 hours and 35 in a rolling 30 days.
The defaults below keep under both: 15 attempts per card in 30 days and 10 in 24 hours
(hard declines and "do not try again" advice stop at the classifier).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from recovery.models import Action, Category, Classification


class RetryPolicy(BaseModel):
    """A merchant's retry policy. Each recovery pins the version it started with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 0
    """0 is the built-in default; merchant versions count up from 1."""
    max_attempts: Annotated[int, Field(ge=1, le=15)] = 4
    """Charges we make ourselves, per recovery run."""
    window_days: Annotated[int, Field(ge=1, le=60)] = 21
    """No attempt is scheduled later than this many days after the recovery started."""
    max_unknown_attempts: Annotated[int, Field(ge=0, le=15)] = 2
    """Unknown failures get fewer tries: we do not know that retrying helps."""
    jitter: Annotated[float, Field(ge=0, le=0.5)] = 0.2
    """Each delay is stretched or shrunk by up to this fraction, spreading load on the PSP."""
    cooldown_multiplier: Annotated[float, Field(ge=0.1, le=10)] = 1.0
    """Scales every cooldown the classifier proposes."""
    payday_snap_days: Annotated[int, Field(ge=0, le=7)] = 3
    """Funds retries that would land up to this many days before a payday (the 1st or the
    15th of a month) wait for the payday morning instead, when balances are refilled."""
    card_attempts_per_30_days: Annotated[int | None, Field(ge=1, le=35)] = 15
    """Attempts on one card across all of the merchant's recoveries in a rolling 30 days."""
    card_attempts_per_day: Annotated[int | None, Field(ge=1, le=10)] = 10
    """Attempts on one card in a rolling 24 hours."""

    @property
    def window(self) -> timedelta:
        return timedelta(days=self.window_days)


DEFAULT_POLICY = RetryPolicy()

# What recoveries started before policies existed ran with; their histories replay with it.
LEGACY_POLICY = RetryPolicy(
    payday_snap_days=0, card_attempts_per_30_days=None, card_attempts_per_day=None
)

PAYDAY_HOUR = time(9, 0)


# What `decide` answers: one of four shapes, each with exactly the fields it needs. The
# workflow dispatches on them with `match`, ending in `assert_never`, so a new shape cannot
# be forgotten in one place.


@dataclass(frozen=True)
class Retry:
    """Charge again at `at` (after the cooldown)."""

    at: datetime
    reason: str


@dataclass(frozen=True)
class AwaitStatus:
    """A payment may still complete: wait for its status until `until`, never charging."""

    until: datetime
    reason: str


@dataclass(frozen=True)
class CustomerAction:
    """Only the customer can fix it: send them a link and wait."""

    reason: str


@dataclass(frozen=True)
class Exhausted:
    """Stop: no attempt is allowed any more."""

    reason: str


Decision = Retry | AwaitStatus | CustomerAction | Exhausted


def _human(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 60:.0f}m"


def next_payday(at: datetime) -> datetime:
    """The first payday morning (the 1st or the 15th, 09:00 in `at`'s zone) after `at`."""
    day = at.date()
    for _ in range(32):
        if day.day in (1, 15):
            candidate = datetime.combine(day, PAYDAY_HOUR, tzinfo=at.tzinfo)
            if candidate > at:
                return candidate
        day += timedelta(days=1)
    raise AssertionError("unreachable: a payday falls within any 32 days")


def decide(
    policy: RetryPolicy,
    classification: Classification,
    *,
    attempts_made: int,
    started_at: datetime,
    now: datetime,
    rand: float,
) -> Decision:
    """What the recovery does next after a failure, and when."""
    deadline = started_at + policy.window
    pinned = f"policy v{policy.version}"
    if classification.action is Action.STOP:
        return Exhausted(f"rule {classification.rule} says do not retry")
    if classification.action is Action.CUSTOMER_ACTION:
        return CustomerAction(f"rule {classification.rule} needs the customer to act")
    if classification.action is Action.AWAIT_STATUS:
        if now >= deadline:
            return Exhausted(f"recovery window closed ({policy.window_days}d after start)")
        until = min(now + timedelta(seconds=classification.cooldown_seconds), deadline)
        return AwaitStatus(until, f"rule {classification.rule}: payment may complete")
    cap = (
        policy.max_unknown_attempts
        if classification.category is Category.UNKNOWN
        else policy.max_attempts
    )
    if attempts_made >= cap:
        return Exhausted(f"max attempts reached ({attempts_made}/{cap}, {pinned})")
    factor = 1 + policy.jitter * (2 * rand - 1)
    delay = classification.cooldown_seconds * policy.cooldown_multiplier * factor
    at = now + timedelta(seconds=delay)
    why = (
        f"{classification.category.value} via rule {classification.rule}: cooldown "
        f"{_human(classification.cooldown_seconds)} x {policy.cooldown_multiplier:g} x jitter "
        f"{factor:.2f} = {_human(delay)}"
    )
    if classification.category is Category.FUNDS and policy.payday_snap_days:
        payday = next_payday(at)
        if payday - at <= timedelta(days=policy.payday_snap_days) and payday <= deadline:
            at = payday
            why += f", moved to payday {payday.date().isoformat()}"
    if at > deadline:
        return Exhausted(f"recovery window closed ({policy.window_days}d after start)")
    return Retry(at, f"{why}; attempt {attempts_made + 1} of {cap}, {pinned}")


def card_limit_reached(
    policy: RetryPolicy, attempts_last_30_days: int, attempts_last_day: int
) -> str | None:
    """Why one more attempt on this card would break a card-network limit, or None."""
    if policy.card_attempts_per_30_days is not None and (
        attempts_last_30_days >= policy.card_attempts_per_30_days
    ):
        return (
            f"card-network limit: {attempts_last_30_days} attempts on this card in 30 days "
            f"(policy v{policy.version} allows {policy.card_attempts_per_30_days})"
        )
    if policy.card_attempts_per_day is not None and (
        attempts_last_day >= policy.card_attempts_per_day
    ):
        return (
            f"card-network limit: {attempts_last_day} attempts on this card in 24 hours "
            f"(policy v{policy.version} allows {policy.card_attempts_per_day})"
        )
    return None
