"""Codes that mean the same from every PSP: a payment that may still complete, our workflow's
own codes, and transport failures.

`PENDING_CODES`: Razorpay reasons for a payment that may still complete
(``payment_pending`` "late authorization", ``collect_request_pending``,
``deemed_transaction``, ``payment_pending_approval``), and the Razorpay adapter's own
``recurring_debit_pending`` / ``mandate_debit_pending`` for a debit on a token that is
still ``created`` (a pre-debit notice, a bank's file cycle). Checked first and for every PSP
(the workflow reports a charge still ``processing`` as ``payment_pending`` whatever the
PSP): charging again while a payment may complete is the one mistake we must never make.

`WORKFLOW_CODES`: codes our own workflow reports (``payment_pending_expired``: a pending
payment reached no final status within the wait; it is no longer pending, and is retried
like an unknown failure, a day later).

`TRANSPORT_CODES`, `TRANSPORT_PATTERNS`: transport failures between us, the PSP and the
bank (timeouts, connection errors, rate limits, HTTP 408/429/5xx), including Stripe's
error types ``api_connection_error``/``api_error`` and codes ``rate_limit``/``lock_timeout``
(docs.stripe.com/error-codes, /error-handling).
"""

from __future__ import annotations

from collections.abc import Mapping

from recovery.rules.outcomes import (
    NETWORK,
    PENDING,
    PENDING_DEBIT,
    PENDING_EXPIRED,
    PENDING_LONG,
    PENDING_MANDATE_DEBIT,
    Outcome,
    PatternRule,
    rx,
)

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

TRANSPORT_PATTERNS: tuple[PatternRule, ...] = (
    PatternRule("http_408", rx(r"^(http_)?408$"), NETWORK, "http_408"),
    PatternRule("http_429", rx(r"^(http_)?429$"), NETWORK, "HTTP 429"),
    PatternRule("http_5xx", rx(r"^(http_)?5\d\d$"), NETWORK, "http_502"),
)
