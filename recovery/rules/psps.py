"""Each PSP's tables and the prefixes of their rule ids."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from recovery.rules.outcomes import NEW_METHOD, Outcome
from recovery.rules.razorpay import RAZORPAY_CODES, RAZORPAY_REASONS
from recovery.rules.stripe import STRIPE_DECLINE_CODES, STRIPE_ERROR_CODES, STRIPE_GENERIC_CODES


@dataclasses.dataclass(frozen=True)
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
SIMULATOR = dataclasses.replace(STRIPE, name="simulator", methods=NEW_METHOD)
"""The simulator reports Stripe-style codes (and Stripe's rule ids) for every method."""

PSP_RULES: Mapping[str, PspRules] = {"stripe": STRIPE, "razorpay": RAZORPAY, "simulator": SIMULATOR}
"""An unrecognised PSP name is read as Stripe-style."""
DEFAULT_PSP_RULES = STRIPE
