"""What a payment a customer made means for its recovery: the money rules, as decisions.

Every payment we learn of (a charge of ours that succeeded, a checkout paid through a link, a
PSP webhook) is recorded once, and settled by exactly one rule:
- a payment on a hosted checkout of ours for less than the amount (a part payment: ours
  never ask for one, a merchant may allow it at the PSP) settles nothing: it is refunded and
  reported, and the recovery goes on for the whole amount;
- it settles the payment's recovery when nothing settled it yet: a running recovery ends
  `recovered`; an ended `cancelled` or `exhausted` one shows it was paid after its end;
- otherwise it paid twice, and is refunded through the PSP (its refund's idempotency key is
  derived from the payment, so a retried refund never refunds twice) and reported.
Pure: the store reads the facts under the payment's row lock and records the decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Disposition(StrEnum):
    RECOVERED = "recovered"  # it settled a running recovery
    PAID_AFTER_END = "paid_after_end"  # it settled a recovery that had ended unpaid
    DUPLICATE = "duplicate"  # something had settled it already: refund it
    PARTIAL = "partial"  # less than the amount: it settles nothing, refund it

    @property
    def refunded(self) -> bool:
        """Whether a payment under this rule is refunded."""
        return self in (Disposition.DUPLICATE, Disposition.PARTIAL)


@dataclass(frozen=True)
class RecoveryFacts:
    """The payment's latest recovery as the store has it."""

    status: str
    ended: bool
    settled: bool  # a payment of record settled it already (or it ended recovered)


def dispose(recovery: RecoveryFacts, *, short: bool = False) -> Disposition:
    """The one rule a newly received payment falls under (`short`: it is for less than the
    payment's amount)."""
    if short:
        return Disposition.PARTIAL
    if recovery.settled or recovery.status == "recovered":
        return Disposition.DUPLICATE
    return Disposition.PAID_AFTER_END if recovery.ended else Disposition.RECOVERED


def short_of(amount: int | None, currency: str | None, owed: int, owed_currency: str) -> bool:
    """Whether a payment of `amount` (None: not said, taken as the whole) pays less than
    `owed`. An amount in another currency is not compared."""
    if amount is None or (currency is not None and currency.lower() != owed_currency.lower()):
        return False
    return amount < owed


def payment_identity(psp: str, psp_payment_id: str | None, fallback: str) -> str:
    """What makes two reports one payment: the PSP's id of it when we have one (a webhook
    and our own charge result name the same PaymentIntent), else the source's own id."""
    return f"{psp}:{psp_payment_id}" if psp_payment_id else fallback


def refund_idempotency_key(received_payment_id: str) -> str:
    """The PSP idempotency key of the refund of a duplicate payment: the same on every try."""
    return f"refund:{received_payment_id}"
