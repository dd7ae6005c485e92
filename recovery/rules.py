"""The built-in rule set: data, not code branches.

This is the backbone's simple rule table; the full classifier (every Stripe decline code,
Razorpay reasons, merchant advice codes) replaces it without changing the engine.
Each rule has an id that the classification reports, so every decision is explainable.
"""

from __future__ import annotations

from dataclasses import dataclass

from recovery.models import Action, Category

HOUR = 3600
DAY = 24 * HOUR


@dataclass(frozen=True)
class Outcome:
    category: Category
    action: Action
    base_cooldown_seconds: int
    recommendation: str
    alternate_methods: tuple[str, ...] = ()


FUNDS = Outcome(
    Category.FUNDS,
    Action.RETRY,
    DAY,
    "The account lacked funds; we retry after a cooldown, when funds are more likely.",
)
SOFT_DECLINE = Outcome(
    Category.ISSUER_DECLINE,
    Action.RETRY,
    6 * HOUR,
    "The issuer declined without a firm reason; a few spaced retries often succeed.",
)
HARD_DECLINE = Outcome(
    Category.ISSUER_DECLINE,
    Action.CUSTOMER_ACTION,
    0,
    "The card cannot be charged again; ask the customer for a new payment method.",
    ("card", "upi", "bank_transfer"),
)
NETWORK = Outcome(
    Category.NETWORK,
    Action.RETRY,
    5 * 60,
    "A processing or network error, not a decline; a retry in a few minutes usually works.",
)
AUTH_TIMEOUT = Outcome(
    Category.AUTH_TIMEOUT,
    Action.CUSTOMER_ACTION,
    0,
    "The customer must authenticate the payment; send them a retry link.",
    ("card",),
)
UPI_PENDING = Outcome(
    Category.UPI_PENDING,
    Action.AWAIT_STATUS,
    30 * 60,
    "The UPI request may still be approved; wait for its final status before charging again.",
)
UNKNOWN = Outcome(
    Category.UNKNOWN,
    Action.RETRY,
    DAY,
    "An unrecognised failure; we retry conservatively, once a day, a limited number of times.",
)

# Stripe `decline_code` / Razorpay `reason` values.
DECLINE_CODES: dict[str, Outcome] = {
    "insufficient_funds": FUNDS,
    "insufficient_balance": FUNDS,
    "withdrawal_count_limit_exceeded": FUNDS,
    "do_not_honor": SOFT_DECLINE,
    "generic_decline": SOFT_DECLINE,
    "try_again_later": SOFT_DECLINE,
    "card_velocity_exceeded": SOFT_DECLINE,
    "issuer_not_available": NETWORK,
    "processing_error": NETWORK,
    "reenter_transaction": NETWORK,
    "lost_card": HARD_DECLINE,
    "stolen_card": HARD_DECLINE,
    "pickup_card": HARD_DECLINE,
    "fraudulent": HARD_DECLINE,
    "expired_card": HARD_DECLINE,
    "incorrect_number": HARD_DECLINE,
    "invalid_account": HARD_DECLINE,
    "card_not_supported": HARD_DECLINE,
    "authentication_required": AUTH_TIMEOUT,
    "payment_pending": UPI_PENDING,
}

# Stripe error `code` / Razorpay `error.code` values, when no decline code decided.
ERROR_CODES: dict[str, Outcome] = {
    "expired_card": HARD_DECLINE,
    "incorrect_cvc": HARD_DECLINE,
    "incorrect_number": HARD_DECLINE,
    "processing_error": NETWORK,
    "rate_limit": NETWORK,
    "api_connection_error": NETWORK,
    "timeout": NETWORK,
    "authentication_required": AUTH_TIMEOUT,
    "payment_intent_authentication_failure": AUTH_TIMEOUT,
    "gateway_error": NETWORK,
    "server_error": NETWORK,
}

# Case-insensitive substrings of a free-text message, in order.
MESSAGE_PATTERNS: tuple[tuple[str, Outcome], ...] = (
    ("insufficient", FUNDS),
    ("timed out", NETWORK),
    ("timeout", NETWORK),
    ("pending", UPI_PENDING),
    ("stolen", HARD_DECLINE),
    ("lost", HARD_DECLINE),
    ("fraud", HARD_DECLINE),
    ("expired", HARD_DECLINE),
    ("declined", SOFT_DECLINE),
)
