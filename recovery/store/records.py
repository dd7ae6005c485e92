"""What the store reads and returns: frozen records, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from recovery.models import Attempt, FailureEvent


class IngestOutcome(StrEnum):
    ACCEPTED = "accepted"  # recorded and queued for its recovery
    DUPLICATE = "duplicate"  # an event id already recorded: nothing new
    REPLAYED = "replayed"  # an Idempotency-Key already answered: its first answer again


@dataclass(frozen=True)
class IngestResult:
    """What ingest did, and its answer (for a replay, the first request's answer as stored).

    `first` is the outcome of the request that made the answer: `outcome` itself unless
    replayed.
    """

    outcome: IngestOutcome
    body: dict[str, Any]
    first: IngestOutcome

    @classmethod
    def of(cls, outcome: IngestOutcome, body: dict[str, Any]) -> IngestResult:
        return cls(outcome, body, outcome)

    @property
    def replayed(self) -> bool:
        return self.outcome is IngestOutcome.REPLAYED


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
    paid_by: str | None = None  # the received payment that settled it
    attempts: tuple[Attempt, ...] = ()


@dataclass(frozen=True)
class MerchantRecord:
    id: str
    name: str
    reply_to: str | None
    """where customers' replies to our e-mail go (`Reply-To`), e.g. the merchant's support"""
    created_at: datetime


@dataclass(frozen=True)
class ApiKeyInfo:
    """A key as operators see it: never the key, nor its hash."""

    id: str
    merchant_id: str
    role: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class AuditEntryRecord:
    id: int
    actor_key_id: str
    actor_role: str
    action: str
    payment_ref: str | None
    recovery_id: str | None
    reason: str | None
    result: str
    created_at: datetime


@dataclass(frozen=True)
class LinkView:
    """Everything the customer's page shows about a link."""

    id: str
    merchant_id: str
    payment_ref: str
    recovery_id: str
    issued_at: datetime
    expires_at: datetime
    opened_at: datetime | None
    used_at: datetime | None
    revoked_at: datetime | None
    revoked_reason: str | None
    checkout_url: str | None
    recovery_status: str
    workflow_id: str
    amount: int
    currency: str
    psp: str
    customer_id: str | None
    customer_email: str | None
    merchant_name: str


@dataclass(frozen=True)
class LinkSummary:
    """A link as its recovery shows it."""

    link_id: str
    created_at: datetime
    expires_at: datetime
    opened_at: datetime | None
    used_at: datetime | None
    revoked_at: datetime | None
    revoked_reason: str | None
    issued_by: str
    checkout_closed_at: datetime | None  # its hosted checkout takes no more payments


@dataclass(frozen=True)
class SimulatorCheckout:
    id: str
    link_id: str
    merchant_id: str
    payment_ref: str
    amount: int
    currency: str
    return_url: str
    paid_at: datetime | None
    created_at: datetime
    merchant_name: str
    closed_at: datetime | None = None


@dataclass(frozen=True)
class StoredPSPCredentials:
    """A merchant's own credentials for one PSP, as stored: sealed (`key_id`, `sealed`), or
    a plaintext row from before sealing (`values`); opened by `recovery.psp.sealing`."""

    merchant_id: str
    psp: str
    values: dict[str, Any] | None
    key_id: str | None
    sealed: bytes | None
    updated_at: datetime


@dataclass(frozen=True)
class MetricsSnapshot:
    """Business totals for /metrics, across all merchants."""

    by_status: dict[str, int]
    recovered_amounts: dict[str, int]
    outbox_pending: int
    outbox_lag_seconds: float
    # payments received, by (disposition, refund status or "none")
    payments: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReceivedPayment:
    """A payment a customer made for one of ours, and what became of it."""

    id: str
    merchant_id: str
    payment_ref: str
    recovery_id: str | None
    source: str
    psp: str
    psp_payment_id: str | None
    amount: int | None
    currency: str | None
    disposition: str
    refund_status: str | None
    refund_id: str | None
    refund_error: str | None
    received_at: datetime
    refunded_at: datetime | None


@dataclass(frozen=True)
class WebhookEndpointRecord:
    """A merchant's webhook endpoint as it is shown: never its secrets."""

    id: str
    merchant_id: str
    url: str
    description: str | None
    events: list[str] | None  # None: every event type
    created_at: datetime
    rotated_at: datetime | None
    previous_expires_at: datetime | None  # until then the previous secret signs too


@dataclass(frozen=True)
class SealedSecret:
    """An endpoint's signing secret as stored: sealed under the credentials key `key_id`."""

    key_id: str
    sealed: bytes


@dataclass(frozen=True)
class DeliveryTarget:
    """What one delivery try sends, and where: the endpoint (deleted or not), the secrets
    that sign now (the current one first), and the event."""

    merchant_id: str
    endpoint_id: str
    url: str
    deleted: bool
    secrets: tuple[SealedSecret, ...]
    event_id: str
    event_type: str
    event_created_at: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class QueuedDelivery:
    """One queued delivery, as a pass sends it."""

    id: str
    target: DeliveryTarget
    manual: bool
    tries: int  # before this one
    first_try_at: datetime | None


@dataclass(frozen=True)
class DueDeliveries:
    """What a pass has to send: None when the endpoint is deleted (or not the merchant's)."""

    deliveries: tuple[QueuedDelivery, ...] | None


@dataclass(frozen=True)
class TryDone:
    """One try's outcome, to log and to move its queue row on: `next_try_at` None with no
    2xx is the last try (given up)."""

    delivery: QueuedDelivery
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    delivered: bool
    next_try_at: datetime | None


@dataclass(frozen=True)
class WebhookDeliveryRecord:
    id: str
    endpoint_id: str
    event_id: str
    type: str
    attempt: int
    manual: bool
    status_code: int | None
    error: str | None
    duration_ms: int | None
    attempted_at: datetime
    next_retry_at: datetime | None


@dataclass(frozen=True)
class MerchantEventRecord:
    """An event the merchant was told of, with its delivery tries (oldest first)."""

    id: str
    type: str
    created_at: datetime
    deliveries: tuple[WebhookDeliveryRecord, ...]


@dataclass(frozen=True)
class NotificationRecord:
    """One message to a customer (`customer_notifications`), as the API shows it."""

    id: int
    merchant_id: str
    payment_ref: str
    recovery_id: str | None
    channel: str
    kind: str
    recipient: str | None
    status: str
    link_id: str | None
    subject: str | None
    message_id: str | None
    tries: int
    error: str | None
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True)
class OutgoingNotification:
    """A notification with what its message needs: the payment, the merchant, its link."""

    notification: NotificationRecord
    notification_key: str
    merchant_name: str
    reply_to: str | None
    amount: int
    currency: str
    recovery_ended: bool
    link: LinkView | None
    bounced: str | None = None  # why an earlier message to this address bounced, if one did


# ---- analytics (analytics.py) ----------------------------------------------------------------


@dataclass(frozen=True)
class PaymentFigures:
    """How many payments, and their amounts per currency (minor units)."""

    count: int
    amount: dict[str, int]

    @classmethod
    def empty(cls) -> PaymentFigures:
        return cls(0, {})

    def plus(self, count: int, currency: str, amount: int) -> PaymentFigures:
        return PaymentFigures(
            self.count + count, {**self.amount, currency: self.amount.get(currency, 0) + amount}
        )


@dataclass(frozen=True)
class CategoryFigures:
    started: int
    recovered: int


@dataclass(frozen=True)
class AnalyticsSummary:
    """A merchant's figures over `[start, end)`; each is bucketed by the date it is about
    (see `recovery.store.analytics`)."""

    start: datetime
    end: datetime
    started: int
    recovered: int
    exhausted: int
    cancelled: int
    open: int
    recovered_amount: dict[str, int]
    open_amount: dict[str, int]
    median_seconds_to_recover: float | None
    by_category: dict[str, CategoryFigures]
    by_attempt: tuple[tuple[int, int], ...]
    """(attempt number, runs it recovered); 0: paid by the customer, not by our attempt"""
    received_after_end: PaymentFigures
    duplicates: dict[str, PaymentFigures]
    """duplicate payments by refund status: succeeded, pending, failed, none (not started)"""

    @property
    def ended(self) -> int:
        return self.recovered + self.exhausted + self.cancelled

    @property
    def recovery_rate(self) -> float | None:
        return self.recovered / self.ended if self.ended else None


@dataclass(frozen=True)
class DayFigures:
    """One UTC day of a time series."""

    day: date
    started: int
    recovered: int = 0
    recovered_amount: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class MerchantFigures:
    """The analytics figures per merchant for /metrics (`analytics.merchant_figures`): open
    now, and over the window since `since` (started, ended, received). Keys begin with the
    merchant's label: its id for the merchants with the most recoveries, `OTHER_MERCHANTS`
    for the rest together."""

    since: datetime
    open: dict[str, int]
    open_amount: dict[tuple[str, str], int]
    """(merchant, currency) -> amount of its open runs"""
    started: dict[tuple[str, str], int]
    """(merchant, category) -> runs started"""
    ended: dict[tuple[str, str], int]
    """(merchant, status) -> runs ended so"""
    recovered_amount: dict[tuple[str, str], int]
    """(merchant, currency) -> amount of the runs recovered"""
    by_attempt: dict[tuple[str, int], int]
    """(merchant, attempt) -> runs recovered by that attempt (0: the customer paid)"""
    seconds_to_recover: dict[str, tuple[tuple[int, ...], float]]
    """merchant -> (runs recovered within each of `RECOVERY_SECONDS_BUCKETS` and in all,
    cumulative; the sum of their seconds)"""
    payments: dict[tuple[str, str, str], int]
    """(merchant, disposition, refund status or "none") -> payments received after an end
    or twice"""


# ---- the console (sessions.py, history.py) ---------------------------------------------------


@dataclass(frozen=True)
class ConsoleSession:
    """A live console session: its key (and that key's merchant and role) and whose data it
    shows (`merchant_id`: the key's, or the one an admin switched to)."""

    key_id: str
    key_merchant_id: str
    role: str
    merchant_id: str
    merchant_name: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class PaymentRecord:
    """A merchant's payment (`transactions`), as its failures described it."""

    merchant_id: str
    payment_ref: str
    psp: str
    amount: int
    currency: str
    customer_id: str | None
    customer_email: str | None
    payment_method_type: str | None
    payment_method_id: str | None
    metadata: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class FailureEventRecord:
    event_id: str
    occurred_at: datetime
    received_at: datetime
    payload: dict[str, Any]


@dataclass(frozen=True)
class AttemptDetail:
    number: int
    created_at: datetime
    completed_at: datetime | None
    status: str
    failure_code: str | None
    failure: dict[str, Any] | None
    psp_payment_id: str | None
    planned_at: datetime | None
    planned_reason: str | None
    payment_method_id: str | None


@dataclass(frozen=True)
class RunSummary:
    id: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    ended_reason: str | None
    attempt_count: int


@dataclass(frozen=True)
class ActivityItem:
    at: datetime
    kind: str
    """started, recovered, exhausted, cancelled, attempt, support"""
    payment_ref: str | None
    detail: str | None


@dataclass(frozen=True)
class OpenCount:
    category: str
    status: str
    currency: str
    count: int
    amount: int
