"""What merchants are told (merchant webhooks, Standard Webhooks): the event types, which of
them a recovery's state write tells, and what `recovery.attempt_failed` says.

Pure: the store reads the facts in the transaction of the write and records the events
(`recovery.store.merchant_webhooks`), so each event is written once, with the change that
caused it, and the workflow knows nothing of them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from recovery.models import RecoveryStatus


class EventType(StrEnum):
    RECOVERY_STARTED = "recovery.started"
    RECOVERY_ATTEMPT_FAILED = "recovery.attempt_failed"
    RECOVERY_AWAITING_CUSTOMER = "recovery.awaiting_customer"
    RECOVERY_RECOVERED = "recovery.recovered"
    RECOVERY_EXHAUSTED = "recovery.exhausted"
    RECOVERY_CANCELLED = "recovery.cancelled"
    RECOVERY_PAUSED = "recovery.paused"
    RECOVERY_RESUMED = "recovery.resumed"
    LINK_ISSUED = "link.issued"
    PAYMENT_RECEIVED_AFTER_END = "payment.received_after_end"
    PAYMENT_REFUNDED_DUPLICATE = "payment.refunded_duplicate"


ENDED_EVENTS = {
    RecoveryStatus.RECOVERED: EventType.RECOVERY_RECOVERED,
    RecoveryStatus.EXHAUSTED: EventType.RECOVERY_EXHAUSTED,
    RecoveryStatus.CANCELLED: EventType.RECOVERY_CANCELLED,
}

# Attempt statuses (the `attempts` table) that are not a failure, or not yet one.
NOT_FAILED = ("pending", "processing", "succeeded")


def event_id_for(merchant_id: str, dedupe_key: str) -> str:
    """An event's id, derived from what happened (its dedupe key): the same on every retry
    of the write that tells it."""
    digest = hashlib.sha256(f"{merchant_id}\0{dedupe_key}".encode()).hexdigest()
    return f"evt_{digest[:32]}"


@dataclass(frozen=True)
class Shown:
    """What Postgres showed of a recovery, before or after a state write."""

    status: str
    paused: bool
    ended: bool


def transitions(before: Shown, after: Shown) -> list[EventType]:
    """The changes a state write tells, in order (`recovery.started` and the failed attempts
    are found by what was told before, not by the change)."""
    if before.ended:
        return []
    if after.ended:
        return [ENDED_EVENTS[RecoveryStatus(after.status)]]
    told = []
    if after.status == RecoveryStatus.AWAITING_CUSTOMER and before.status != after.status:
        told.append(EventType.RECOVERY_AWAITING_CUSTOMER)
    if after.paused != before.paused:
        told.append(EventType.RECOVERY_PAUSED if after.paused else EventType.RECOVERY_RESUMED)
    return told


@dataclass(frozen=True)
class WhatNext:
    """`recovery.attempt_failed`'s answer to "what now?", as of the write that tells it."""

    will_retry: bool
    """the recovery makes another attempt by itself (scheduled, or held by a pause, a pending
    payment or the card-network limits); false once it ended or while only the customer can
    act"""
    next_attempt_at: datetime | None
    attempts_left: int
    """charges of ours its policy still allows (0 once it ended)"""
    rule: str | None
    """the classifier's rule for the latest failure"""
    reason: str | None
    """why the recovery does what it does next (the decision's reason, or why it ended)"""


def what_next(
    *,
    status: str,
    ended: bool,
    next_attempt_at: datetime | None,
    next_attempt_reason: str | None,
    ended_reason: str | None,
    rule: str | None,
    attempts_made: int,
    attempt_cap: int,
) -> WhatNext:
    return WhatNext(
        will_retry=not ended and status == RecoveryStatus.ACTIVE,
        next_attempt_at=None if ended else next_attempt_at,
        attempts_left=0 if ended else max(0, attempt_cap - attempts_made),
        rule=rule,
        reason=ended_reason if ended else next_attempt_reason,
    )
