"""`MESSAGE_PATTERNS`: ours, not a provider's: ordered, case-insensitive regular expressions
over a free-text message, for PSPs (or merchants) that send only a message. The first match
decides."""

from __future__ import annotations

from recovery.rules.outcomes import (
    AUTH_REQUIRED,
    CARD_DETAILS,
    FRAUD_RISK,
    FUNDS,
    NETWORK,
    OUTAGE,
    PENDING,
    PENDING_EXPIRED,
    SOFT_DECLINE,
    PatternRule,
    rx,
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
        rx(r"\bpending\b[^.]{0,40}\b(did not|didn't|never|not) (complete|settle)"),
        PENDING_EXPIRED,
        "pending payment did not complete",
    ),
    PatternRule(
        "request_expired",
        rx(
            r"\b(collect |payment |upi )?request (has )?expired\b|"
            r"\b(session|mandate) (has )?expired\b"
        ),
        AUTH_REQUIRED,
        "UPI collect request expired",
    ),
    PatternRule(
        "lost_or_stolen",
        rx(
            r"\b(lost|stolen)\b[^.]{0,20}\bcard\b|\bcard\b[^.]{0,50}\b(lost|stolen)\b|"
            r"\bpick ?up card\b"
        ),
        FRAUD_RISK,
        "Card reported stolen",
    ),
    PatternRule(
        "fraud",
        rx(r"fraud|\brisk check"),
        FRAUD_RISK,
        "Declined as suspected fraud",
    ),
    PatternRule(
        "insufficient_funds",
        rx(
            r"\binsufficient (funds|balance|credit)\b|\bnot enough (funds|balance|money)\b|"
            r"\blow balance\b"
        ),
        FUNDS,
        "Payment failed due to insufficient balance",
    ),
    PatternRule(
        "limit_exceeded",
        rx(r"\blimit\b[^.]{0,40}\b(exceeded|reached)\b|\bexceed(s|ed)?\b[^.]{0,40}\blimit\b"),
        FUNDS,
        "Daily transaction limit exceeded",
    ),
    PatternRule(
        "authentication",
        rx(r"authenticat|\b3-?d ?secure\b|\b3ds\b|\botp\b|\bsca\b"),
        AUTH_REQUIRED,
        "Authentication failed due to incorrect OTP",
    ),
    PatternRule(
        "card_expired",
        rx(r"\bexpired card\b|\b(card|expiry|expiration)\b[^.]{0,20}\bexpired\b"),
        CARD_DETAILS,
        "Your card has expired.",
    ),
    PatternRule(
        "incorrect_details",
        rx(
            rf"\b(incorrect|invalid|wrong)\b[^.]{{0,20}}\b{_DETAILS}\b|"
            rf"\b{_DETAILS}\b[^.]{{0,30}}\b(incorrect|invalid|wrong)\b"
        ),
        CARD_DETAILS,
        "Your card's security code is incorrect.",
    ),
    PatternRule(
        "cancelled",
        rx(r"\bcancell?ed\b"),
        AUTH_REQUIRED,
        "Payment was cancelled by the customer",
    ),
    PatternRule(
        "pending",
        rx(r"\bpending\b|\bawaiting (approval|authori[sz]ation|confirmation)\b|\bin progress\b"),
        PENDING,
        "Collect request is pending",
    ),
    PatternRule(
        "rate_limited",
        rx(r"\brate limit|\btoo many requests\b"),
        NETWORK,
        "Too many requests",
    ),
    PatternRule(
        "timed_out",
        rx(r"\btimed? ?out\b|\btimeout\b"),
        NETWORK,
        "Request timed out at gateway",
    ),
    PatternRule(
        "outage",
        rx(r"\btechnical (error|issue|problem)s?\b|\bdowntime\b|\bunavailable\b|\bnot available\b"),
        OUTAGE,
        "Bank technical error",
    ),
    PatternRule(
        "connection_error",
        rx(
            r"\bconnection (reset|refused|error|closed|aborted)\b|\bnetwork error\b|"
            r"\bbad gateway\b|\bgateway error\b|\bserver error\b|\binternal error\b|\b50[0234]\b"
        ),
        NETWORK,
        "Connection reset by peer",
    ),
    PatternRule(
        "try_again_later",
        rx(r"\b(try|retry) (again )?later\b"),
        SOFT_DECLINE,
        "Please try again later",
    ),
    PatternRule(
        "declined",
        rx(r"declin|\bnot hono(u)?red\b|\bdo not hono(u)?r\b|\brefused\b|\brejected\b"),
        SOFT_DECLINE,
        "Your card was declined.",
    ),
)
