"""The built-in simulator PSP: deterministic outcomes scripted by the payment method id.

- ``pm_sim_decline_<code>``: every charge is declined with decline code ``<code>``
  (e.g. ``pm_sim_decline_insufficient_funds``, ``pm_sim_decline_stolen_card``);
- ``pm_sim_succeed_on_<n>``: attempts before the n-th are declined with the event's own
  failure codes, attempt n and later succeed;
- ``pm_sim_pending``: the charge stays ``processing``;
- ``pm_sim_canceled``: the charge is canceled at the PSP (as a merchant cancels a payment);
- ``pm_sim_slow_<s>``: the PSP takes s seconds (at most 60) to answer, then succeeds;
- ``pm_sim_error``: every request is answered with a server error and nothing is charged;
- ``pm_sim_lost_answer``: the charge succeeds, but every answer to it is a server error
  (as Stripe replays a saved 500 for the same idempotency key): only a lookup tells;
- ``pm_sim_hang``: the charge succeeds, and the answer never comes;
- anything else: the charge succeeds.

Cards: a payment method id may name its card after an ``@`` (``pm_sim_decline_x@card7``):
ids with the same card are one card for the card-network limits, and the script is the part
before the ``@``; without one, the id is its own card. No payment method named: the
customer's default card, which for a customer ``cus_sim_<script>`` is ``pm_sim_<script>``
(e.g. ``cus_sim_decline_insufficient_funds``) and otherwise ``pm_sim_default`` (succeeds).
Every simulated card is a Visa card.

Charges are kept in the simulator's own ledger (Postgres table ``simulator_charges``), one per
idempotency key, as a real PSP keeps them: a replayed request returns the first result.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

from recovery.models import (
    CardIdentity,
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    Customer,
    Failure,
    PaymentMethod,
)
from recovery.psp.base import (
    Checkout,
    CheckoutRequest,
    PSPStore,
    RefundResult,
    TransientPSPError,
)

_DECLINE = re.compile(r"^pm_sim_decline_([a-z_]+)$")
_SUCCEED_ON = re.compile(r"^pm_sim_succeed_on_(\d+)$")
_SLOW = re.compile(r"^pm_sim_slow_(\d+)$")


SIMULATED_BRAND = "visa"


def charged_method(customer: Customer, payment_method: PaymentMethod) -> str:
    """The payment method id a charge uses: the one named, else the customer's default."""
    if payment_method.id:
        return payment_method.id
    if customer.id and customer.id.startswith("cus_sim_"):
        return "pm_sim_" + customer.id.removeprefix("cus_sim_")
    return "pm_sim_default"


def card_of(payment_method_id: str) -> str:
    """The simulated card behind a payment method id (the part after `@`, else the id)."""
    script, _, card = payment_method_id.partition("@")
    return card or script


def scripted_outcome(req: ChargeRequest) -> tuple[ChargeStatus, Failure | None]:
    pm = charged_method(req.customer, req.payment_method).partition("@")[0]
    if m := _DECLINE.match(pm):
        return "failed", Failure(code="card_declined", decline_code=m.group(1))
    if m := _SUCCEED_ON.match(pm):
        if req.attempt < int(m.group(1)):
            return "failed", req.original_failure
        return "succeeded", None
    if pm == "pm_sim_pending":
        return "processing", None
    if pm == "pm_sim_canceled":
        return "canceled", None
    return "succeeded", None


def _ledger_result(psp_payment_id: str, status: ChargeStatus, decline: str | None) -> ChargeResult:
    """A charge as the simulator's ledger keeps it (its decline code, if it was declined)."""
    failure = Failure(code="card_declined", decline_code=decline) if decline else None
    return ChargeResult(status=status, psp_payment_id=psp_payment_id, failure=failure)


class SimulatorPSP:
    name = "simulator"
    idempotency_window: timedelta | None = None  # its ledger keeps every key

    def __init__(self, store: PSPStore) -> None:
        self._store = store

    async def create_payment_intent(self, req: ChargeRequest) -> ChargeResult:
        pm = charged_method(req.customer, req.payment_method).partition("@")[0]
        if m := _SLOW.match(pm):
            await asyncio.sleep(min(int(m.group(1)), 60))
        if pm == "pm_sim_error":
            raise TransientPSPError("simulated PSP server error (nothing charged)")
        status, failure = scripted_outcome(req)
        decline = (failure.decline_code or failure.code) if failure else None
        psp_id, status, _ = await self._store.simulator_charge(req, status, decline)
        if pm == "pm_sim_lost_answer":
            raise TransientPSPError("simulated PSP server error (the charge was made)")
        if pm == "pm_sim_hang":
            await asyncio.Event().wait()  # no answer, ever: the caller's deadline ends it
        return ChargeResult(status=status, psp_payment_id=psp_id, failure=failure)

    async def find_charge(self, req: ChargeRequest) -> ChargeResult | None:
        found = await self._store.simulator_charge_by_key(req.idempotency_key)
        if found is None:
            return None
        psp_id, status, decline = found
        return _ledger_result(psp_id, status, decline)

    async def retrieve_payment_intent(self, psp_payment_id: str) -> ChargeResult:
        status, decline = await self._store.simulator_payment(psp_payment_id)
        return _ledger_result(psp_payment_id, status, decline)

    async def resolve_card(self, customer: Customer, payment_method: PaymentMethod) -> CardIdentity:
        pm = charged_method(customer, payment_method)
        return CardIdentity(
            key=f"simulator:card:{card_of(pm)}", brand=SIMULATED_BRAND, payment_method_id=pm
        )

    async def create_checkout_session(self, req: CheckoutRequest) -> Checkout:
        raise NotImplementedError("the simulator's hosted page comes with retry links")

    async def close_checkout(self, psp_checkout_id: str) -> None:
        """The store closes the simulator's checkouts with their links."""

    async def retrieve_refund(self, psp_refund_id: str) -> RefundResult:
        """The simulator refunds at once."""
        amount = await self._store.simulator_refund_amount(psp_refund_id)
        return RefundResult(psp_refund_id=psp_refund_id, status="succeeded", amount=amount)

    async def refund_payment(
        self, psp_payment_id: str, *, amount: int | None, idempotency_key: str
    ) -> RefundResult:
        """Refunded at once, once per idempotency key."""
        refund_id = await self._store.simulator_refund(psp_payment_id, amount, idempotency_key)
        return RefundResult(psp_refund_id=refund_id, status="succeeded", amount=amount or 0)
