"""What the store reads and returns: frozen records, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from recovery.models import Attempt, FailureEvent


@dataclass(frozen=True)
class IngestResult:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    merchant_id: str
    role: str
    key_hash: bytes


@dataclass(frozen=True)
class OutboxRow:
    """A signal waiting to reach a workflow: `payment_failed` rows start the workflow if
    needed (signal-with-start); others only signal a running one."""

    id: int
    workflow_id: str
    signal: str
    payload: dict[str, Any]
    created_at: datetime

    @property
    def event(self) -> FailureEvent:
        return FailureEvent.model_validate(self.payload)


@dataclass(frozen=True)
class RecoveryRecord:
    id: str
    merchant_id: str
    payment_ref: str
    workflow_id: str
    status: str
    category: str | None
    rule: str | None
    attempt_count: int
    next_attempt_at: datetime | None
    next_attempt_reason: str | None
    ended_reason: str | None
    started_at: datetime
    ended_at: datetime | None
    policy_version: int | None
    paused: bool
    amount: int
    currency: str
    psp: str
    customer_id: str | None
    attempts: tuple[Attempt, ...] = ()
