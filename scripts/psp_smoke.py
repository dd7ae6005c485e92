"""Check what our PSP adapters assume against a PSP's real test mode.

    python -m scripts.psp_smoke --psp stripe --api-key sk_test_...
    python -m scripts.psp_smoke --psp razorpay --key-id rzp_test_... --key-secret ... \\
        --customer cust_... --token token_...

For operators with internet and test keys (CI has neither: it runs these checks against the
local fakes, `tests/unit/test_psp_smoke.py`, so they stay in step). Each check makes the
product's own adapter call and prints the live answer beside what our tests' fakes assume:
`ok` when they agree, `DIFFERS` when they do not (then the fake, or the adapter, is wrong).
Exit status: 0 when every check agrees, 1 when one differs, 2 on bad arguments. Only test
keys are accepted, and what a check charges it refunds (a Razorpay debit still pending when
it ends, ₹1, is left to settle).

Stripe: an off-session charge of a saved card, its idempotent replay, a decline's shape, a
Checkout Session created and expired, a refund's idempotent replay. Razorpay (a customer
with a confirmed recurring token of your test account): the token's mandate state, a
recurring debit (captured, or `created` while its pre-debit notice runs), a Payment Link
created twice with one reference id and then cancelled, a refund's idempotent replay.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import stripe

from recovery.models import ChargeRequest, Customer, Failure, PaymentMethod
from recovery.psp.base import CheckoutRequest
from recovery.psp.razorpay import RazorpayAdapter
from recovery.psp.stripe import StripeAdapter


@dataclass(frozen=True)
class Check:
    name: str
    assumed: str
    observed: str
    agrees: bool

    def line(self) -> str:
        verdict = "ok     " if self.agrees else "DIFFERS"
        return f"{verdict} {self.name}: assumed {self.assumed}; observed {self.observed}"


def _charge(
    psp: str, customer: Customer, method: str | None, key: str, amount: int
) -> ChargeRequest:
    return ChargeRequest(
        merchant_id="smoke",
        recovery_id="smoke",
        payment_ref=f"smoke-{key}",
        attempt=1,
        idempotency_key=key,
        psp=psp,
        amount=amount,
        currency="usd" if psp == "stripe" else "inr",
        customer=customer,
        payment_method=PaymentMethod(type="card", id=method),
        original_failure=Failure(code="card_declined", decline_code="insufficient_funds"),
    )


def _checkout(psp: str, key: str, amount: int) -> CheckoutRequest:
    return CheckoutRequest(
        merchant_id="smoke",
        recovery_id="smoke",
        payment_ref=f"smoke-{key}",
        link_id=f"lnk_{key}",
        amount=amount,
        currency="usd" if psp == "stripe" else "inr",
        customer=Customer(email="smoke@example.com"),
        description="PSP smoke check",
        success_url="https://example.com/paid",
        cancel_url="https://example.com/cancelled",
        idempotency_key=f"checkout:{key}",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )


async def _refund_replayed(
    adapter: StripeAdapter | RazorpayAdapter, psp_payment_id: str, run: str
) -> Check:
    """Refund the payment twice with one key: one refund (and the money back)."""
    key = f"{run}-refund"
    a = await adapter.refund_payment(psp_payment_id, amount=None, idempotency_key=key)
    b = await adapter.refund_payment(psp_payment_id, amount=None, idempotency_key=key)
    return Check(
        "same refund key, one refund",
        a.psp_refund_id,
        b.psp_refund_id,
        a.psp_refund_id == b.psp_refund_id,
    )


@dataclass(frozen=True)
class StripeCards:
    """How to give a test customer a card: Stripe's test PaymentMethods (`pm_card_visa`, the
    default), or raw test card numbers for a server that takes them (localstripe)."""

    ok: str = "pm_card_visa"
    declines: str = "pm_card_chargeCustomerFail"
    numbers: bool = False


async def stripe_checks(
    api_key: str, api_base: str | None = None, cards: StripeCards = StripeCards()
) -> list[Check]:
    client = stripe.StripeClient(
        api_key, base_addresses={"api": api_base} if api_base else None, max_network_retries=0
    )
    adapter = StripeAdapter(api_key, api_base=api_base)
    run = uuid.uuid4().hex[:12]

    def customer_with(card: str) -> Customer:
        customer = client.v1.customers.create({"email": "smoke@example.com"})
        if cards.numbers:
            card = client.v1.payment_methods.create(
                {
                    "type": "card",
                    "card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
                }
            ).id
        client.v1.payment_methods.attach(card, {"customer": customer.id})
        client.v1.customers.update(
            customer.id, {"invoice_settings": {"default_payment_method": card}}
        )
        return Customer(id=customer.id, email="smoke@example.com")

    checks: list[Check] = []
    try:
        ok = customer_with(cards.ok)
        req = _charge("stripe", ok, None, f"smoke-{run}-1", 1000)
        first = await adapter.create_payment_intent(req)
        checks.append(
            Check(
                "off-session charge of the default card",
                "succeeded",
                first.status,
                first.status == "succeeded",
            )
        )
        again = await adapter.create_payment_intent(req)
        checks.append(
            Check(
                "same idempotency key, same PaymentIntent",
                str(first.psp_payment_id),
                str(again.psp_payment_id),
                again.psp_payment_id == first.psp_payment_id,
            )
        )
        declining = customer_with(cards.declines)
        declined = await adapter.create_payment_intent(
            _charge("stripe", declining, None, f"smoke-{run}-2", 1000)
        )
        code = declined.failure.code if declined.failure else None
        checks.append(
            Check(
                "an off-session decline (402 card_error)",
                "failed with code card_declined and the PaymentIntent's id",
                f"{declined.status} with code {code} ({declined.psp_payment_id})",
                declined.status == "failed"
                and code == "card_declined"
                and bool(declined.psp_payment_id),
            )
        )
        checkout = await adapter.create_checkout_session(_checkout("stripe", run, 1000))
        await adapter.close_checkout(checkout.psp_checkout_id)
        session = client.v1.checkout.sessions.retrieve(checkout.psp_checkout_id)
        checks.append(
            Check(
                "a Checkout Session closed with its link",
                "expired",
                str(session.status),
                session.status == "expired",
            )
        )
        if first.psp_payment_id:
            checks.append(await _refund_replayed(adapter, first.psp_payment_id, f"smoke-{run}"))
    finally:
        await adapter.aclose()
    return checks


async def razorpay_checks(
    key_id: str, key_secret: str, customer_id: str, token_id: str, api_base: str | None = None
) -> list[Check]:
    adapter = RazorpayAdapter(key_id, key_secret, api_base=api_base)
    run = uuid.uuid4().hex[:12]
    customer = Customer(id=customer_id, email="smoke@example.com")
    checks: list[Check] = []
    try:
        refusal = await adapter.token_refusal(customer_id, token_id, 100)
        checks.append(
            Check(
                "the token's mandate can be debited",
                "confirmed, within max_amount, not expired",
                (refusal.decline_code or "refused") if refusal else "yes",
                refusal is None,
            )
        )
        if refusal is not None:
            return checks
        debit = await adapter.create_payment_intent(
            _charge("razorpay", customer, token_id, f"smoke-{run}-1", 100)
        )
        checks.append(
            Check(
                "a recurring debit",
                "captured, or created (pending) while the pre-debit notice runs",
                debit.status,
                debit.status in ("succeeded", "processing"),
            )
        )
        first = await adapter.create_checkout_session(_checkout("razorpay", run, 100))
        second = await adapter.create_checkout_session(_checkout("razorpay", run, 100))
        checks.append(
            Check(
                "one Payment Link per reference_id",
                first.psp_checkout_id,
                second.psp_checkout_id,
                first.psp_checkout_id == second.psp_checkout_id,
            )
        )
        await adapter.close_checkout(first.psp_checkout_id)
        checks.append(Check("a Payment Link cancelled with its link", "no error", "none", True))
        if debit.status == "succeeded" and debit.psp_payment_id:
            checks.append(await _refund_replayed(adapter, debit.psp_payment_id, f"smoke-{run}"))
    finally:
        adapter.close()
    return checks


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.psp_smoke", description=__doc__)
    parser.add_argument("--psp", choices=["stripe", "razorpay"], required=True)
    parser.add_argument("--api-key", help="Stripe secret key (sk_test_...)")
    parser.add_argument("--key-id", help="Razorpay key id (rzp_test_...)")
    parser.add_argument("--key-secret", help="Razorpay key secret")
    parser.add_argument("--customer", help="Razorpay customer with a confirmed token")
    parser.add_argument("--token", help="that customer's recurring token")
    parser.add_argument("--api-base", help="another server speaking the PSP's API")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    run: Callable[[], Awaitable[list[Check]]]
    if args.psp == "stripe":
        if not (args.api_key or "").startswith(("sk_test_", "rk_test_")):
            print("a Stripe test key (sk_test_... or rk_test_...) is required", file=sys.stderr)
            return 2
        run = lambda: stripe_checks(args.api_key, args.api_base)  # noqa: E731
    else:
        if not (args.key_id or "").startswith("rzp_test_") or not (
            args.key_secret and args.customer and args.token
        ):
            print(
                "a Razorpay test key (--key-id rzp_test_..., --key-secret) and a customer with"
                " a confirmed recurring token (--customer, --token) are required",
                file=sys.stderr,
            )
            return 2
        run = lambda: razorpay_checks(  # noqa: E731
            args.key_id, args.key_secret, args.customer, args.token, args.api_base
        )
    checks = asyncio.run(run())
    for check in checks:
        print(check.line())
    return 0 if all(c.agrees for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
