"""Classify a payment failure: one engine for `POST /v1/classify` and the workflow.

Pure and deterministic: the same input always gives the same answer, and an input no table
knows gives the conservative `unknown` classification, never an exception. All knowledge
lives in `recovery.rules`; this module only fixes the order the tables are consulted in:

1. `PENDING_CODES`, `WORKFLOW_CODES` (``decline_code``, then ``code``): a payment that may
   still complete outranks everything else;
2. the PSP's decline table (Stripe ``decline_code`` / Razorpay ``reason``) with
   ``decline_code``; its specific error codes with ``code``; then each table with the other
   field, for callers that put a code in the other field;
3. `TRANSPORT_CODES` / `TRANSPORT_PATTERNS` (timeouts, connection errors, HTTP 5xx);
4. `MESSAGE_PATTERNS` over the free-text message, first match wins;
5. the PSP's generic codes (``card_declined``, ``BAD_REQUEST_ERROR``, ...);
6. ``fallback.unknown``.

Then card-network advice (``network_advice_code``, `ADVICE_CODES`) adjusts the result:
"do not try again" turns any decision into ``stop`` (the category stays what the codes
said); "update details" turns a planned retry into ``customer_action``; "retry after N"
stretches a planned retry's cooldown to at least N.

A retry's cooldown doubles with every attempt from the outcome's base, up to the outcome's
cap (at most `MAX_COOLDOWN_SECONDS`; network advice may ask for up to
`MAX_ADVISED_COOLDOWN_SECONDS`). A wait for a pending payment is the outcome's own, at most
`MAX_PENDING_WAIT_SECONDS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from recovery.models import Action, Classification, ClassifyRequest
from recovery.rules import (
    ADVICE_CODES,
    ADVICE_RECOMMENDATIONS,
    DEFAULT_PSP_RULES,
    MAX_ADVISED_COOLDOWN_SECONDS,
    MAX_COOLDOWN_SECONDS,
    MAX_PENDING_WAIT_SECONDS,
    MESSAGE_PATTERNS,
    NEW_METHOD,
    PENDING_CODES,
    PSP_RULES,
    TRANSPORT_CODES,
    TRANSPORT_PATTERNS,
    UNKNOWN,
    WORKFLOW_CODES,
    Advice,
    AdviceEffect,
    Outcome,
    PspRules,
)

__all__ = [
    "MAX_ADVISED_COOLDOWN_SECONDS",
    "MAX_COOLDOWN_SECONDS",
    "MAX_PENDING_WAIT_SECONDS",
    "classify",
    "normalise",
]

_MAX_FIELD = 200
_MAX_MESSAGE = 2000
_SEPARATORS = re.compile(r"[\s\-_]+")
_MAX_DOUBLINGS = 30  # 2**30 x any base is far past every cap


def normalise(value: str | None) -> str | None:
    """Strip, lower-case, collapse spaces/hyphens/underscores to one ``_``; blank is None."""
    if not value:
        return None
    key = _SEPARATORS.sub("_", value[:_MAX_FIELD].strip().lower()).strip("_")
    return key or None


def psp_rules(psp: str | None) -> PspRules:
    return PSP_RULES.get((psp or "").strip().lower(), DEFAULT_PSP_RULES)


def retry_cooldown(outcome: Outcome, attempt: int) -> int:
    """The outcome's cooldown before attempt `attempt` + 1: doubling, capped."""
    if outcome.action is not Action.RETRY:
        return outcome.base_cooldown_seconds
    doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
    cap = min(outcome.max_cooldown_seconds, MAX_COOLDOWN_SECONDS)
    return min(outcome.base_cooldown_seconds * 2**doublings, cap)


def _match(
    rules: PspRules, code: str | None, decline: str | None, message: str | None
) -> tuple[str, Outcome]:
    """(rule id, outcome) of the first table row that knows the failure."""
    both = [k for k in (decline, code) if k]
    for table, prefix in ((PENDING_CODES, "pending"), (WORKFLOW_CODES, "workflow")):
        for known in both:
            if known in table:
                return f"{prefix}.{known}", table[known]
    as_decline = None if code in rules.generic_codes else code  # SERVER_ERROR is a code
    lookups = (
        (rules.decline_codes, rules.decline_rule_prefix, decline),
        (rules.error_codes, rules.code_rule_prefix, code),
        (rules.decline_codes, rules.decline_rule_prefix, as_decline),
        (rules.error_codes, rules.code_rule_prefix, decline),
    )
    for table, prefix, key in lookups:
        if key and key in table:
            return f"{prefix}.{key}", table[key]
    for known in both:
        if known in TRANSPORT_CODES:
            return f"network.{known}", TRANSPORT_CODES[known]
        for row in TRANSPORT_PATTERNS:
            if row.pattern.search(known):
                return f"network.{row.name}", row.outcome
    if message:
        text = message[:_MAX_MESSAGE]
        for row in MESSAGE_PATTERNS:
            if row.pattern.search(text):
                return f"message.{row.name}", row.outcome
    for key in (code, decline):
        if key and key in rules.generic_codes:
            return f"{rules.code_rule_prefix}.{key}", rules.generic_codes[key]
    return "fallback.unknown", UNKNOWN


@dataclass
class _Decision:
    rule: str
    outcome: Outcome
    action: Action
    cooldown_seconds: int
    recommendation: str
    alternate_methods: tuple[str, ...]


def _advise(d: _Decision, key: str, advice: Advice) -> None:
    """Apply card-network advice to the decision, in place."""
    says = f"Card network advice {key} ({advice.description}): "
    says += ADVICE_RECOMMENDATIONS[advice.effect]
    if advice.effect is AdviceEffect.STOP:
        d.action, d.cooldown_seconds = Action.STOP, 0
        d.alternate_methods = d.alternate_methods or NEW_METHOD
    elif advice.effect is AdviceEffect.NEW_DETAILS and d.action is Action.RETRY:
        d.action, d.cooldown_seconds = Action.CUSTOMER_ACTION, 0
        d.alternate_methods = d.alternate_methods or ("card",)
    elif (
        advice.effect is AdviceEffect.WAIT
        and d.action is Action.RETRY
        and advice.wait_seconds > d.cooldown_seconds
    ):
        d.cooldown_seconds = min(advice.wait_seconds, MAX_ADVISED_COOLDOWN_SECONDS)
    else:
        return
    d.rule, d.recommendation = f"advice.{key}", says


def classify(req: ClassifyRequest) -> Classification:
    rules = psp_rules(req.psp)
    rule, outcome = _match(
        rules, normalise(req.code), normalise(req.decline_code), req.message or None
    )
    d = _Decision(
        rule=rule,
        outcome=outcome,
        action=outcome.action,
        cooldown_seconds=retry_cooldown(outcome, req.attempt),
        recommendation=outcome.recommendation,
        alternate_methods=outcome.alternate_methods,
    )
    advice_key = normalise(req.network_advice_code)
    if advice_key and (advice := ADVICE_CODES.get(advice_key)):
        _advise(d, advice_key, advice)
    return Classification(
        category=outcome.category,
        retryable=d.action in (Action.RETRY, Action.AWAIT_STATUS),
        action=d.action,
        cooldown_seconds=d.cooldown_seconds,
        recommendation=d.recommendation,
        alternate_methods=[m for m in d.alternate_methods if m in rules.methods],
        rule=d.rule,
    )
