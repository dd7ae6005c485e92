"""The classifier's rule tables: data, not code branches.

`recovery.classifier` walks these tables in a fixed order; every row has a stable rule id
(``<table>.<code>``) that the classification reports, so every decision is explainable.
Keys are normalised the way the classifier normalises input: stripped, lower-case, runs of
spaces, hyphens and underscores collapsed to one ``_`` (so Razorpay's ``GATEWAY_ERROR`` and
``gateway_error`` are one key).

Where the codes come from (looked up in each provider's own documentation):

- `STRIPE_DECLINE_CODES`: Stripe "Stripe decline codes" (docs.stripe.com/declines/codes):
  every code of the "Card decline codes" table (50, including the deprecated
  ``do_not_try_again`` and ``try_again_later``) and of the "Local payment method decline
  codes" table.
- `STRIPE_ERROR_CODES`, `STRIPE_GENERIC_CODES`: Stripe "Error codes"
  (docs.stripe.com/error-codes): the error ``code`` values a failed card or payment-method
  charge can carry (card data, authentication, bank debits, provider timeouts, and the
  account/configuration codes that make a charge impossible until the merchant acts). The
  generic ones (``card_declined``, ``payment_intent_payment_attempt_failed``, ...) only say
  "declined"; the decline code or the message says why, so they decide last.
- `RAZORPAY_REASONS`: Razorpay "Error Reasons" (razorpay.com/docs/payments/payment-gateway/
  rainy-day/errors/error-reasons), plus the reasons listed only on "Cards Error Codes" and
  "UPI Error Codes" (razorpay.com/docs/errors/payments/cards, .../upi) and ``invalid_otp``
  from the sample on "About Errors". Razorpay passes these in ``error.reason``; we receive
  them as ``decline_code``. Refund-only reasons (``duplicate_refund_id``,
  ``refund_limit_crossed``) are left out: they never describe a failed payment.
- `RAZORPAY_CODES`: Razorpay ``error.code`` values ("About Errors"; the official SDKs'
  ``ErrorCode``: ``BAD_REQUEST_ERROR``, ``GATEWAY_ERROR``, ``SERVER_ERROR``). They name an
  error type, not a reason, so like Stripe's generic codes they decide last.
- `PENDING_CODES`: Razorpay reasons for a payment that may still complete
  (``payment_pending`` "late authorization", ``collect_request_pending``,
  ``deemed_transaction``, ``payment_pending_approval``), and the Razorpay adapter's own
  ``recurring_debit_pending`` / ``mandate_debit_pending`` for a debit on a token that is
  still ``created`` (a pre-debit notice, a bank's file cycle). Checked first and for every PSP
  (the workflow reports a charge still ``processing`` as ``payment_pending`` whatever the
  PSP): charging again while a payment may complete is the one mistake we must never make.
- `WORKFLOW_CODES`: codes our own workflow reports (``payment_pending_expired``: a pending
  payment reached no final status within the wait; it is no longer pending, and is retried
  like an unknown failure, a day later).
- `TRANSPORT_CODES`, `TRANSPORT_PATTERNS`: transport failures between us, the PSP and the
  bank (timeouts, connection errors, rate limits, HTTP 408/429/5xx), including Stripe's
  error types ``api_connection_error``/``api_error`` and codes ``rate_limit``/``lock_timeout``
  (docs.stripe.com/error-codes, /error-handling).
- `ADVICE_CODES`: card-network advice in ``network_advice_code``. Stripe passes it through
  from the network ("Card declines", docs.stripe.com/declines/card: "Mastercard refers to
  network advice codes as Merchant Advice Codes (MAC)"); the values are Mastercard's MACs
  (01-04, 21, 22, 24-30, 40, 41, 43, as listed by Braintree, Solidgate, Antom, Checkout.com),
  Visa's decline categories as processors pass them (``1`` issuer will never approve, ``2``
  cannot approve now, ``3`` data quality; Cybersource "merchantAdviceCode"), and Stripe's own
  ``advice_code`` values (``do_not_try_again``, ``try_again_later``, ``confirm_card_data``;
  "Card declines" > "Declined card retries"), accepted in the same field.
- `MESSAGE_PATTERNS`: ours: ordered, case-insensitive regular expressions over a free-text
  message, for PSPs (or merchants) that send only a message. The first match decides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from recovery.models import Action, Category

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR

MAX_COOLDOWN_SECONDS = 7 * DAY
"""Cap on a retry cooldown grown from attempts."""
MAX_ADVISED_COOLDOWN_SECONDS = 10 * DAY
"""Cap on any cooldown: a network's "retry after N days" advice may exceed the growth cap."""


@dataclass(frozen=True)
class Outcome:
    """What a rule decides. A retry cooldown doubles per attempt, up to `max_cooldown_seconds`.

    For `await_status` the cooldown is how long to wait for a final status; for
    `customer_action` and `stop` it is 0.
    """

    kind: str
    category: Category
    action: Action
    base_cooldown_seconds: int
    max_cooldown_seconds: int
    recommendation: str
    alternate_methods: tuple[str, ...] = ()


NEW_METHOD = ("card", "upi", "netbanking", "bank_transfer")
"""Alternate methods suggested when this payment method cannot be charged; `PSP_METHODS`
narrows them to what the PSP offers."""

# ---- outcomes: shared by the tables, one recommendation per kind --------------------------

FUNDS = Outcome(
    "funds",
    Category.FUNDS,
    Action.RETRY,
    DAY,
    MAX_COOLDOWN_SECONDS,
    "The account lacked funds or hit a spending limit; retry after a day or more, when the "
    "balance or limit has likely recovered.",
)
CARD_RATE_LIMIT = Outcome(
    "card_rate_limit",
    Category.ISSUER_DECLINE,
    Action.RETRY,
    DAY,
    3 * DAY,
    "The card was declined too many times recently; wait at least 24 hours before the next "
    "attempt, and check with the customer that the card details are right.",
)
SOFT_DECLINE = Outcome(
    "soft_decline",
    Category.ISSUER_DECLINE,
    Action.RETRY,
    6 * HOUR,
    3 * DAY,
    "The issuer declined without a firm reason; a few spaced retries often succeed, and if "
    "they do not, ask the customer to contact their bank or use another method.",
)
HARD_DECLINE = Outcome(
    "hard_decline",
    Category.ISSUER_DECLINE,
    Action.CUSTOMER_ACTION,
    0,
    0,
    "This payment method cannot be charged again; ask the customer for a different payment method.",
    NEW_METHOD,
)
FRAUD_RISK = Outcome(
    "fraud_risk",
    Category.ISSUER_DECLINE,
    Action.CUSTOMER_ACTION,
    0,
    0,
    "The card was flagged (lost, stolen, picked up, restricted or suspected fraud); never "
    "retry it, tell the customer only that the card was declined, and ask for another method.",
    NEW_METHOD,
)
REVOKED = Outcome(
    "revoked",
    Category.ISSUER_DECLINE,
    Action.CUSTOMER_ACTION,
    0,
    0,
    "The customer stopped or revoked this payment with their bank; contact them before "
    "charging again, and ask for a new authorisation or another method.",
    NEW_METHOD,
)
CARD_DETAILS = Outcome(
    "card_details",
    Category.ISSUER_DECLINE,
    Action.CUSTOMER_ACTION,
    0,
    0,
    "The payment details are wrong or out of date (number, expiry, CVC, postal code, PIN, "
    "account); send the customer a link to update them.",
    ("card", "upi"),
)
AUTH_REQUIRED = Outcome(
    "auth_required",
    Category.AUTH_TIMEOUT,
    Action.CUSTOMER_ACTION,
    0,
    0,
    "The customer must authenticate or approve the payment (3-D Secure, OTP, PIN, UPI "
    "approval) and did not; send them a retry link to complete it on-session.",
    ("card", "upi"),
)
UPI_DECLINED = Outcome(
    "upi_declined",
    Category.ISSUER_DECLINE,
    Action.CUSTOMER_ACTION,
    0,
    0,
    "The customer's UPI app or handle refused the request; ask them to pay with another UPI "
    "app or ID, or another method.",
    ("upi", "card", "netbanking"),
)
BLOCKED = Outcome(
    "blocked",
    Category.ISSUER_DECLINE,
    Action.STOP,
    0,
    0,
    "The payment was blocked by a block list, a dispute or a compliance rule; stop, and "
    "review the customer before asking for any other payment.",
)
MERCHANT_SETUP = Outcome(
    "merchant_setup",
    Category.UNKNOWN,
    Action.STOP,
    0,
    0,
    "The PSP refused the request because of the merchant's account or integration (keys, "
    "enabled methods, amounts, order data); fix the setup, then start a new attempt.",
)
ALREADY_PAID = Outcome(
    "already_paid",
    Category.UNKNOWN,
    Action.STOP,
    0,
    0,
    "The PSP reports the order as already paid; do not charge again, reconcile the payment.",
)
DUPLICATE = Outcome(
    "duplicate",
    Category.UNKNOWN,
    Action.AWAIT_STATUS,
    30 * MINUTE,
    30 * MINUTE,
    "An identical charge was submitted moments ago; wait for its final status before "
    "charging again.",
)
NETWORK = Outcome(
    "network",
    Category.NETWORK,
    Action.RETRY,
    5 * MINUTE,
    2 * HOUR,
    "A processing or network error, not a decline; a retry in a few minutes usually works.",
)
OUTAGE = Outcome(
    "outage",
    Category.NETWORK,
    Action.RETRY,
    30 * MINUTE,
    12 * HOUR,
    "The bank, issuer or payment app was down or overloaded; retry after it recovers, "
    "typically within the hour.",
)
PENDING = Outcome(
    "pending",
    Category.UPI_PENDING,
    Action.AWAIT_STATUS,
    30 * MINUTE,
    30 * MINUTE,
    "The payment may still complete (pending UPI collect, late authorisation); wait for its "
    "final status and never charge again meanwhile.",
)
PENDING_LONG = Outcome(
    "pending_long",
    Category.UPI_PENDING,
    Action.AWAIT_STATUS,
    DAY,
    DAY,
    "The payment's status is only known later (deemed transaction or pending approval); "
    "wait up to a day for its final status before doing anything else.",
)
PENDING_DEBIT = Outcome(
    "pending_debit",
    Category.UPI_PENDING,
    Action.AWAIT_STATUS,
    48 * HOUR,
    48 * HOUR,
    "A recurring debit on a card or UPI mandate is waiting out the 24 h pre-debit notice and "
    "the PSP's own retries (Razorpay: 24-36 hours); wait up to two days for its final "
    "status and never charge again meanwhile.",
)
PENDING_MANDATE_DEBIT = Outcome(
    "pending_mandate_debit",
    Category.UPI_PENDING,
    Action.AWAIT_STATUS,
    5 * DAY,
    5 * DAY,
    "A debit on a bank-account mandate (eMandate, NACH) is processed by the bank in "
    "working-day files; wait up to five days (a weekend and bank holidays included) for its "
    "final status and never charge again meanwhile.",
)
PENDING_EXPIRED = Outcome(
    "pending_expired",
    Category.UNKNOWN,
    Action.RETRY,
    DAY,
    MAX_COOLDOWN_SECONDS,
    "The payment stayed pending and reached no final status in time; we charge again only "
    "after a day, once it can no longer settle late, and check its status before that.",
)
UNKNOWN = Outcome(
    "unknown",
    Category.UNKNOWN,
    Action.RETRY,
    DAY,
    MAX_COOLDOWN_SECONDS,
    "An unrecognised failure; we retry conservatively, once a day at most, a limited number "
    "of times.",
)

OUTCOMES: tuple[Outcome, ...] = (
    FUNDS,
    CARD_RATE_LIMIT,
    SOFT_DECLINE,
    HARD_DECLINE,
    FRAUD_RISK,
    REVOKED,
    CARD_DETAILS,
    AUTH_REQUIRED,
    UPI_DECLINED,
    BLOCKED,
    MERCHANT_SETUP,
    ALREADY_PAID,
    DUPLICATE,
    NETWORK,
    OUTAGE,
    PENDING,
    PENDING_LONG,
    PENDING_DEBIT,
    PENDING_MANDATE_DEBIT,
    PENDING_EXPIRED,
    UNKNOWN,
)

# ---- Stripe -------------------------------------------------------------------------------

STRIPE_DECLINE_CODES: Mapping[str, Outcome] = {
    # "Card decline codes"
    "authentication_required": AUTH_REQUIRED,
    "authentication_not_handled": AUTH_REQUIRED,
    "approve_with_id": SOFT_DECLINE,
    "call_issuer": SOFT_DECLINE,
    "card_not_supported": HARD_DECLINE,
    "card_velocity_exceeded": FUNDS,
    "currency_not_supported": HARD_DECLINE,
    "do_not_honor": SOFT_DECLINE,
    "do_not_try_again": HARD_DECLINE,
    "duplicate_transaction": DUPLICATE,
    "expired_card": CARD_DETAILS,
    "fraudulent": FRAUD_RISK,
    "generic_decline": SOFT_DECLINE,
    "incorrect_address": CARD_DETAILS,
    "incorrect_cvc": CARD_DETAILS,
    "incorrect_number": CARD_DETAILS,
    "incorrect_pin": CARD_DETAILS,
    "incorrect_zip": CARD_DETAILS,
    "insufficient_funds": FUNDS,
    "invalid_account": HARD_DECLINE,
    "invalid_amount": HARD_DECLINE,
    "invalid_cvc": CARD_DETAILS,
    "invalid_expiry_month": CARD_DETAILS,
    "invalid_expiry_year": CARD_DETAILS,
    "invalid_number": CARD_DETAILS,
    "invalid_pin": CARD_DETAILS,
    "issuer_not_available": OUTAGE,
    "lost_card": FRAUD_RISK,
    "merchant_blacklist": BLOCKED,
    "new_account_information_available": CARD_DETAILS,
    "no_action_taken": SOFT_DECLINE,
    "not_permitted": HARD_DECLINE,
    "offline_pin_required": AUTH_REQUIRED,
    "online_or_offline_pin_required": AUTH_REQUIRED,
    "pickup_card": FRAUD_RISK,
    "pin_try_exceeded": HARD_DECLINE,
    "processing_error": NETWORK,
    "reenter_transaction": NETWORK,
    "restricted_card": FRAUD_RISK,
    "revocation_of_all_authorizations": REVOKED,
    "revocation_of_authorization": REVOKED,
    "security_violation": FRAUD_RISK,
    "service_not_allowed": HARD_DECLINE,
    "stolen_card": FRAUD_RISK,
    "stop_payment_order": REVOKED,
    "testmode_decline": HARD_DECLINE,
    "transaction_not_allowed": HARD_DECLINE,
    "try_again_later": SOFT_DECLINE,
    "withdrawal_count_limit_exceeded": FUNDS,
    "mobile_device_authentication_required": AUTH_REQUIRED,
    # "Local payment method decline codes" (those not already above)
    "partner_generic_decline": SOFT_DECLINE,
    "invalid_customer_account": HARD_DECLINE,
    "payment_limit_exceeded": FUNDS,
    "invalid_billing_agreement": HARD_DECLINE,
    "invalid_business_account": MERCHANT_SETUP,
    "partner_high_risk_customer": FRAUD_RISK,
    "compliance_violation": BLOCKED,
    "payment_disputed": BLOCKED,
    "invalid_authorization": REVOKED,
    "invalid_payment_information": CARD_DETAILS,
    "partner_payment_not_found": UNKNOWN,
    "expired_payment_information": CARD_DETAILS,
}

STRIPE_ERROR_CODES: Mapping[str, Outcome] = {
    # card data
    "expired_card": CARD_DETAILS,
    "incorrect_address": CARD_DETAILS,
    "incorrect_cvc": CARD_DETAILS,
    "incorrect_number": CARD_DETAILS,
    "incorrect_zip": CARD_DETAILS,
    "invalid_cvc": CARD_DETAILS,
    "invalid_expiry_month": CARD_DETAILS,
    "invalid_expiry_year": CARD_DETAILS,
    "invalid_number": CARD_DETAILS,
    "postal_code_invalid": CARD_DETAILS,
    # funds and issuer limits
    "insufficient_funds": FUNDS,
    "card_decline_rate_limit_exceeded": CARD_RATE_LIMIT,
    # authentication, mandates, customer approval
    "authentication_required": AUTH_REQUIRED,
    "payment_intent_authentication_failure": AUTH_REQUIRED,
    "setup_intent_authentication_failure": AUTH_REQUIRED,
    "payment_intent_action_required": AUTH_REQUIRED,
    "invoice_payment_intent_requires_action": AUTH_REQUIRED,
    "payment_intent_payment_attempt_expired": AUTH_REQUIRED,
    "payment_method_customer_decline": AUTH_REQUIRED,
    "billing_invalid_mandate": AUTH_REQUIRED,
    "payment_intent_mandate_invalid": AUTH_REQUIRED,
    # the customer stopped the payment / bank debits that cannot be charged
    "debit_not_authorized": REVOKED,
    "refer_to_customer": REVOKED,
    "account_closed": HARD_DECLINE,
    "bank_account_declined": HARD_DECLINE,
    "bank_account_restricted": HARD_DECLINE,
    "bank_account_unusable": HARD_DECLINE,
    "no_account": HARD_DECLINE,
    # processing
    "processing_error": NETWORK,
    "payment_method_provider_timeout": NETWORK,
    "payment_method_not_available": OUTAGE,
    "idempotency_key_in_use": NETWORK,
    # the merchant's account or integration
    "amount_too_large": MERCHANT_SETUP,
    "amount_too_small": MERCHANT_SETUP,
    "invalid_charge_amount": MERCHANT_SETUP,
    "charge_exceeds_transaction_limit": MERCHANT_SETUP,
    "payment_method_currency_mismatch": MERCHANT_SETUP,
    "payment_method_unactivated": MERCHANT_SETUP,
    "api_key_expired": MERCHANT_SETUP,
    "platform_api_key_expired": MERCHANT_SETUP,
    "secret_key_required": MERCHANT_SETUP,
    "livemode_mismatch": MERCHANT_SETUP,
}

STRIPE_GENERIC_CODES: Mapping[str, Outcome] = {
    "card_declined": SOFT_DECLINE,
    "payment_intent_payment_attempt_failed": SOFT_DECLINE,
    "payment_method_provider_decline": SOFT_DECLINE,
    "setup_attempt_failed": SOFT_DECLINE,
}

# ---- Razorpay -----------------------------------------------------------------------------

RAZORPAY_REASONS: Mapping[str, Outcome] = {
    # the Razorpay adapter's own reasons for a token it found cannot be debited, before any
    # order ("Token States": only a `confirmed` mandate can be; recovery/psp/razorpay)
    "token_paused": REVOKED,
    "token_cancelled": REVOKED,
    "token_cancellation_initiated": REVOKED,
    "token_rejected": REVOKED,
    "token_failed": REVOKED,
    "token_initiated": AUTH_REQUIRED,  # the mandate's registration is not complete
    "token_not_confirmed": REVOKED,
    "token_expired": CARD_DETAILS,
    "token_amount_over_limit": AUTH_REQUIRED,  # only the customer can approve more
    "amount_less_than_minimum_amount": MERCHANT_SETUP,
    "authentication_failed": AUTH_REQUIRED,
    "authorisation_declined_by_psp": UPI_DECLINED,
    "bank_account_invalid": HARD_DECLINE,
    "bank_account_validation_failed": CARD_DETAILS,
    "bank_cutoff_in_progress": OUTAGE,
    "bank_not_available": OUTAGE,
    "bank_not_enabled": MERCHANT_SETUP,
    "bank_technical_error": OUTAGE,
    "beneficiary_account_does_not_exist": MERCHANT_SETUP,
    "beneficiary_account_dormant": MERCHANT_SETUP,
    "capture_failed": NETWORK,
    "card_declined": SOFT_DECLINE,
    "card_disabled_for_online_payments": HARD_DECLINE,
    "card_expired": CARD_DETAILS,
    "card_network_not_enabled": MERCHANT_SETUP,
    "card_not_enrolled": AUTH_REQUIRED,
    "card_number_invalid": CARD_DETAILS,
    "card_type_invalid": HARD_DECLINE,
    "collect_on_mcc_blocked": UPI_DECLINED,
    "compliance_violation": BLOCKED,
    "credit_failed": CARD_DETAILS,
    "credit_limit_exceeded": FUNDS,
    "credit_limit_expired": HARD_DECLINE,
    "credit_limit_inactive": HARD_DECLINE,
    "credit_limit_not_approved": HARD_DECLINE,
    "credit_not_permitted": CARD_DETAILS,
    "debit_declined": HARD_DECLINE,
    "debit_instrument_blocked": HARD_DECLINE,
    "debit_instrument_inactive": HARD_DECLINE,
    "duplicate_request": DUPLICATE,
    "duplicate_rrn_found": NETWORK,
    "emi_greater_than_max_amount": HARD_DECLINE,
    "emi_plan_unavailable": HARD_DECLINE,
    "funds_blocked_by_mandate": FUNDS,
    "gateway_technical_error": OUTAGE,
    "incorrect_atm_pin": CARD_DETAILS,
    "incorrect_card_details": CARD_DETAILS,
    "incorrect_card_expiry_date": CARD_DETAILS,
    "incorrect_cardholder_name": CARD_DETAILS,
    "incorrect_cvv": CARD_DETAILS,
    "incorrect_otp": AUTH_REQUIRED,
    "incorrect_pin": CARD_DETAILS,
    "input_validation_failed": MERCHANT_SETUP,
    "insufficient_funds": FUNDS,
    "international_transaction_not_allowed": MERCHANT_SETUP,
    "invalid_amount": MERCHANT_SETUP,
    "invalid_currency": MERCHANT_SETUP,
    "invalid_device": AUTH_REQUIRED,
    "invalid_email": CARD_DETAILS,
    "invalid_mobile_number": CARD_DETAILS,
    "invalid_order_id": MERCHANT_SETUP,
    "invalid_otp": AUTH_REQUIRED,
    "invalid_request": MERCHANT_SETUP,
    "invalid_response_from_gateway": NETWORK,
    "invalid_user_details": CARD_DETAILS,
    "invalid_vpa": CARD_DETAILS,
    "issuer_technical_error": OUTAGE,
    "live_mode_not_enabled": MERCHANT_SETUP,
    "mandate_creation_declined": UPI_DECLINED,
    "mandate_creation_expired": AUTH_REQUIRED,
    "mandate_creation_failed": UPI_DECLINED,
    "mandate_creation_timeout": AUTH_REQUIRED,
    "merchant_not_activated": MERCHANT_SETUP,
    "mismatch_in_transaction_details": MERCHANT_SETUP,
    "mobile_number_invalid": CARD_DETAILS,
    "order_already_paid": ALREADY_PAID,
    "order_amount_mismatch": MERCHANT_SETUP,
    "order_payment_method_mismatch": MERCHANT_SETUP,
    "otp_attempts_exceeded": HARD_DECLINE,
    "otp_expired": AUTH_REQUIRED,
    "payment_amount_tampered": MERCHANT_SETUP,
    "payment_cancelled": AUTH_REQUIRED,
    "payment_collect_request_expired": AUTH_REQUIRED,
    "payment_declined": SOFT_DECLINE,
    "payment_declined_due_to_high_traffic": OUTAGE,
    "payment_failed": SOFT_DECLINE,
    "payment_method_not_enabled": MERCHANT_SETUP,
    "payment_risk_check_failed": FRAUD_RISK,
    "payment_session_expired": AUTH_REQUIRED,
    "payment_timed_out": AUTH_REQUIRED,
    "pin_attempts_exceeded": HARD_DECLINE,
    "pin_not_set": UPI_DECLINED,
    "psp_app_not_available": UPI_DECLINED,  # spelt "psp_app_ not_available" on the page
    "psp_app_not_supported": UPI_DECLINED,
    "psp_not_available": UPI_DECLINED,
    "psp_not_registered": UPI_DECLINED,
    "record_not_found": NETWORK,
    "recurring_payment_not_enabled": MERCHANT_SETUP,
    "reqauth_mandate_not_acknowledged": OUTAGE,
    "request_timed_out": NETWORK,
    "server_error": NETWORK,
    "transaction_daily_count_exceeded": FUNDS,
    "transaction_daily_limit_exceeded": FUNDS,
    "transaction_frequency_limit_exceeded": FUNDS,
    "transaction_limit_exceeded": FUNDS,
    "transaction_on_vpa_restricted": UPI_DECLINED,
    "upi_app_technical_error": OUTAGE,
    "upi_autopay_not_supported_on_psp": UPI_DECLINED,
    "upi_collect_not_enabled": MERCHANT_SETUP,
    "upi_intent_not_enabled": MERCHANT_SETUP,
    "user_not_eligible": HARD_DECLINE,
    "user_not_registered_for_netbanking": HARD_DECLINE,
    "verification_failed": NETWORK,
    "vpa_resolution_failed": UPI_DECLINED,
}

RAZORPAY_CODES: Mapping[str, Outcome] = {
    "bad_request_error": UNKNOWN,
    "gateway_error": NETWORK,
    "server_error": NETWORK,
}

# ---- shared by every PSP ------------------------------------------------------------------

PENDING_CODES: Mapping[str, Outcome] = {
    "payment_pending": PENDING,
    "collect_request_pending": PENDING,
    "deemed_transaction": PENDING_LONG,
    "payment_pending_approval": PENDING_LONG,
    # the Razorpay adapter's codes for a recurring debit still `created` (recovery/psp/razorpay)
    "recurring_debit_pending": PENDING_DEBIT,
    "mandate_debit_pending": PENDING_MANDATE_DEBIT,
}

WORKFLOW_CODES: Mapping[str, Outcome] = {
    "payment_pending_expired": PENDING_EXPIRED,
}

TRANSPORT_CODES: Mapping[str, Outcome] = {
    "timeout": NETWORK,
    "timed_out": NETWORK,
    "request_timeout": NETWORK,
    "read_timeout": NETWORK,
    "connect_timeout": NETWORK,
    "gateway_timeout": NETWORK,
    "connection_error": NETWORK,
    "connection_reset": NETWORK,
    "connection_refused": NETWORK,
    "connection_aborted": NETWORK,
    "econnreset": NETWORK,
    "econnrefused": NETWORK,
    "etimedout": NETWORK,
    "network_error": NETWORK,
    "api_connection_error": NETWORK,
    "api_error": NETWORK,
    "rate_limit": NETWORK,
    "rate_limit_error": NETWORK,
    "too_many_requests": NETWORK,
    "lock_timeout": NETWORK,
    "bad_gateway": NETWORK,
    "service_unavailable": NETWORK,
    "internal_server_error": NETWORK,
}


@dataclass(frozen=True)
class PatternRule:
    """A regular expression over a normalised code (``TRANSPORT_PATTERNS``) or a message."""

    name: str
    pattern: re.Pattern[str]
    outcome: Outcome
    example: str
    """A sample input this row must decide; the tests check every example hits its row."""


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


TRANSPORT_PATTERNS: tuple[PatternRule, ...] = (
    PatternRule("http_408", _rx(r"^(http_)?408$"), NETWORK, "http_408"),
    PatternRule("http_429", _rx(r"^(http_)?429$"), NETWORK, "HTTP 429"),
    PatternRule("http_5xx", _rx(r"^(http_)?5\d\d$"), NETWORK, "http_502"),
)

_DETAILS = (
    r"(card|card number|number|cvc|cvv|security code|expiry|expiration|expiry date|zip|"
    r"postal code|pin|address|vpa|upi id)"
)

# Ordered: the first match decides. Exclusions come before what they exclude (an expired
# collect request is not "pending"; "lost" needs a card, not a connection).
MESSAGE_PATTERNS: tuple[PatternRule, ...] = (
    PatternRule(
        "not_completed",
        _rx(r"\bpending\b[^.]{0,40}\b(did not|didn't|never|not) (complete|settle)"),
        PENDING_EXPIRED,
        "pending payment did not complete",
    ),
    PatternRule(
        "request_expired",
        _rx(
            r"\b(collect |payment |upi )?request (has )?expired\b|"
            r"\b(session|mandate) (has )?expired\b"
        ),
        AUTH_REQUIRED,
        "UPI collect request expired",
    ),
    PatternRule(
        "lost_or_stolen",
        _rx(
            r"\b(lost|stolen)\b[^.]{0,20}\bcard\b|\bcard\b[^.]{0,50}\b(lost|stolen)\b|"
            r"\bpick ?up card\b"
        ),
        FRAUD_RISK,
        "Card reported stolen",
    ),
    PatternRule(
        "fraud",
        _rx(r"fraud|\brisk check"),
        FRAUD_RISK,
        "Declined as suspected fraud",
    ),
    PatternRule(
        "insufficient_funds",
        _rx(
            r"\binsufficient (funds|balance|credit)\b|\bnot enough (funds|balance|money)\b|"
            r"\blow balance\b"
        ),
        FUNDS,
        "Payment failed due to insufficient balance",
    ),
    PatternRule(
        "limit_exceeded",
        _rx(r"\blimit\b[^.]{0,40}\b(exceeded|reached)\b|\bexceed(s|ed)?\b[^.]{0,40}\blimit\b"),
        FUNDS,
        "Daily transaction limit exceeded",
    ),
    PatternRule(
        "authentication",
        _rx(r"authenticat|\b3-?d ?secure\b|\b3ds\b|\botp\b|\bsca\b"),
        AUTH_REQUIRED,
        "Authentication failed due to incorrect OTP",
    ),
    PatternRule(
        "card_expired",
        _rx(r"\bexpired card\b|\b(card|expiry|expiration)\b[^.]{0,20}\bexpired\b"),
        CARD_DETAILS,
        "Your card has expired.",
    ),
    PatternRule(
        "incorrect_details",
        _rx(
            rf"\b(incorrect|invalid|wrong)\b[^.]{{0,20}}\b{_DETAILS}\b|"
            rf"\b{_DETAILS}\b[^.]{{0,30}}\b(incorrect|invalid|wrong)\b"
        ),
        CARD_DETAILS,
        "Your card's security code is incorrect.",
    ),
    PatternRule(
        "cancelled",
        _rx(r"\bcancell?ed\b"),
        AUTH_REQUIRED,
        "Payment was cancelled by the customer",
    ),
    PatternRule(
        "pending",
        _rx(r"\bpending\b|\bawaiting (approval|authori[sz]ation|confirmation)\b|\bin progress\b"),
        PENDING,
        "Collect request is pending",
    ),
    PatternRule(
        "rate_limited",
        _rx(r"\brate limit|\btoo many requests\b"),
        NETWORK,
        "Too many requests",
    ),
    PatternRule(
        "timed_out",
        _rx(r"\btimed? ?out\b|\btimeout\b"),
        NETWORK,
        "Request timed out at gateway",
    ),
    PatternRule(
        "outage",
        _rx(
            r"\btechnical (error|issue|problem)s?\b|\bdowntime\b|\bunavailable\b|\bnot available\b"
        ),
        OUTAGE,
        "Bank technical error",
    ),
    PatternRule(
        "connection_error",
        _rx(
            r"\bconnection (reset|refused|error|closed|aborted)\b|\bnetwork error\b|"
            r"\bbad gateway\b|\bgateway error\b|\bserver error\b|\binternal error\b|\b50[0234]\b"
        ),
        NETWORK,
        "Connection reset by peer",
    ),
    PatternRule(
        "try_again_later",
        _rx(r"\b(try|retry) (again )?later\b"),
        SOFT_DECLINE,
        "Please try again later",
    ),
    PatternRule(
        "declined",
        _rx(r"declin|\bnot hono(u)?red\b|\bdo not hono(u)?r\b|\brefused\b|\brejected\b"),
        SOFT_DECLINE,
        "Your card was declined.",
    ),
)

# ---- card-network advice ------------------------------------------------------------------


class AdviceEffect(StrEnum):
    STOP = "stop"
    """Never try this card again for this payment: action `stop`, whatever the codes say."""
    NEW_DETAILS = "new_details"
    """Retrying the same details cannot work: a planned retry becomes `customer_action`."""
    WAIT = "wait"
    """A planned retry waits at least `wait_seconds`; other actions are unchanged."""
    NONE = "none"
    """Informational: the codes decide."""


@dataclass(frozen=True)
class Advice:
    effect: AdviceEffect
    description: str
    wait_seconds: int = 0


ADVICE_RECOMMENDATIONS: Mapping[AdviceEffect, str] = {
    AdviceEffect.STOP: "do not try this card again for this payment; if you still want the "
    "payment, ask the customer for another payment method.",
    AdviceEffect.NEW_DETAILS: "retrying with the same card details cannot succeed; ask the "
    "customer to update their card or use another one.",
    AdviceEffect.WAIT: "retry no sooner than the network advises.",
    AdviceEffect.NONE: "informational only.",
}

ADVICE_CODES: Mapping[str, Advice] = {
    # Mastercard merchant advice codes (MAC)
    "01": Advice(AdviceEffect.NEW_DETAILS, "new account information available"),
    "02": Advice(AdviceEffect.WAIT, "cannot approve at this time, try again later"),
    "03": Advice(AdviceEffect.STOP, "do not try again"),
    "04": Advice(AdviceEffect.NEW_DETAILS, "token requirements not fulfilled for this token"),
    "21": Advice(AdviceEffect.STOP, "payment cancellation (stop recurring payment)"),
    "22": Advice(AdviceEffect.STOP, "merchant does not qualify for product code"),
    "24": Advice(AdviceEffect.WAIT, "retry after 1 hour", HOUR),
    "25": Advice(AdviceEffect.WAIT, "retry after 24 hours", DAY),
    "26": Advice(AdviceEffect.WAIT, "retry after 2 days", 2 * DAY),
    "27": Advice(AdviceEffect.WAIT, "retry after 4 days", 4 * DAY),
    "28": Advice(AdviceEffect.WAIT, "retry after 6 days", 6 * DAY),
    "29": Advice(AdviceEffect.WAIT, "retry after 8 days", 8 * DAY),
    "30": Advice(AdviceEffect.WAIT, "retry after 10 days", 10 * DAY),
    "40": Advice(AdviceEffect.NONE, "consumer non-reloadable prepaid card"),
    "41": Advice(AdviceEffect.NEW_DETAILS, "consumer single-use virtual card number"),
    "43": Advice(AdviceEffect.NONE, "consumer multi-use virtual card number"),
    # Visa decline categories, as processors pass them
    "1": Advice(AdviceEffect.STOP, "Visa category 1: issuer will never approve"),
    "2": Advice(AdviceEffect.WAIT, "Visa category 2: issuer cannot approve at this time"),
    "3": Advice(AdviceEffect.NEW_DETAILS, "Visa category 3: revalidate payment information"),
    # Stripe advice_code
    "do_not_try_again": Advice(AdviceEffect.STOP, "do not try again"),
    "try_again_later": Advice(AdviceEffect.WAIT, "try again later"),
    "confirm_card_data": Advice(AdviceEffect.NEW_DETAILS, "confirm card data"),
}

# ---- PSPs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PspRules:
    """One PSP's tables and the prefixes of their rule ids."""

    name: str
    decline_codes: Mapping[str, Outcome]
    decline_rule_prefix: str
    error_codes: Mapping[str, Outcome]
    """Specific error codes: decide before the message."""
    generic_codes: Mapping[str, Outcome]
    """Error codes that only say "it failed": decide after the message."""
    code_rule_prefix: str
    methods: tuple[str, ...]
    """Payment methods this PSP offers, to narrow `alternate_methods`."""


STRIPE = PspRules(
    name="stripe",
    decline_codes=STRIPE_DECLINE_CODES,
    decline_rule_prefix="stripe.decline_code",
    error_codes=STRIPE_ERROR_CODES,
    generic_codes=STRIPE_GENERIC_CODES,
    code_rule_prefix="stripe.code",
    methods=("card", "bank_transfer"),
)
RAZORPAY = PspRules(
    name="razorpay",
    decline_codes=RAZORPAY_REASONS,
    decline_rule_prefix="razorpay.reason",
    error_codes={},
    generic_codes=RAZORPAY_CODES,
    code_rule_prefix="razorpay.code",
    methods=("card", "upi", "netbanking"),
)
SIMULATOR = PspRules(
    name="simulator",
    decline_codes=STRIPE_DECLINE_CODES,
    decline_rule_prefix="stripe.decline_code",
    error_codes=STRIPE_ERROR_CODES,
    generic_codes=STRIPE_GENERIC_CODES,
    code_rule_prefix="stripe.code",
    methods=NEW_METHOD,
)

PSP_RULES: Mapping[str, PspRules] = {"stripe": STRIPE, "razorpay": RAZORPAY, "simulator": SIMULATOR}
"""The simulator reports Stripe-style codes; an unrecognised PSP name is read as Stripe-style."""
DEFAULT_PSP_RULES = STRIPE
