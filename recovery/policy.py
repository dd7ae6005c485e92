"""Retry policy math: pure and deterministic, so workflow code can call it.

The caller passes `now` (``workflow.now()``) and a uniform random number in [0, 1)
(``workflow.random().random()``); nothing here reads a clock or a random source.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from recovery.models import Action, Category, Classification


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    """Charges we make ourselves, per recovery run."""
    window: timedelta = timedelta(days=21)
    """No attempt is scheduled later than this after the recovery started."""
    max_unknown_attempts: int = 2
    """Unknown failures get fewer tries: we do not know that retrying helps."""
    jitter: float = 0.2
    """Each delay is stretched or shrunk by up to this fraction, spreading load on the PSP."""


DEFAULT_POLICY = RetryPolicy()

DecisionKind = Literal["attempt", "customer_action", "await_status", "exhausted"]


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    at: datetime | None
    reason: str


def _human(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 60:.0f}m"


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
    if classification.action is Action.STOP:
        return Decision("exhausted", None, f"rule {classification.rule} says stop")
    if classification.action is Action.CUSTOMER_ACTION:
        return Decision(
            "customer_action", None, f"rule {classification.rule} needs the customer to act"
        )
    if classification.action is Action.AWAIT_STATUS:
        until = min(now + timedelta(seconds=classification.cooldown_seconds), deadline)
        return Decision("await_status", until, f"rule {classification.rule}: payment may complete")
    cap = (
        policy.max_unknown_attempts
        if classification.category is Category.UNKNOWN
        else policy.max_attempts
    )
    if attempts_made >= cap:
        return Decision("exhausted", None, f"max attempts reached ({attempts_made}/{cap})")
    factor = 1 + policy.jitter * (2 * rand - 1)
    delay = classification.cooldown_seconds * factor
    at = now + timedelta(seconds=delay)
    if at > deadline:
        return Decision(
            "exhausted", None, f"recovery window closed ({policy.window.days}d after start)"
        )
    return Decision(
        "attempt",
        at,
        f"{classification.category.value} via rule {classification.rule}: cooldown "
        f"{_human(classification.cooldown_seconds)} x jitter {factor:.2f} = {_human(delay)}; "
        f"attempt {attempts_made + 1} of {cap}",
    )
