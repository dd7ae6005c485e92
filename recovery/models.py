"""Domain models: the ingest body, workflow and activity payloads, and the recovery state.

Every workflow/activity/signal/query payload is one pydantic model (sent with
`pydantic_data_converter`); new fields always get defaults so running workflows keep
decoding old payloads.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from recovery.currencies import is_known_currency
from recovery.jsonvalues import check_json

PspName = Literal["stripe", "razorpay", "simulator"]
PaymentRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")]
ShortText = Annotated[str, StringConstraints(max_length=200)]
MAX_METADATA_BYTES = 8 * 1024
MAX_METADATA_KEYS = 50
MAX_METADATA_DEPTH = 16
Id = Annotated[str, StringConstraints(max_length=255)]


class RecoveryStatus(StrEnum):
    ACTIVE = "active"
    AWAITING_CUSTOMER = "awaiting_customer"
    RECOVERED = "recovered"
    EXHAUSTED = "exhausted"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self in ENDED_STATUSES


ENDED_STATUSES = frozenset(
    {RecoveryStatus.RECOVERED, RecoveryStatus.EXHAUSTED, RecoveryStatus.CANCELLED}
)


class Category(StrEnum):
    FUNDS = "funds"
    ISSUER_DECLINE = "issuer_decline"
    NETWORK = "network"
    AUTH_TIMEOUT = "auth_timeout"
    UPI_PENDING = "upi_pending"
    UNKNOWN = "unknown"


class Action(StrEnum):
    RETRY = "retry"
    CUSTOMER_ACTION = "customer_action"
    AWAIT_STATUS = "await_status"
    STOP = "stop"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)


class Failure(_Strict):
    code: ShortText | None = None
    decline_code: ShortText | None = None
    message: Annotated[str, StringConstraints(max_length=1000)] | None = None
    network_advice_code: ShortText | None = None

    @field_validator("message")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v if v and v.strip() else None

    def is_empty(self) -> bool:
        return not (self.code or self.decline_code or self.message)


class Customer(_Strict):
    id: ShortText | None = None
    email: (
        Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")] | None
    ) = None


class PaymentMethod(_Strict):
    type: ShortText = "card"
    id: ShortText | None = None


class PaymentFailedIn(_Strict):
    """The body of `POST /v1/events/payment_failed`."""

    event_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    payment_ref: PaymentRef
    psp: PspName
    amount: Annotated[int, Field(gt=0, le=10**12)]
    currency: Annotated[str, StringConstraints(pattern=r"^[a-z]{3}$")]
    customer: Customer = Customer()
    payment_method: PaymentMethod = PaymentMethod()
    failure: Failure
    occurred_at: AwareDatetime
    metadata: dict[str, Any] = Field(default_factory=dict)
    psp_payment_id: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    """The PSP's id of the payment that failed or is still pending: a pending one is polled."""

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, v: str) -> str:
        if not is_known_currency(v):
            raise ValueError("must be a lower-case ISO-4217 currency code, e.g. 'usd'")
        return v

    @field_validator("occurred_at")
    @classmethod
    def _representable_in_utc(cls, v: datetime) -> datetime:
        try:
            v.astimezone(UTC)
        except OverflowError:
            raise ValueError("must fall between the years 1 and 9999 in UTC") from None
        return v

    @field_validator("failure")
    @classmethod
    def _failure_says_something(cls, v: Failure) -> Failure:
        if v.is_empty():
            raise ValueError("needs at least one of code, decline_code or message")
        return v

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, v: dict[str, Any]) -> dict[str, Any]:
        if len(v) > MAX_METADATA_KEYS:
            raise ValueError(f"may hold at most {MAX_METADATA_KEYS} keys")
        check_json(v, MAX_METADATA_DEPTH)
        if len(json.dumps(v, separators=(",", ":"))) > MAX_METADATA_BYTES:
            raise ValueError(f"may be at most {MAX_METADATA_BYTES} bytes of JSON")
        return v


# ---- workflow payloads -------------------------------------------------------------------


class RecoveryInput(BaseModel):
    """Start argument of `PaymentRecoveryWorkflow`; the failures arrive as signals."""

    merchant_id: str
    payment_ref: str
    pending_events: list[FailureEvent] = Field(default_factory=list)
    """Events carried over by continue-as-new: failures that arrived as the last run ended."""


class Payment(BaseModel):
    """A merchant's payment as every internal message names it: whose, which, how much, and
    whom and what the PSP charges. Messages about a payment extend it, so one builds another
    from `payment_fields()` instead of copying field by field."""

    merchant_id: str
    payment_ref: str
    psp: str
    amount: int
    currency: str
    customer: Customer = Customer()
    payment_method: PaymentMethod = PaymentMethod()

    def payment_fields(self) -> dict[str, Any]:
        """This message's `Payment` fields, for another message about the same payment."""
        return {name: getattr(self, name) for name in Payment.model_fields}


class FailureEvent(Payment):
    """A recorded `payment_failed` event, as the outbox relay hands it to the workflow."""

    event_id: str
    recovery_id: str
    failure: Failure
    occurred_at: datetime
    psp_payment_id: str | None = None  # the PSP's id of the failed (or pending) payment


RecoveryInput.model_rebuild()


class PaymentSucceeded(BaseModel):
    source: str = "psp"
    event_id: str | None = None
    psp_payment_id: str | None = None


class CancelRequest(BaseModel):
    reason: str = ""
    actor: str = "unknown"


class ExpediteRequest(BaseModel):
    actor: str = "unknown"


class PauseRequest(BaseModel):
    reason: str = ""
    actor: str = "unknown"


class ResumeRequest(BaseModel):
    actor: str = "unknown"


class RefundRequest(BaseModel):
    """Refund a payment the customer made twice (a received payment's id)."""

    received_payment_id: str


class RefundOutcome(BaseModel):
    status: Literal["succeeded", "pending", "failed"]
    psp_refund_id: str | None = None
    error: str | None = None


class PaymentMethodUpdate(BaseModel):
    """The customer has a new card or method: the recovery switches to it."""

    payment_method: PaymentMethod
    actor: str = "unknown"


class Classification(BaseModel):
    category: Category
    retryable: bool
    action: Action
    cooldown_seconds: int
    recommendation: str
    alternate_methods: list[str] = Field(default_factory=list)
    rule: str


class ClassifyRequest(BaseModel):
    psp: str
    code: str | None = None
    decline_code: str | None = None
    message: str | None = None
    payment_method_type: str | None = None
    network_advice_code: str | None = None
    attempt: int = 1


class ChargeRequest(Payment):
    recovery_id: str
    attempt: int
    idempotency_key: str
    original_failure: Failure


# The canonical statuses of `recovery.psp.base.PaymentStatus`, as an attempt can end.
ChargeStatus = Literal[
    "succeeded", "processing", "requires_action", "failed", "canceled", "refunded"
]


class ChargeResult(BaseModel):
    status: ChargeStatus
    psp_payment_id: str | None = None
    failure: Failure | None = None
    # a `failed` payment the PSP may still authorise late, until then (Razorpay: the bank
    # did not answer in time, and Razorpay keeps asking it for 3 days)
    may_complete_until: datetime | None = None


class LinkRequest(BaseModel):
    merchant_id: str
    payment_ref: str
    reason: str
    kind: Literal["retry_link", "reminder"] | None = None
    """What the customer's message about the link is. None: a recovery from before e-mail
    reminders (`email-customers` patch), whose activity sends its message itself, once."""
    send_email: bool = True
    """The recovery's policy e-mails customers (`RetryPolicy.email_customers`)."""


class LinkIssued(BaseModel):
    """A retry link the workflow issued; the token itself never enters the history."""

    link_id: str
    expires_at: datetime
    notification_id: int | None = None
    """The e-mail carrying the link, still to be sent (`send_customer_email`); None when
    there is none to send (no address, e-mail off) or it was sent already."""


class SendNotification(BaseModel):
    notification_id: int


class NotificationSent(BaseModel):
    """How sending a notification ended: sent, failed or suppressed (with why)."""

    status: str
    error: str | None = None


class RevokeLinks(BaseModel):
    recovery_id: str
    reason: str


class PaymentLookup(BaseModel):
    merchant_id: str
    psp: str
    psp_payment_id: str
    # set for a payment that is not one of our charges (a pending failure the merchant sent):
    # when it succeeds it is recorded as a payment received for this payment
    payment_ref: str | None = None
    # a watcher keeps asking about a *failed* payment until then (it may be authorised late)
    late_until: datetime | None = None


class ChargeLookup(BaseModel):
    """What the PSP has for one attempt whose answer we never got: its charge, or none."""

    result: ChargeResult | None = None


class CardRef(BaseModel):
    merchant_id: str
    payment_method_id: str


class CardUsage(BaseModel):
    """Our attempts on one card, for the card networks' re-attempt limits."""

    last_30_days: int
    last_day: int


class CardIdentity(BaseModel):
    """The card a PSP will actually charge: one `key` per card whatever payment-method ids
    name it (Stripe's card fingerprint, Razorpay's card id), its network brand as the PSP
    names it, and the payment method that holds it (the customer's default when none was
    named)."""

    key: str
    brand: str | None = None
    payment_method_id: str | None = None


class CardVerdict(BaseModel):
    """The card-network check of one attempt: reserved on its card (`not_before` None), or
    deferred until the rolling window allows it."""

    card: CardIdentity
    not_before: datetime | None = None
    reason: str
    last_30_days: int
    last_day: int


class Attempt(BaseModel):
    number: int
    at: datetime
    outcome: str
    code: str | None = None
    idempotency_key: str


class RecoveryState(BaseModel):
    """The workflow's `state` query result, and what it writes to Postgres."""

    merchant_id: str
    payment_ref: str
    recovery_id: str | None = None
    status: RecoveryStatus = RecoveryStatus.ACTIVE
    category: Category | None = None
    rule: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    next_attempt_at: datetime | None = None
    next_attempt_reason: str | None = None
    ended_reason: str | None = None
    amount: int | None = None
    currency: str | None = None
    psp: str | None = None
    events_seen: int = 0
    policy_version: int | None = None
    paused: bool = False
    paused_reason: str | None = None
    links: list[LinkIssued] = Field(default_factory=list)


class FinishRequest(BaseModel):
    state: RecoveryState
    seen_event_ids: list[str]
    # PSP ids of payments of this recovery still pending at the PSP: watched after the end
    pending_payments: list[str] = []
    # failed payments of this recovery that may still be authorised late, and until when
    late_payments: dict[str, datetime] = {}
    # revoke the recovery's links (and close the simulator's checkouts) in the same
    # transaction; the PSPs' checkouts are left to `revoke_retry_links` (`open_checkouts`)
    revoke_links: bool = False


class FinishResult(BaseModel):
    """`finished` is false when events joined the recovery that the workflow has not seen."""

    finished: bool
    unseen_events: list[FailureEvent] = Field(default_factory=list)
    open_checkouts: bool = False
    """a revoked link still has a checkout open at a PSP: `revoke_retry_links` closes it"""


WebhookKind = Literal[
    "payment_succeeded",
    "payment_failed",
    "payment_refunded",
    "checkout_completed",
    "checkout_partially_paid",  # part of the amount paid on a hosted checkout
    "checkout_closed",  # a hosted checkout expired or was cancelled at the PSP
    "payment_method_updated",
    "ignored",
]


class WebhookEvent(BaseModel):
    """A verified PSP event, normalised. Ids come from the metadata we set on PSP objects."""

    psp: str
    event_id: Id
    kind: WebhookKind
    psp_type: Id
    merchant_id: Id | None = None
    payment_ref: Id | None = None
    recovery_id: Id | None = None
    psp_payment_id: Id | None = None
    amount: Annotated[int, Field(ge=0, le=10**15)] | None = None
    currency: Annotated[str, StringConstraints(max_length=10)] | None = None
    failure: Failure | None = None
    # on our hosted checkouts and the payments made on them: our retry link's id (from the
    # metadata) and the PSP's id of the checkout (a Stripe Checkout Session, a Payment Link)
    link_id: Id | None = None
    checkout_id: Id | None = None
    # payment_method_updated: the PSP customer whose new method our recoveries switch to
    customer_id: Id | None = None
    payment_method: PaymentMethod | None = None
    raw: dict[str, Any] = Field(default_factory=dict, exclude=True)


# ---- merchant webhooks ----------------------------------------------------------------------


class WebhookEndpointInput(BaseModel):
    """The endpoint a `WebhookEndpointWorkflow` delivers to."""

    merchant_id: str
    endpoint_id: str


class WebhookPassRequest(WebhookEndpointInput):
    """One pass over the endpoint's queue, on the workflow's clock: what is due by `now` is
    tried, and a failed try is queued again from `now` (so the retries keep the workflow's
    time, also where tests skip it)."""

    now: datetime


class WebhookPass(BaseModel):
    """One pass over an endpoint's queue: what it tried, and when the next is due."""

    tried: int = 0
    delivered: int = 0
    gave_up: int = 0
    endpoint_deleted: bool = False
    more_due: bool = False  # more deliveries are due now: the next pass starts at once
    next_try_at: datetime | None = None  # else the earliest one queued, if any


class WebhookDeliveryRequest(BaseModel):
    """One merchant event to one endpoint: a try's log row names it (and it was the argument
    of a `WebhookDeliveryWorkflow`, before deliveries went per endpoint)."""

    merchant_id: str
    endpoint_id: str
    event_id: str
    manual: bool = False  # a redelivery asked for by people


class WebhookDeliveryResult(BaseModel):
    status: Literal["delivered", "endpoint_deleted", "event_gone", "gave_up"]
    status_code: int | None = None
    attempts: int = 0
    error: str | None = None
