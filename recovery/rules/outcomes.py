"""What a rule decides: one `Outcome` per kind of failure, shared by every table (one
recommendation per kind), and the shape of a pattern row (`PatternRule`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

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


@dataclass(frozen=True)
class PatternRule:
    """A regular expression over a normalised code (``TRANSPORT_PATTERNS``) or a message."""

    name: str
    pattern: re.Pattern[str]
    outcome: Outcome
    example: str
    """A sample input this row must decide; the tests check every example hits its row."""


def rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)
