"""Names shared by the API, the worker, the workflows and operators.

Workflow, signal, query, task-queue and search-attribute names live here and nowhere else:
they are part of what operators type into the Temporal UI and `temporal workflow signal`.
This module imports only the Temporal SDK's value types, so workflow code may use it.
"""

from datetime import timedelta

from temporalio.common import RetryPolicy, SearchAttributeKey

RECOVERY_WORKFLOW = "PaymentRecoveryWorkflow"
MAINTENANCE_WORKFLOW = "MaintenanceWorkflow"
MAINTENANCE_SCHEDULE_ID = "recovery-maintenance"

SIGNAL_PAYMENT_FAILED = "payment_failed"
SIGNAL_PAYMENT_SUCCEEDED = "payment_succeeded"
SIGNAL_CANCEL = "cancel"
SIGNAL_EXPEDITE = "expedite"
SIGNAL_UPDATE_POLICY = "update_policy"
SIGNAL_PAUSE = "pause"
SIGNAL_RESUME = "resume"
SIGNAL_PAYMENT_METHOD_UPDATED = "payment_method_updated"
# The API's expedite: an update, so the workflow can refuse it when no attempt is waiting
# (the `expedite` signal stays for operators; the workflow ignores it in that case).
UPDATE_EXPEDITE = "expedite_attempt"
# The failure type the workflow refuses that update with (the API's 409 code too).
NOTHING_TO_EXPEDITE = "nothing_to_expedite"
QUERY_STATE = "state"

REFUND_WORKFLOW = "RefundDuplicatePaymentWorkflow"
WATCH_WORKFLOW = "WatchPendingPaymentWorkflow"
# An outbox row of this kind starts a refund workflow (others signal a recovery).
OUTBOX_START_REFUND = "start_refund"
# ... and of this kind a WatchPendingPaymentWorkflow.
OUTBOX_START_WATCH = "start_watch"
# ... and of this kind a WebhookDeliveryWorkflow (one merchant event to one endpoint: queued
# before merchant webhooks were delivered per endpoint; kept for the rows and runs left then).
OUTBOX_START_WEBHOOK = "start_webhook"
WEBHOOK_DELIVERY_WORKFLOW = "WebhookDeliveryWorkflow"
# ... and of this kind the signal-with-start of an endpoint's WebhookEndpointWorkflow: its
# queue (`webhook_queue`) has deliveries waiting. The relay sends one per endpoint per batch.
OUTBOX_WAKE_WEBHOOKS = "wake_webhooks"
WEBHOOK_ENDPOINT_WORKFLOW = "WebhookEndpointWorkflow"
SIGNAL_WEBHOOKS_QUEUED = "webhooks_queued"
# ... and of this kind a CustomerReceiptWorkflow (the receipt of a recovered payment).
OUTBOX_START_RECEIPT = "start_receipt"
RECEIPT_WORKFLOW = "CustomerReceiptWorkflow"

DEFAULT_TASK_QUEUE = "payment-recovery"

SA_RECOVERY_STATUS = SearchAttributeKey.for_keyword("RecoveryStatus")
SA_FAILURE_CATEGORY = SearchAttributeKey.for_keyword("FailureCategory")
SA_MERCHANT_ID = SearchAttributeKey.for_keyword("MerchantId")
SA_PAYMENT_REF = SearchAttributeKey.for_keyword("PaymentRef")
SA_PSP = SearchAttributeKey.for_keyword("Psp")
SA_ATTEMPT_COUNT = SearchAttributeKey.for_int("AttemptCount")
SA_NEXT_ATTEMPT_AT = SearchAttributeKey.for_datetime("NextAttemptAt")
SA_AMOUNT_MINOR = SearchAttributeKey.for_int("AmountMinor")

SEARCH_ATTRIBUTES: tuple[SearchAttributeKey, ...] = (
    SA_RECOVERY_STATUS,
    SA_FAILURE_CATEGORY,
    SA_MERCHANT_ID,
    SA_PAYMENT_REF,
    SA_PSP,
    SA_ATTEMPT_COUNT,
    SA_NEXT_ATTEMPT_AT,
    SA_AMOUNT_MINOR,
)


def workflow_id_for(merchant_id: str, payment_ref: str) -> str:
    """The one workflow id of a payment's recovery: readable in the Temporal UI.

    Every run of the same payment shares this id (a new failure after a recovery ended
    starts a new run of it).
    """
    return f"recovery/{merchant_id}/{payment_ref}"


def refund_workflow_id(merchant_id: str, received_payment_id: str) -> str:
    """The one workflow that refunds a payment made twice."""
    return f"refund/{merchant_id}/{received_payment_id}"


def receipt_workflow_id(recovery_id: str) -> str:
    """The one workflow that e-mails the receipt of a recovery."""
    return f"receipt/{recovery_id}"


def watch_workflow_id(merchant_id: str, psp: str, psp_payment_id: str) -> str:
    """The one workflow that watches a payment left pending when its recovery ended."""
    return f"pending/{merchant_id}/{psp}/{psp_payment_id}"


def webhook_workflow_id(endpoint_id: str, event_id: str, redelivery: str | None = None) -> str:
    """The one workflow that delivered a merchant event to an endpoint before deliveries went
    per endpoint (`webhook_endpoint_workflow_id`)."""
    base = f"webhook/{endpoint_id}/{event_id}"
    return f"{base}/{redelivery}" if redelivery else base


def webhook_endpoint_workflow_id(endpoint_id: str) -> str:
    """The one workflow that delivers everything queued for an endpoint."""
    return f"webhooks/{endpoint_id}"


def attempt_idempotency_key(recovery_id: str, attempt: int) -> str:
    """The PSP idempotency key of one attempt: the same on every retry of the activity."""
    return f"{recovery_id}:attempt:{attempt}"


def search_attribute_specs() -> list[str]:
    """`Name=Type` pairs, as `temporal server start-dev --search-attribute` takes them."""
    cli_type = {"KEYWORD": "Keyword", "INT": "Int", "DATETIME": "Datetime"}
    return [
        f"{k.name}={cli_type[k.indexed_value_type.name.removeprefix('INDEXED_VALUE_TYPE_')]}"
        for k in SEARCH_ATTRIBUTES
    ]


# One charge try: what an adapter may spend on its whole chain of HTTP calls (each adapter
# stops by then), and the activity's start-to-close above it, so that a try Temporal gave up
# on has always stopped before the next one starts. Tries never overlap.
CHARGE_TRY_BUDGET = timedelta(seconds=120)
CHARGE_START_TO_CLOSE = timedelta(seconds=150)
# A charge heartbeats this often; a worker that stops is noticed after the timeout.
CHARGE_HEARTBEAT_EVERY = timedelta(seconds=2)
CHARGE_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
# After this many tries an attempt's outcome is unknown: it is looked up at the PSP.
CHARGE_MAX_TRIES = 5

# Merchant webhooks (Standard Webhooks): one try waits this long for a 2xx; a failed try is
# retried after WEBHOOK_RETRY_FIRST, doubling up to WEBHOOK_RETRY_MAX between tries, until
# WEBHOOK_RETRY_FOR after the first (Temporal's activity retries: no workflow history per try).
WEBHOOK_TRY_TIMEOUT = timedelta(seconds=10)
WEBHOOK_TRY_START_TO_CLOSE = timedelta(seconds=60)
WEBHOOK_RETRY_FIRST = timedelta(seconds=5)
WEBHOOK_RETRY_BACKOFF = 2.0
WEBHOOK_RETRY_MAX = timedelta(hours=1)
WEBHOOK_RETRY_FOR = timedelta(days=3)
WEBHOOK_RETRY_POLICY = RetryPolicy(
    initial_interval=WEBHOOK_RETRY_FIRST,
    backoff_coefficient=WEBHOOK_RETRY_BACKOFF,
    maximum_interval=WEBHOOK_RETRY_MAX,
)
# An endpoint's workflow delivers what is due in passes: one activity takes rounds of up to
# WEBHOOK_PASS_SIZE deliveries, WEBHOOK_PASS_CONCURRENCY at once (at most 5 tries' timeouts
# in a row), while more are due and for at most WEBHOOK_PASS_SECONDS (so a pass ends within
# WEBHOOK_PASS_START_TO_CLOSE). With nothing queued it ends after WEBHOOK_ENDPOINT_IDLE (the
# next event starts it again); it continues as new after WEBHOOK_PASSES_PER_RUN passes, to
# keep its history short.
WEBHOOK_PASS_SIZE = 50
WEBHOOK_PASS_CONCURRENCY = 10
WEBHOOK_PASS_SECONDS = 30
WEBHOOK_PASS_START_TO_CLOSE = timedelta(minutes=2)
WEBHOOK_PASS_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)
)
WEBHOOK_ENDPOINT_IDLE = timedelta(minutes=10)
WEBHOOK_PASSES_PER_RUN = 200
# A queued delivery this late (its endpoint's workflow gone: terminated by hand) gets its
# endpoint woken again by the maintenance run.
WEBHOOK_STALLED_AFTER = timedelta(minutes=15)

# An e-mail the SMTP server defers is tried this many times (10 s apart at first, doubling,
# at most 30 min apart: about 8 hours in all); the last try's failure marks it failed.
EMAIL_MAX_TRIES = 12
EMAIL_FIRST_RETRY = timedelta(seconds=10)
EMAIL_MAX_RETRY_INTERVAL = timedelta(minutes=30)
EMAIL_RETRY_POLICY = RetryPolicy(
    initial_interval=EMAIL_FIRST_RETRY,
    maximum_interval=EMAIL_MAX_RETRY_INTERVAL,
    maximum_attempts=EMAIL_MAX_TRIES,
)
# One try: the SMTP conversation is bounded by SMTP_TIMEOUT_SECONDS per step, below this; a
# try heartbeats, so one a dead worker left is made again after the heartbeat timeout.
EMAIL_TRY_TIMEOUT = timedelta(minutes=3)
EMAIL_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
