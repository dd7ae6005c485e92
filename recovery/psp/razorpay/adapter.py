"""The Razorpay adapter: recurring charges on a saved token, Payment Links, refunds. What it
sends and how Razorpay's answers read is in `transformers`.

Built on the official `razorpay` SDK (``razorpay.Client``), which is synchronous. Each
operation runs off the event loop with ``asyncio.to_thread`` (a thread of the loop's default
executor), so a slow Razorpay never blocks the loop, and with a ``razorpay.Client`` of its
own, made for it and closed after it (`_Connection`): the client's ``requests.Session`` is
not documented as thread-safe (psf/requests#2766) and we keep the last response on the
client to read error bodies, so no client is ever shared between threads. A client costs
microseconds to make; the operation's own chain of calls shares one connection. An awaiting
task that is cancelled does not stop the HTTP call already running in its thread; the call
ends at ``timeout`` at the latest, and idempotency (below) makes the activity's retry safe
either way.

Flow of a charge (Razorpay "Recurring Payments - Cards/eMandate/UPI: 3. Create Subsequent
Payments", razorpay.com/docs/api/payments/recurring-payments/*/create-subsequent-payments,
and the SDK's ``documents/card.md``):

1. ``GET /v1/orders?receipt=<ref>``: an order for this attempt may exist already (a retried
   activity). If it has a payment, that payment's result is returned and nothing is charged
   (``GET /v1/orders/{id}/payments``).
2. ``GET /v1/customers/{customer_id}/tokens/{token_id}``: a mandate that is not
   ``confirmed``, expired, or below the amount is not debited (`mandate_refusal`).
3. ``POST /v1/orders`` (amount, currency, ``receipt`` = ``ref``, ``payment_capture`` true,
   notes) when there is no order yet.
4. ``GET /v1/customers/{id}``: ``contact`` is mandatory on a recurring payment and our
   `Customer` carries no phone number, so contact (and the email, when the event had none)
   come from the Razorpay customer that owns the token.
5. ``POST /v1/payments/create/recurring`` (email, contact, amount, currency, order_id,
   customer_id, token, ``recurring: "1"``, description, notes). Razorpay answers
   ``{razorpay_payment_id, razorpay_order_id, razorpay_signature}``; the signature
   (HMAC-SHA256 of ``order_id|payment_id`` with the key secret) is checked, then
   ``GET /v1/payments/{id}`` gives the status. A declined token may instead be answered
   with HTTP 400 and an ``error`` object (reason, and the payment id in ``metadata``):
   that is a failed *result* carrying the codes, not an exception.

Idempotency: Razorpay has no idempotency header for these calls, so the attempt's
``idempotency_key`` becomes the order's ``receipt`` (`reference_for`: the key itself when it
fits Razorpay's 40 characters, else a deterministic hash of it), and the order is looked up
by receipt before anything is created. One order per key, one payment per order. An order
that counts an attempt (``attempts`` > 0) but whose payment Razorpay does not list yet makes
the retry wait (a transient error) instead of charging again. A new order is charged only once
the receipt lookup lists it (Razorpay's listing may lag a new order; a retry that could not
see it would make a second one and charge that too). Limits: ``receipt`` is not
unique at Razorpay, so two executions of the same attempt running *at the same time* could
both find nothing and both create an order (Temporal runs one execution of an activity at a
time; they only overlap when a timed-out execution is still running, which is why a charge's
whole chain of calls runs within ``charge_budget``, below the activity's start-to-close).
A recurring request whose answer was lost *and* that Razorpay has not yet counted on its
order when the retry looks would be sent again. An attempt whose tries all failed is settled
by `find_charge` (its order's payment, by receipt), never by charging again. Refunds use
Razorpay's ``X-Refund-Idempotency`` header; Payment Links use ``reference_id``, which
Razorpay itself keeps unique.

Errors: connection errors, timeouts, HTTP 429 and 5xx and ``SERVER_ERROR`` /
``GATEWAY_ERROR`` error responses raise `RazorpayTransientError` (a `TransientPSPError`:
the activity retries with the same key). Requests Razorpay refuses (a missing or invalid
field, an unknown id) raise `RazorpayRequestError`, wrong credentials `RazorpayAuthError`:
retrying those cannot help. The SDK's own exceptions keep only the description, so the
HTTP status and the full ``error`` object are read from the response itself (a response
hook on the session).

Nothing here logs a request body, a webhook payload or a secret; log lines carry ids only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

import razorpay
import requests
from razorpay.errors import BadRequestError, GatewayError, ServerError

from recovery.constants import CHARGE_TRY_BUDGET
from recovery.models import (
    CardIdentity,
    ChargeRequest,
    ChargeResult,
    Customer,
    Failure,
    PaymentMethod,
)
from recovery.psp.base import Checkout, CheckoutRequest, RefundResult
from recovery.psp.razorpay.transformers import (
    RazorpayAuthError,
    RazorpayConfigError,
    RazorpayErrorBody,
    RazorpayIdempotencyConflict,
    RazorpayRequestError,
    RazorpayResponseError,
    RazorpayTransientError,
    card_identity,
    charge_result,
    classify_error,
    failure_from_error,
    is_payment_failure,
    items,
    lower,
    mandate_refusal,
    order_body,
    payment_link_body,
    pick_payment,
    recurring_payment_body,
    reference_for,
    refund_body,
    refund_idempotency_header,
    refund_result,
    signed_by,
    text,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Connection:
    """One operation's SDK client and deadline, used by one thread and closed after it. It
    remembers the last HTTP response it got (the SDK's exceptions drop the error body)."""

    def __init__(
        self,
        key_id: str,
        key_secret: str,
        api_base: str | None,
        timeout: float,
        budget: float | None,
    ) -> None:
        self.session = requests.Session()
        self.session.hooks["response"].append(self._remember)
        options: dict[str, Any] = {"base_url": api_base} if api_base else {}
        self.client = razorpay.Client(session=self.session, auth=(key_id, key_secret), **options)
        self.client.set_app_details({"title": "payment-recovery", "version": "1"})
        self.last_response: requests.Response | None = None
        self._timeout = timeout
        self.deadline = time.monotonic() + budget if budget is not None else None

    def _remember(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.last_response = response

    def timeout(self) -> float:
        """The timeout of the next HTTP call: `timeout`, or what is left of the budget."""
        if self.deadline is None:
            return self._timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RazorpayTransientError("the charge's time budget is spent")
        return min(self._timeout, left)

    def call(
        self, operation: str, method: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        """One SDK call (`method` of `self.client`); every failure as our exception types."""
        self.last_response = None
        try:
            result = method(*args, timeout=self.timeout(), **kwargs)
        except requests.Timeout as exc:
            raise RazorpayTransientError(f"Razorpay {operation} timed out") from exc
        except requests.ConnectionError as exc:
            raise RazorpayTransientError(f"Razorpay {operation}: connection failed") from exc
        except (BadRequestError, GatewayError, ServerError, requests.RequestException) as exc:
            if self.last_response is None and isinstance(exc, requests.RequestException):
                # No answer at all and not a network failure: a malformed URL or similar.
                raise RazorpayRequestError(
                    f"Razorpay {operation} could not be sent: {type(exc).__name__}"
                ) from exc
            error = RazorpayErrorBody.from_response(self.last_response)
            failure = classify_error(operation, error)
            log.warning(
                "razorpay call failed",
                extra={
                    "operation": operation,
                    "http_status": error.http_status,
                    "error_code": error.code,
                    "error_reason": error.reason,
                },
            )
            raise failure from exc
        if not isinstance(result, dict):
            raise RazorpayResponseError(f"Razorpay {operation} answered a non-object")
        return result


class RazorpayAdapter:
    """`PSPAdapter` for Razorpay. See the module docstring for the flow and its limits."""

    name = "razorpay"
    idempotency_window: timedelta | None = None  # receipts: looked up by the adapter itself

    def __init__(
        self,
        key_id: str,
        key_secret: str,
        api_base: str | None = None,
        *,
        timeout: float = 30.0,
        charge_budget: float = CHARGE_TRY_BUDGET.total_seconds() - 10,
    ) -> None:
        """`api_base`: e.g. ``http://127.0.0.1:8123`` for a local fake; the SDK appends
        ``/v1/...`` itself, so a trailing ``/v1`` is dropped. `timeout`: seconds per HTTP
        request (the SDK sets none of its own); `charge_budget`: seconds for a charge's
        whole chain of calls (below the charge activity's own budget)."""
        if not key_id or not key_secret:
            raise RazorpayConfigError("Razorpay needs a key id and a key secret")
        self._key_id = key_id
        self._key_secret = key_secret
        base = (api_base or "").rstrip("/")
        self._api_base = base.removesuffix("/v1") or None
        self._timeout = timeout
        self._charge_budget = charge_budget

    def __repr__(self) -> str:  # never the secrets
        return f"RazorpayAdapter(key_id={self._key_id!r}, api_base={self._api_base!r})"

    def close(self) -> None:
        """Nothing to release: each operation closes its own client when it ends."""

    async def _in_thread(
        self, operation: Callable[[_Connection], T], *, budget: float | None = None
    ) -> T:
        """Run `operation` in a thread (`asyncio.to_thread`) with a client of its own; with
        a `budget`, no call starts after it and none outlasts it, counted from when the
        thread starts."""

        def run() -> T:
            rzp = _Connection(self._key_id, self._key_secret, self._api_base, self._timeout, budget)
            try:
                return operation(rzp)
            finally:
                rzp.session.close()

        return await asyncio.to_thread(run)

    # ---- charges ---------------------------------------------------------------------------

    async def create_payment_intent(self, req: ChargeRequest) -> ChargeResult:
        """Charge the saved token once per ``req.idempotency_key`` (see module docstring),
        the whole chain within `charge_budget`: the thread has stopped before the
        activity's start-to-close ends and its retry starts (tries never overlap)."""
        return await self._in_thread(lambda rzp: self._charge(rzp, req), budget=self._charge_budget)

    async def find_charge(self, req: ChargeRequest) -> ChargeResult | None:
        """The payment of this attempt's order (found by its receipt), or None when the
        attempt made no payment. An order that counts a payment Razorpay does not list yet
        raises a transient error: ask again later."""

        def find(rzp: _Connection) -> ChargeResult | None:
            _, payment = self._existing_order(rzp, reference_for(req.idempotency_key), req)
            return charge_result(payment) if payment is not None else None

        return await self._in_thread(find)

    async def retrieve_payment_intent(self, psp_payment_id: str) -> ChargeResult:
        return await self._in_thread(
            lambda rzp: charge_result(
                rzp.call("payment fetch", rzp.client.payment.fetch, psp_payment_id)
            )
        )

    async def token_refusal(self, customer_id: str, token_id: str, amount: int) -> Failure | None:
        """Why the token cannot be debited now (`mandate_refusal`), or None."""
        return await self._in_thread(
            lambda rzp: self._token_refusal(rzp, customer_id, token_id, amount)
        )

    def _token_refusal(
        self, rzp: _Connection, customer_id: str, token_id: str, amount: int
    ) -> Failure | None:
        token = rzp.call("token fetch", rzp.client.token.fetch, customer_id, token_id)
        return mandate_refusal(token, amount)

    def _charge(self, rzp: _Connection, req: ChargeRequest) -> ChargeResult:
        customer_id = req.customer.id
        token = req.payment_method.id
        if not customer_id:
            raise RazorpayRequestError(
                "a Razorpay charge needs the Razorpay customer id (cust_...)", field="customer.id"
            )
        if not token:
            raise RazorpayRequestError(
                "a Razorpay charge needs the saved token id (token_...)",
                field="payment_method.id",
            )
        receipt = reference_for(req.idempotency_key)
        order, payment = self._existing_order(rzp, receipt, req)
        if payment is not None:
            log.info(
                "razorpay charge replayed",
                extra={"order_id": order and order.get("id"), "payment_id": payment.get("id")},
            )
            return charge_result(payment)
        # Checked before any order, so such an attempt charges nothing and says what the
        # customer must do.
        if (refusal := self._token_refusal(rzp, customer_id, token, req.amount)) is not None:
            log.info("razorpay token cannot be charged", extra={"code": refusal.decline_code})
            return ChargeResult(status="failed", failure=refusal)
        if order is None:
            order = rzp.call("order create", rzp.client.order.create, order_body(req, receipt))
            self._await_listed(rzp, receipt, str(order["id"]))
        return self._charge_order(rzp, order, req, customer_id)

    def _orders_with_receipt(self, rzp: _Connection, receipt: str) -> list[dict[str, Any]]:
        found = rzp.call("order lookup", rzp.client.order.all, {"receipt": receipt, "count": 100})
        return [o for o in items(found) if o.get("receipt") == receipt]

    def _await_listed(self, rzp: _Connection, receipt: str, order_id: str) -> None:
        """Charge a new order only once the receipt lookup lists it. A retry after a lost
        answer knows the attempt's order by that lookup alone, and Razorpay's listing may lag
        a new order: one charged before it is listed could be charged again on a second
        order. Not listed within the budget (or `timeout`): a transient error, and nothing
        was charged on it."""
        give_up = rzp.deadline if rzp.deadline is not None else time.monotonic() + self._timeout
        pause = 0.1
        while not any(o.get("id") == order_id for o in self._orders_with_receipt(rzp, receipt)):
            if time.monotonic() + pause >= give_up:
                raise RazorpayTransientError(
                    f"Razorpay order {order_id} is not listed by its receipt yet"
                )
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

    def _existing_order(
        self, rzp: _Connection, receipt: str, req: ChargeRequest
    ) -> tuple[dict[str, Any] | None, Mapping[str, Any] | None]:
        """(the attempt's order, its deciding payment), either may be None."""
        orders = sorted(
            self._orders_with_receipt(rzp, receipt), key=lambda o: int(o.get("created_at") or 0)
        )
        for order in orders:
            if order.get("amount") != req.amount or lower(order.get("currency")) != req.currency:
                raise RazorpayIdempotencyConflict(
                    f"idempotency key {req.idempotency_key!r} was used for order {order.get('id')}"
                    " with a different amount or currency",
                    field="idempotency_key",
                )
        for order in orders:
            order_id = str(order["id"])
            payment = pick_payment(
                items(rzp.call("order payments", rzp.client.order.payments, order_id))
            )
            if payment is not None:
                return order, payment
            if int(order.get("attempts") or 0) > 0 or order.get("status") in ("attempted", "paid"):
                # A payment was made on this order but Razorpay does not list it yet: wait
                # for it (the activity retries) rather than charge a second time.
                raise RazorpayTransientError(
                    f"Razorpay order {order_id} has a payment attempt that is not listed yet"
                )
        return (orders[0] if orders else None), None

    def _charge_order(
        self, rzp: _Connection, order: Mapping[str, Any], req: ChargeRequest, customer_id: str
    ) -> ChargeResult:
        order_id = str(order["id"])
        customer = rzp.call("customer fetch", rzp.client.customer.fetch, customer_id)
        body = recurring_payment_body(req, order_id, customer)
        try:
            created = rzp.call("recurring payment", rzp.client.payment.createRecurring, body)
        except RazorpayRequestError as exc:
            if exc.error is not None and is_payment_failure(exc.error):
                payment_id = text(exc.error.metadata.get("payment_id"))
                log.info(
                    "razorpay recurring payment declined",
                    extra={"order_id": order_id, "payment_id": payment_id},
                )
                return ChargeResult(
                    status="failed",
                    psp_payment_id=payment_id,
                    failure=failure_from_error(exc.error),
                )
            raise
        payment_id = text(created.get("razorpay_payment_id"))
        if not payment_id:
            raise RazorpayResponseError("Razorpay's recurring payment answer has no payment id")
        signature = text(created.get("razorpay_signature"))
        if signature is not None and not self.verify_payment_signature(
            order_id=order_id, payment_id=payment_id, signature=signature
        ):
            raise RazorpayResponseError("Razorpay's recurring payment answer has a bad signature")
        return charge_result(rzp.call("payment fetch", rzp.client.payment.fetch, payment_id))

    def verify_payment_signature(self, *, order_id: str, payment_id: str, signature: str) -> bool:
        """Checkout/recurring answer: ``razorpay_signature`` = hex HMAC-SHA256 of
        ``order_id|payment_id`` keyed with the key secret (constant-time compare)."""
        return signed_by(self._key_secret, f"{order_id}|{payment_id}".encode(), signature)

    async def resolve_card(self, customer: Customer, payment_method: PaymentMethod) -> CardIdentity:
        """The card behind the saved token (``GET /v1/customers/{id}/tokens/{token_id}``): a
        Razorpay charge always names its token, so there is no default to look up."""
        customer_id, token_id = customer.id, payment_method.id
        if not customer_id or not token_id:
            raise RazorpayRequestError(
                "a Razorpay charge needs the customer id and the saved token id",
                field="payment_method.id",
            )
        token = await self._in_thread(
            lambda rzp: rzp.call("token fetch", rzp.client.token.fetch, customer_id, token_id)
        )
        return card_identity(token, token_id)

    # ---- refunds ---------------------------------------------------------------------------

    async def refund_payment(
        self, psp_payment_id: str, *, amount: int | None, idempotency_key: str
    ) -> RefundResult:
        """Refund once per `idempotency_key`, by Razorpay's own refund idempotency: the
        ``X-Refund-Idempotency`` header (`refund_idempotency_header`) with the same body on
        every try answers the first refund; one still being processed is a 409 (transient:
        ask again). `amount` None refunds the whole (remaining) amount."""
        body = refund_body(amount, idempotency_key)
        headers = {"X-Refund-Idempotency": refund_idempotency_header(idempotency_key)}

        refund = await self._in_thread(
            lambda rzp: rzp.call(
                "refund create", rzp.client.payment.refund, psp_payment_id, body, headers=headers
            )
        )
        return refund_result(refund)

    async def retrieve_refund(self, psp_refund_id: str) -> RefundResult:
        """``GET /v1/refunds/{id}``: a normal refund is ``pending`` until the bank has it
        (Razorpay: 5-7 working days), then ``processed`` (or ``failed``)."""
        refund = await self._in_thread(
            lambda rzp: rzp.call("refund fetch", rzp.client.refund.fetch, psp_refund_id)
        )
        return refund_result(refund)

    # ---- payment links ---------------------------------------------------------------------

    async def create_checkout_session(self, req: CheckoutRequest) -> Checkout:
        """A Razorpay Payment Link, once per ``req.idempotency_key`` (its ``reference_id``,
        which Razorpay keeps unique: a duplicate is answered with the existing link)."""
        reference_id = reference_for(req.idempotency_key)
        body = payment_link_body(req, reference_id, time.time())
        link = await self._in_thread(lambda rzp: self._payment_link(rzp, body, reference_id))
        url = text(link.get("short_url"))
        if not url:
            raise RazorpayResponseError("Razorpay's payment link has no short_url")
        return Checkout(psp_checkout_id=str(link["id"]), url=url)

    def _payment_link(
        self, rzp: _Connection, body: dict[str, Any], reference_id: str
    ) -> dict[str, Any]:
        try:
            return rzp.call("payment link create", rzp.client.payment_link.create, body)
        except RazorpayAuthError:
            raise
        except RazorpayRequestError:
            # Razorpay rejects a reference_id it has seen; its wording is not documented, so
            # any rejection is followed by a look-up, and only an existing link answers it.
            found = rzp.call(
                "payment link lookup", rzp.client.payment_link.all, {"reference_id": reference_id}
            )
            for link in items(found, "payment_links"):
                if link.get("reference_id") == reference_id:
                    return link
            raise

    async def close_checkout(self, psp_checkout_id: str) -> None:
        """Cancel the Payment Link (they never expire by themselves unless `expire_by` is
        set). A link that is no longer `created` (paid, cancelled, expired) takes no more
        money: closing it again is done."""

        def cancel(rzp: _Connection) -> None:
            try:
                rzp.call("payment link cancel", rzp.client.payment_link.cancel, psp_checkout_id)
            except RazorpayRequestError:
                link = rzp.call(
                    "payment link fetch", rzp.client.payment_link.fetch, psp_checkout_id
                )
                if link.get("status") == "created":
                    raise

        await self._in_thread(cancel)
