"""The classifier's rule tables: data, not code branches.

`recovery.classifier` walks these tables in a fixed order; every row has a stable rule id
(``<table>.<code>``) that the classification reports, so every decision is explainable.
Keys are normalised the way the classifier normalises input: stripped, lower-case, runs of
spaces, hyphens and underscores collapsed to one ``_`` (so Razorpay's ``GATEWAY_ERROR`` and
``gateway_error`` are one key). One module per source of codes, each saying where its codes
come from (looked up in each provider's own documentation):

- `outcomes`: what a rule decides (`Outcome`, one per kind, shared by every table);
- `stripe`: Stripe's decline and error codes; `razorpay`: Razorpay's reasons and codes;
- `common`: codes that mean the same from every PSP (pending, our workflow's, transport);
- `messages`: our patterns over a free-text message;
- `advice`: card-network advice, which adjusts what the codes decided;
- `psps`: each PSP's tables and the prefixes of their rule ids.
"""

from recovery.rules.advice import ADVICE_CODES, ADVICE_RECOMMENDATIONS, Advice, AdviceEffect
from recovery.rules.common import PENDING_CODES, TRANSPORT_CODES, TRANSPORT_PATTERNS, WORKFLOW_CODES
from recovery.rules.messages import MESSAGE_PATTERNS
from recovery.rules.outcomes import (
    MAX_ADVISED_COOLDOWN_SECONDS,
    MAX_COOLDOWN_SECONDS,
    NEW_METHOD,
    OUTCOMES,
    UNKNOWN,
    Outcome,
    PatternRule,
)
from recovery.rules.psps import DEFAULT_PSP_RULES, PSP_RULES, PspRules
from recovery.rules.razorpay import RAZORPAY_CODES, RAZORPAY_REASONS
from recovery.rules.stripe import STRIPE_DECLINE_CODES, STRIPE_ERROR_CODES, STRIPE_GENERIC_CODES

__all__ = [
    "ADVICE_CODES",
    "ADVICE_RECOMMENDATIONS",
    "DEFAULT_PSP_RULES",
    "MAX_ADVISED_COOLDOWN_SECONDS",
    "MAX_COOLDOWN_SECONDS",
    "MESSAGE_PATTERNS",
    "NEW_METHOD",
    "OUTCOMES",
    "PENDING_CODES",
    "PSP_RULES",
    "RAZORPAY_CODES",
    "RAZORPAY_REASONS",
    "STRIPE_DECLINE_CODES",
    "STRIPE_ERROR_CODES",
    "STRIPE_GENERIC_CODES",
    "TRANSPORT_CODES",
    "TRANSPORT_PATTERNS",
    "UNKNOWN",
    "WORKFLOW_CODES",
    "Advice",
    "AdviceEffect",
    "Outcome",
    "PatternRule",
    "PspRules",
]
