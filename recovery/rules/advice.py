"""Card-network advice, which adjusts what the codes decided.

`ADVICE_CODES`: card-network advice in ``network_advice_code``. Stripe passes it through
from the network ("Card declines", docs.stripe.com/declines/card: "Mastercard refers to
network advice codes as Merchant Advice Codes (MAC)"); the values are Mastercard's MACs
(01-04, 21, 22, 24-30, 40, 41, 43, as listed by Braintree, Solidgate, Antom, Checkout.com),
Visa's decline categories as processors pass them (``1`` issuer will never approve, ``2``
cannot approve now, ``3`` data quality; Cybersource "merchantAdviceCode"), and Stripe's own
``advice_code`` values (``do_not_try_again``, ``try_again_later``, ``confirm_card_data``;
"Card declines" > "Declined card retries"), accepted in the same field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from recovery.rules.outcomes import DAY, HOUR


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
