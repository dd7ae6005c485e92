"""The card networks' published limits on merchant-initiated re-attempts of a declined card.

Pure data and a brand lookup: workflow code may import this module. Each number is the
network's published threshold turned into how many of *our* attempts on one card one merchant
may make in a rolling window, with the source and edition it comes from (read 2026). The
networks count per card and merchant (Visa and Mastercard also per amount; we count per card
and merchant whatever the amount, which never counts fewer).

Where a network counts *declines* rather than *re-attempts*, the merchant's own first decline
(the failure that started the recovery) is one of them, so our ceiling is one lower than the
published threshold. Never-retry declines (Visa category 1, Mastercard merchant advice 03 and
21) are not limits: the classifier stops on them (`recovery/rules/advice.py`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NetworkRule:
    """How many of our attempts on one card one merchant may make, per rolling window."""

    network: str
    per_30_days: int
    per_day: int | None
    """None: the network publishes no 24-hour limit (the policy's own may still apply)."""
    source: str


VISA = NetworkRule(
    network="Visa",
    # Visa Core Rules and Visa Product and Service Rules, "excessive reattempts" (Visa
    # Integrity Risk / processing integrity fees), in force since April 2021 (fees from
    # April 2022): category 1 declines never, categories 2-4 at most 15 reattempts in 30 days.
    # Edition of 19 May 2025 (Visa Business News): at most 20 reattempts of one card at one
    # merchant in a rolling 30 days, counted separately for merchant-initiated transactions
    # (ours) and customer-initiated ones. Read in 2026 in checkout.com's "When can I retry a
    # declined transaction" and TabaPay's "Excessive Retry Rules". Visa publishes no 24-hour
    # limit. Reattempts are counted after the first decline, so all 20 are ours.
    per_30_days=20,
    per_day=None,
    source="Visa Rules, excessive reattempts, edition of 19 May 2025: 20 reattempts in 30 days",
)

MASTERCARD = NetworkRule(
    network="Mastercard",
    # Mastercard Transaction Processing Excellence (TPE), "Excessive Authorization Attempts":
    # declined attempts on one card at one merchant above 10 in a rolling 24 hours, and (US
    # from 1 November 2023, Canada from 1 April 2024, fee USD 0.50 from January 2025) above 35
    # for the same card, acceptor and amount in 30 days; merchant advice codes 03 and 21 never
    # again. Read in 2026 in Braintree's network updates (2023, "revised excessive
    # authorization TPE"), TabaPay's Mastercard notes and checkout.com's retry article. These
    # count declines, the merchant's first one included: 9 and 34 are ours.
    per_30_days=34,
    per_day=9,
    source=(
        "Mastercard TPE Excessive Authorization Attempts, 2023-2025 editions: 10 declines in "
        "24 hours, 35 in 30 days (the merchant's first decline included)"
    ),
)

ELO = NetworkRule(
    network="Elo",
    # Elo's retry programme (Brazil): every declined payment on the same card, expiry, amount
    # and merchant id in 30 days counts; fees from the 16th re-attempt in the month. Read in
    # 2026 in Braspag's "Regras para retentativa das bandeiras". No 24-hour limit published.
    per_30_days=15,
    per_day=None,
    source="Elo retentativa programme: fees from the 16th reattempt in 30 days",
)

STRICTEST = NetworkRule(
    network="an unknown network",
    # American Express, Discover, Diners, JCB, UnionPay, RuPay and cards whose brand the PSP
    # does not tell: no published re-attempt limit was found (2026), so the strictest of the
    # rules above applies in each window.
    per_30_days=min(VISA.per_30_days, MASTERCARD.per_30_days, ELO.per_30_days),
    per_day=MASTERCARD.per_day,
    source="no published limit: the strictest of Visa, Mastercard and Elo in each window",
)

_BY_BRAND = {
    "visa": VISA,
    "mastercard": MASTERCARD,
    "maestro": MASTERCARD,  # Mastercard's debit brand, on Mastercard's network
    "elo": ELO,
}

KNOWN_RULES = (VISA, MASTERCARD, ELO, STRICTEST)

# A merchant policy lowers every network's ceiling to its own value; above these it would
# lower none, so the API refuses it (the policy may lower the limits, never raise them).
HIGHEST_PER_30_DAYS = max(r.per_30_days for r in KNOWN_RULES)
HIGHEST_PER_DAY = max(r.per_day for r in KNOWN_RULES if r.per_day is not None)


def network_rule(brand: str | None) -> NetworkRule:
    """The rule for a card of `brand` as a PSP names it (Stripe `visa`, `mastercard`;
    Stripe's legacy sources and Razorpay `Visa`, `MasterCard`, `RuPay`, ...)."""
    key = "".join((brand or "").lower().split())
    return _BY_BRAND.get(key, STRICTEST)
