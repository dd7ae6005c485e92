"""Retry policy: the merchant-tunable limits, and the pure math that schedules attempts.

This is workflow code: the recovery workflow calls `decide` inside its history, so changing
what it answers for a given input changes running recoveries' decisions on replay. Such a
change needs a `workflow.patched()` branch (or a new policy field whose default keeps the old
answer), and a stored history of its own.

Pure and deterministic, so workflow code can call it: the caller passes `now`
(``workflow.now()``) and a uniform random number in [0, 1) (``workflow.random().random()``);
nothing here reads a clock or a random source.

Card-network limits on re-attempts of one card (`NETWORK_RULES` below, each number with its
source and edition): a merchant's policy may lower them, never raise or unset them. A limit
reached defers the attempt to when the rolling window allows it (`card_window`); hard declines
and "do not try again" advice never retry at all (the classifier stops them).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from recovery.card_networks import (
    HIGHEST_PER_30_DAYS,
    HIGHEST_PER_DAY,
    NetworkRule,
    network_rule,
)
from recovery.models import (
    Action,
    Category,
    Classification,
    ClassifyRequest,
    Customer,
    PaymentMethod,
)

MAX_REMINDERS = 10


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
    card_attempts_per_30_days: Annotated[int | None, Field(ge=1, le=35)] = HIGHEST_PER_30_DAYS
    """Attempts on one card across all of the merchant's recoveries in a rolling 30 days: lowers
    every card network's ceiling to this (`recovery.card_networks`). None (policies stored
    before the ceilings were enforced) means the network's ceiling, never "no limit"."""
    card_attempts_per_day: Annotated[int | None, Field(ge=1, le=10)] = HIGHEST_PER_DAY
    """Attempts on one card in a rolling 24 hours, likewise."""
    email_customers: bool = True
    """Whether a recovery waiting for the customer e-mails them its retry link (off: the
    links are still issued, for the merchant to pass on, e.g. from the `link.issued` webhook)."""
    reminder_days: Annotated[tuple[int, ...], Field(max_length=MAX_REMINDERS)] = (3, 7)
    """Days after the first e-mail of a wait for the customer on which a reminder, with a
    fresh link, goes out (while the recovery still waits): increasing, within the window."""
    email_receipts: bool = False
    """Whether a recovery the customer paid themselves (through the retry link or the PSP's
    checkout, not a charge of ours) e-mails them a receipt once it ended `recovered`. Off by
    default: many merchants' PSPs send receipts already."""

    @field_validator("reminder_days")
    @classmethod
    def _increasing_days(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(day < 1 for day in v):
            raise ValueError("reminder days count from 1 (the first e-mail is day 0)")
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError("reminder days must be strictly increasing, e.g. [3, 7]")
        return v

    @property
    def window(self) -> timedelta:
        return timedelta(days=self.window_days)


class PolicyUpdate(RetryPolicy):
    """A policy as a merchant publishes it (`PUT /v1/policy`): every field optional (defaults
    apply; `version` is assigned by the server), and the card-network limits are ceilings: a
    missing limit is the networks' own, null or a value above every network's is refused."""

    card_attempts_per_30_days: Annotated[int, Field(ge=1, le=HIGHEST_PER_30_DAYS)] = (
        HIGHEST_PER_30_DAYS
    )
    card_attempts_per_day: Annotated[int, Field(ge=1, le=HIGHEST_PER_DAY)] = HIGHEST_PER_DAY

    @field_validator("card_attempts_per_30_days", "card_attempts_per_day", mode="before")
    @classmethod
    def _never_unset(cls, v: object) -> object:
        if v is None:
            raise ValueError(
                "a card-network limit cannot be unset: it is a ceiling a policy may only lower"
            )
        return v

    @field_validator("reminder_days")
    @classmethod
    def _reminders_within_window(cls, v: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        # (only what merchants publish: a stored policy loads whatever it holds, and a
        # reminder due after its window is never sent)
        window = info.data.get("window_days")
        if v and isinstance(window, int) and v[-1] >= window:
            raise ValueError(
                f"reminder day {v[-1]} is not before the end of the {window}-day recovery window"
            )
        return v


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


def attempt_cap(policy: RetryPolicy, category: Category | None) -> int:
    """How many charges of ours a recovery of `category` may make under `policy`."""
    return policy.max_unknown_attempts if category is Category.UNKNOWN else policy.max_attempts


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
    cap = attempt_cap(policy, classification.category)
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


class BeginRecovery(BaseModel):
    """What a recovery run asks as it starts (`begin_recovery`): is its recovery still
    open, the merchant's retry policy, and the first failure's classification."""

    recovery_id: str
    merchant_id: str
    classify: ClassifyRequest


class RecoveryBegun(BaseModel):
    """`open` false: the event belongs to a recovery that already ended (nothing else is
    said). Classification stays an activity's answer, recorded in the history, so a
    recovery keeps the decisions it made when the rule tables change."""

    open: bool
    policy: RetryPolicy | None = None
    classification: Classification | None = None


class CardAttemptRequest(BaseModel):
    """Check one attempt against the card-network limits and reserve it on its card: the card
    the PSP will charge for `customer` / `payment_method`, as of `at` (the workflow's now)."""

    merchant_id: str
    psp: str
    customer: Customer = Customer()
    payment_method: PaymentMethod = PaymentMethod()
    idempotency_key: str
    at: datetime
    policy: RetryPolicy


@dataclass(frozen=True)
class CardWindow:
    """Whether one more attempt on a card fits the card-network limits now, and if not, the
    earliest time the rolling windows allow it (when no other attempt is made meanwhile)."""

    not_before: datetime | None
    """None: the attempt may go now."""
    reason: str
    last_30_days: int
    last_day: int


def card_limits(policy: RetryPolicy, brand: str | None) -> tuple[int, int | None]:
    """(per 30 days, per 24 hours) for a card of `brand`: the network's ceilings, lowered by
    the policy. A policy can neither raise nor unset them (None is the network's)."""
    rule = network_rule(brand)
    month = min(policy.card_attempts_per_30_days or rule.per_30_days, rule.per_30_days)
    day_limits = [x for x in (policy.card_attempts_per_day, rule.per_day) if x is not None]
    return month, (min(day_limits) if day_limits else None)


def card_window(
    policy: RetryPolicy, brand: str | None, attempts: Sequence[datetime], now: datetime
) -> CardWindow:
    """Decide one more attempt on a card that was attempted at `attempts` (ours, across the
    merchant's recoveries): allowed now, or deferred until the oldest attempts that fill a
    window have fallen out of it (an attempt at `t` counts until `t + window`)."""
    month_limit, day_limit = card_limits(policy, brand)
    rule = network_rule(brand)
    deferred: list[tuple[datetime, str]] = []
    counts: dict[timedelta, int] = {}
    for window, limit, label in (
        (timedelta(days=30), month_limit, "30 days"),
        (timedelta(hours=24), day_limit, "24 hours"),
    ):
        inside = sorted(t for t in attempts if t > now - window)
        counts[window] = len(inside)
        if limit is None or len(inside) < limit:
            continue
        free_at = inside[len(inside) - limit] + window
        deferred.append(
            (
                free_at,
                f"card-network limit: {len(inside)} attempts on this {rule.network} card in "
                f"{label} (at most {limit}: {rule.network} allows "
                f"{_network_limit(rule, window)}, policy v{policy.version} "
                f"{_policy_limit(policy, window)})",
            )
        )
    month, day = counts[timedelta(days=30)], counts[timedelta(hours=24)]
    if not deferred:
        return CardWindow(None, "within the card-network limits", month, day)
    at, why = max(deferred)
    return CardWindow(at, why, month, day)


def _network_limit(rule: NetworkRule, window: timedelta) -> str:
    per = rule.per_30_days if window > timedelta(days=1) else rule.per_day
    return "no limit of its own" if per is None else str(per)


def _policy_limit(policy: RetryPolicy, window: timedelta) -> str:
    per = (
        policy.card_attempts_per_30_days
        if window > timedelta(days=1)
        else policy.card_attempts_per_day
    )
    return "the network's" if per is None else str(per)
