"""The recovery workflow's activities, declared: name, argument type and result type.

The workflow calls these by reference (``workflow.execute_activity_method``), so mypy checks
every call's argument and result; ``activities/recovery.py`` implements them by subclassing,
so mypy also checks that each implementation keeps the declared signature. The names are
part of every stored workflow history: renaming one breaks the replay of running recoveries.

Declarations only: nothing here runs. Workflow code may import this module (it imports the
Temporal SDK and the models, nothing with I/O).
"""

from __future__ import annotations

from temporalio import activity

from recovery.models import (
    CardRef,
    CardUsage,
    CardVerdict,
    ChargeLookup,
    ChargeRequest,
    ChargeResult,
    Classification,
    ClassifyRequest,
    FinishRequest,
    FinishResult,
    LinkIssued,
    LinkRequest,
    NotificationSent,
    PaymentLookup,
    RecoveryState,
    RefundOutcome,
    RefundRequest,
    RevokeLinks,
    SendNotification,
    WebhookDeliveryRequest,
    WebhookDeliveryResult,
    WebhookPass,
    WebhookPassRequest,
)
from recovery.policy import BeginRecovery, CardAttemptRequest, RecoveryBegun, RetryPolicy


class RecoveryActivityDefs:
    """What the recovery workflow may ask of the outside world."""

    @activity.defn(name="classify_failure")
    async def classify_failure(self, req: ClassifyRequest) -> Classification:
        """Classification is an activity on purpose: the rule tables change with every
        release, and a recovery in flight must keep the decisions its history recorded."""
        raise NotImplementedError

    @activity.defn(name="begin_recovery")
    async def begin_recovery(self, req: BeginRecovery) -> RecoveryBegun:
        """`recovery_is_open`, `load_retry_policy` and `classify_failure` at once, as a run
        starts (LEAN_HISTORY_PATCH)."""
        raise NotImplementedError

    @activity.defn(name="recovery_is_open")
    async def recovery_is_open(self, recovery_id: str) -> bool:
        raise NotImplementedError

    @activity.defn(name="load_retry_policy")
    async def load_retry_policy(self, merchant_id: str) -> RetryPolicy:
        raise NotImplementedError

    @activity.defn(name="count_card_attempts")
    async def count_card_attempts(self, card: CardRef) -> CardUsage:
        raise NotImplementedError

    @activity.defn(name="reserve_card_attempt")
    async def reserve_card_attempt(self, req: CardAttemptRequest) -> CardVerdict:
        """Resolve the card the PSP will charge and reserve this attempt on it, or say when
        the card-network limits allow it."""
        raise NotImplementedError

    @activity.defn(name="check_payment_status")
    async def check_payment_status(self, req: PaymentLookup) -> ChargeResult:
        raise NotImplementedError

    @activity.defn(name="revoke_retry_links")
    async def revoke_retry_links(self, req: RevokeLinks) -> int:
        raise NotImplementedError

    @activity.defn(name="save_recovery_state")
    async def save_recovery_state(self, state: RecoveryState) -> None:
        raise NotImplementedError

    @activity.defn(name="finish_recovery")
    async def finish_recovery(self, req: FinishRequest) -> FinishResult:
        raise NotImplementedError

    @activity.defn(name="charge_payment")
    async def charge_payment(self, req: ChargeRequest) -> ChargeResult:
        raise NotImplementedError

    @activity.defn(name="find_attempt_charge")
    async def find_attempt_charge(self, req: ChargeRequest) -> ChargeLookup:
        raise NotImplementedError

    @activity.defn(name="refund_duplicate_payment")
    async def refund_duplicate_payment(self, req: RefundRequest) -> RefundOutcome:
        raise NotImplementedError

    @activity.defn(name="check_refund")
    async def check_refund(self, req: RefundRequest) -> RefundOutcome:
        raise NotImplementedError


class WebhookActivityDefs:
    """What `WebhookEndpointWorkflow` (and `WebhookDeliveryWorkflow`) may ask of the outside
    world."""

    @activity.defn(name="deliver_queued_webhooks")
    async def deliver_queued_webhooks(self, req: WebhookPassRequest) -> WebhookPass:
        """One pass over the endpoint's queue: every delivery due by `req.now` (up to
        WEBHOOK_PASS_SIZE, WEBHOOK_PASS_CONCURRENCY at once) tried once and logged, a failed
        one queued again with backoff or given up on; what is due next. Safe to retry: a
        delivery is sent again only if its try was not recorded (at least once)."""
        raise NotImplementedError

    @activity.defn(name="deliver_webhook")
    async def deliver_webhook(self, req: WebhookDeliveryRequest) -> WebhookDeliveryResult:
        """One try of one merchant event to one endpoint: a 2xx within the try's timeout
        returns; anything else raises, and Temporal retries it with backoff."""
        raise NotImplementedError


class NotificationActivityDefs:
    """What the recovery workflow may ask of the customer's mailbox: a retry link with the
    message that carries it, and sending that message."""

    @activity.defn(name="issue_retry_link")
    async def issue_retry_link(self, req: LinkRequest) -> LinkIssued:
        """Issue a retry link and record the message that carries it (once per activity,
        however often it is retried)."""
        raise NotImplementedError

    @activity.defn(name="send_customer_email")
    async def send_customer_email(self, req: SendNotification) -> NotificationSent:
        """Send a recorded message (at most once; a temporary refusal is retried)."""
        raise NotImplementedError
