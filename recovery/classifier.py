"""Classify a payment failure: one engine for `POST /v1/classify` and the workflow.

Pure and deterministic: the same input always gives the same answer, and an unknown input
gives the conservative `unknown` classification, never an exception.
"""

from __future__ import annotations

from recovery.models import Action, Classification, ClassifyRequest
from recovery.rules import DECLINE_CODES, ERROR_CODES, MESSAGE_PATTERNS, UNKNOWN, Outcome

MAX_COOLDOWN_SECONDS = 7 * 24 * 3600


def _cooldown(outcome: Outcome, attempt: int) -> int:
    """Soft declines wait longer the more attempts have failed (doubling, capped)."""
    if outcome.action is not Action.RETRY:
        return outcome.base_cooldown_seconds
    return min(outcome.base_cooldown_seconds * 2 ** max(attempt - 1, 0), MAX_COOLDOWN_SECONDS)


def _match(req: ClassifyRequest) -> tuple[str, Outcome]:
    if req.decline_code and (o := DECLINE_CODES.get(req.decline_code.strip().lower())):
        return f"decline_code.{req.decline_code.strip().lower()}", o
    if req.code and (o := ERROR_CODES.get(req.code.strip().lower())):
        return f"code.{req.code.strip().lower()}", o
    if req.code and (o := DECLINE_CODES.get(req.code.strip().lower())):
        return f"decline_code.{req.code.strip().lower()}", o
    if req.message:
        text = req.message.lower()
        for needle, o in MESSAGE_PATTERNS:
            if needle in text:
                return f"message.{needle.replace(' ', '_')}", o
    return "fallback.unknown", UNKNOWN


def classify(req: ClassifyRequest) -> Classification:
    rule, outcome = _match(req)
    return Classification(
        category=outcome.category,
        retryable=outcome.action in (Action.RETRY, Action.AWAIT_STATUS),
        action=outcome.action,
        cooldown_seconds=_cooldown(outcome, req.attempt),
        recommendation=outcome.recommendation,
        alternate_methods=list(outcome.alternate_methods),
        rule=rule,
    )
