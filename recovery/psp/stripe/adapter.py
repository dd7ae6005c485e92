"""The Stripe adapter: the official SDK (`StripeClient`, async methods, httpx) behind
`PSPAdapter`. What it sends and how Stripe's answers read is in `transformers`.

- A recovery attempt is an off-session PaymentIntent on the customer's saved payment method,
  created and confirmed in one call, with our idempotency key (a retried activity replays
  Stripe's first answer instead of charging twice) and our ids in its metadata (webhooks find
  their recovery by them).
- Stripe's PaymentIntent status goes to our `PaymentStatus` in one exhaustive `match`
  (`transformers.canonical_status`); a fully refunded succeeded payment reads as `refunded`.
- A card decline (HTTP 402, `stripe.CardError`) is a result, not an exception: status
  `failed` (or `requires_action` for `authentication_required`) with Stripe's `code`,
  `decline_code`, message and the card network's advice (`network_advice_code`, else
  Stripe's own `advice_code`) in `Failure`, which is what the classifier reads.
- Timeouts, connection errors, rate limits, 408/409 (a concurrent request holds the key),
  `lock_timeout`, 5xx and unreadable answers raise `TransientPSPError` (the activity retries
  them with the same idempotency key; note Stripe replays a saved 500 for that key, so a
  payment still unknown after the retries is one to look up, not to charge again); anything
  else Stripe refuses (invalid parameters, bad key, missing permission, a key reused with
  other parameters) raises `StripeRequestRejected`, which retrying cannot fix
  (`transformers.translate_error`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import stripe
from stripe.params import RefundCreateParams

from recovery.models import CardIdentity, ChargeRequest, ChargeResult, Customer, PaymentMethod
from recovery.psp.base import Checkout, CheckoutRequest, RefundResult, clip
from recovery.psp.stripe.transformers import (
    StripeRequestRejected,
    StripeUnexpectedResponse,
    attempt_search_query,
    charge_result,
    checkout_session_params,
    declined,
    made_by,
    object_id,
    payment_intent_params,
    refund_result,
    translate_error,
)

_LOOKUP_SCAN = 1000  # a customer's newest PaymentIntents searched for a lost attempt


class StripeAdapter:
    """`PSPAdapter` for Stripe. One instance holds one `StripeClient` (one merchant account)
    and one httpx connection pool; call `aclose()` when done with it."""

    name = "stripe"
    # "Keys are eligible to be removed from the system automatically after they're at least
    # 24 hours old" (docs.stripe.com/api/idempotent_requests)
    idempotency_window: timedelta | None = timedelta(hours=24)

    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        *,
        timeout_seconds: float = 30.0,
    ) -> None:
        """Charges, lookups, checkouts and refunds; webhooks need no adapter
        (`webhooks.verify_webhook` takes the account's webhook secret alone)."""
        if not api_key:
            raise ValueError("a Stripe API key is required")
        # httpx for the async methods; no sync client (nothing here may block the loop).
        self._http = stripe.HTTPXClient(timeout=timeout_seconds)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")} if api_base else None,
            max_network_retries=0,  # Temporal retries, with the same idempotency key
            http_client=self._http,
        )

    async def aclose(self) -> None:
        await self._http.close_async()

    # ---- charges ----------------------------------------------------------------------

    async def create_payment_intent(self, req: ChargeRequest) -> ChargeResult:
        payment_method = req.payment_method.id or await self._default_payment_method(req)
        params = payment_intent_params(req, payment_method)
        try:
            intent = await self._client.v1.payment_intents.create_async(
                params, {"idempotency_key": req.idempotency_key}
            )
        except stripe.CardError as err:
            return declined(err)
        except stripe.StripeError as err:
            raise translate_error(err) from err
        return charge_result(intent.to_dict())

    async def _default_payment_method(self, req: ChargeRequest) -> str:
        """No method named: the customer's default (see `_default_card_id`), which is where an
        updated card goes, as Stripe Billing retries do."""
        if not req.customer.id:
            raise StripeRequestRejected("neither a payment method nor a customer to charge")
        return await self._default_card_id(req.customer.id)

    async def _default_card_id(self, customer_id: str) -> str:
        """The customer's default: `invoice_settings.default_payment_method`, else the legacy
        `default_source` (a `card_...` or `src_...`, which PaymentIntents also charge)."""
        try:
            customer = (await self._client.v1.customers.retrieve_async(customer_id)).to_dict()
        except stripe.StripeError as err:
            raise translate_error(err) from err
        default = (customer.get("invoice_settings") or {}).get("default_payment_method")
        default_id = object_id(default) or object_id(customer.get("default_source"))
        if not default_id:
            raise StripeRequestRejected(
                "no payment method named and the customer has no default payment method",
                param="payment_method",
            )
        return default_id

    async def find_charge(self, req: ChargeRequest) -> ChargeResult | None:
        """The PaymentIntent this attempt created, by its metadata (`recovery_id`, `attempt`).
        A customer's PaymentIntents are listed (consistent at once, newest first, the first
        `_LOOKUP_SCAN` of them); without a customer Stripe's Search API is asked, which
        lags writes by up to a minute (docs.stripe.com/search#data-freshness): the workflow
        waits before it looks. Not used in India, where Search is not offered."""
        try:
            if req.customer.id:
                page = await self._client.v1.payment_intents.list_async(
                    {"customer": req.customer.id, "limit": 100, "expand": ["data.latest_charge"]}
                )
                intents = page.data
                while page.has_more and len(intents) < _LOOKUP_SCAN:
                    page = await self._client.v1.payment_intents.list_async(
                        {
                            "customer": req.customer.id,
                            "limit": 100,
                            "starting_after": intents[-1].id,
                            "expand": ["data.latest_charge"],
                        }
                    )
                    intents = [*intents, *page.data]
            else:
                found = await self._client.v1.payment_intents.search_async(
                    {"query": attempt_search_query(req), "expand": ["data.latest_charge"]}
                )
                intents = found.data
        except stripe.StripeError as err:
            raise translate_error(err) from err
        for intent in (i.to_dict() for i in intents):
            if made_by(intent, req):
                return charge_result(intent)
        return None

    async def resolve_card(self, customer: Customer, payment_method: PaymentMethod) -> CardIdentity:
        """The card a charge would use, keyed by Stripe's card `fingerprint` (the same for
        every PaymentMethod or source of one card number in the account)."""
        method_id = payment_method.id
        if not method_id:
            if not customer.id:
                raise StripeRequestRejected("neither a payment method nor a customer to charge")
            method_id = await self._default_card_id(customer.id)
        try:
            if method_id.startswith(("card_", "src_")) and customer.id:
                source = await self._client.v1.customers.payment_sources.retrieve_async(
                    customer.id, method_id
                )
                card: Mapping[str, Any] = source.to_dict()
                if card.get("object") == "source":  # a Sources API source: its card is nested
                    card = card.get("card") or {}
            else:
                found = await self._client.v1.payment_methods.retrieve_async(method_id)
                card = found.to_dict().get("card") or {}
        except stripe.StripeError as err:
            raise translate_error(err) from err
        fingerprint = clip(card.get("fingerprint"))
        return CardIdentity(
            key=f"stripe:fingerprint:{fingerprint}" if fingerprint else f"stripe:pm:{method_id}",
            brand=clip(card.get("brand")),
            payment_method_id=method_id,
        )

    async def retrieve_payment_intent(self, psp_payment_id: str) -> ChargeResult:
        try:
            intent = await self._client.v1.payment_intents.retrieve_async(
                psp_payment_id, {"expand": ["latest_charge"]}
            )
        except stripe.StripeError as err:
            raise translate_error(err) from err
        return charge_result(intent.to_dict())

    async def refund_payment(
        self, psp_payment_id: str, *, amount: int | None, idempotency_key: str
    ) -> RefundResult:
        params: RefundCreateParams = {"payment_intent": psp_payment_id}
        if amount is not None:
            params["amount"] = amount
        try:
            refund = (
                await self._client.v1.refunds.create_async(
                    params, {"idempotency_key": idempotency_key}
                )
            ).to_dict()
        except stripe.StripeError as err:
            raise translate_error(err) from err
        return refund_result(refund, amount)

    async def retrieve_refund(self, psp_refund_id: str) -> RefundResult:
        try:
            refund = (await self._client.v1.refunds.retrieve_async(psp_refund_id)).to_dict()
        except stripe.StripeError as err:
            raise translate_error(err) from err
        return refund_result(refund)

    # ---- hosted page --------------------------------------------------------------------

    async def create_checkout_session(self, req: CheckoutRequest) -> Checkout:
        params = checkout_session_params(req, time.time())
        try:
            session = (
                await self._client.v1.checkout.sessions.create_async(
                    params, {"idempotency_key": req.idempotency_key}
                )
            ).to_dict()
        except stripe.StripeError as err:
            raise translate_error(err) from err
        session_id, url = session.get("id"), session.get("url")
        if not isinstance(session_id, str) or not isinstance(url, str):
            raise StripeUnexpectedResponse("Stripe returned a Checkout Session without id or url")
        return Checkout(psp_checkout_id=session_id, url=url)

    async def close_checkout(self, psp_checkout_id: str) -> None:
        """Expire the Checkout Session (Stripe keeps one open for 24 h by default). A session
        that is no longer `open` (complete or expired) takes no more money: done."""
        try:
            await self._client.v1.checkout.sessions.expire_async(psp_checkout_id)
        except stripe.InvalidRequestError as err:
            session = await self._client.v1.checkout.sessions.retrieve_async(psp_checkout_id)
            if session.status == "open":
                raise translate_error(err) from err
        except stripe.StripeError as err:
            raise translate_error(err) from err
