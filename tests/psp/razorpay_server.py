"""A local, stateful fake of the Razorpay API endpoints our adapter uses (never the internet).

Start it with `fake_razorpay()`::

    with fake_razorpay() as rzp:
        adapter = RazorpayAdapter(rzp.key_id, rzp.key_secret, api_base=rzp.base_url)
        ...
        assert len(rzp.payments) == 1

It runs a `ThreadingHTTPServer` on a free 127.0.0.1 port in a daemon thread, checks HTTP basic
auth (key id / key secret) on every request, and answers with entities shaped as Razorpay
documents them (order, payment, refund, payment link, customer, ``collection``) and with its
error envelope ``{"error": {"code", "description", "field", "source", "step", "reason",
"metadata"}}``. Endpoints::

    POST /v1/orders                      GET /v1/orders?receipt=&count=&skip=
    GET  /v1/orders/{id}                 GET /v1/orders/{id}/payments
    POST /v1/payments/create/recurring   GET /v1/payments/{id}
    POST /v1/payments/{id}/refund        GET /v1/payments/{id}/refunds
    GET  /v1/refunds/{id}
    GET  /v1/customers/{id}
    POST /v1/payment_links               GET /v1/payment_links?reference_id=&payment_id=
    GET  /v1/payment_links/{id}

Outcomes of a recurring payment are scripted by the token id:

- ``token_ok`` (and any token not listed): captured (authorized when the order was created
  with ``payment_capture`` false);
- ``token_insufficient``: declined, HTTP 400, reason ``insufficient_funds`` (Razorpay "Card
  recurring payments: Error Codes"), the failed payment named in ``error.metadata``;
- ``token_declined``: the same with reason ``card_declined``;
- ``token_failed_async``: answered 200, but the payment entity is ``failed``
  (``card_declined``) when fetched;
- ``token_pending``: stays ``created`` (file-based banks); ``token_authorized``: stays
  ``authorized``. Move them on with `FakeRazorpay.set_payment_status`;
- ``token_5xx``: the first request with it is answered 500 ``SERVER_ERROR`` and changes
  nothing; later ones succeed. ``token_429``: the same with 429;
- ``token_5xx_after``: the first request creates the (captured) payment but is answered 500,
  as if the answer were lost; later requests behave like ``token_ok``;
- ``token_slow``: creates the payment, then answers only after ``slow_seconds``.

Recurring debits are not final at once, as in production: Razorpay sends the customer a
pre-debit notification, attempts the debit in the 25th hour after it, may retry, and says
"it may take between 24-36 hours for the subsequent payment to reflect" ("Create Subsequent
Payments", razorpay.com/docs/payments/payment-gateway/s2s-integration/recurring-payments/
upi/subsequent-payments; the RBI's e-mandate rules ask the same 24 h notice for cards).
So a debit stays ``created`` for ``debit_delay`` seconds (default `RECURRING_DEBIT_DELAY`,
25 h) of the fake's own clock, then reaches its scripted outcome (captured, or ``failed``
for ``token_failed_async``). The clock is real time plus whatever `advance` added, so a
test on a time-skipping Temporal server moves the fake's time along with the workflow's.
``debit_delay=0`` gives the instant outcomes tests of other behaviours rely on.
``GET /v1/orders/{id}/payments`` does not list a payment still ``created`` (the order counts
it in ``attempts``), as Razorpay's listing does not. ``GET /v1/orders?receipt=`` lists a new
order only ``order_list_lag`` seconds after it was created (a search index behind the
writes; ``GET /v1/orders/{id}`` has it at once).

Any endpoint can also be made to fail with `FakeRazorpay.inject` (status, error code, a raw
non-JSON body, a delay, a dropped connection, before or after the request takes effect).

Customers: ``GET /v1/customers/{id}`` knows the customers added with `add_customer`; with
``auto_customers`` (the default) any other ``cust_...`` id is created on first sight with
``<id>@example.com`` and contact ``+919000090000``.

Payment Links live as Razorpay's do ("Payment Link States", razorpay.com/docs/payments/
payment-links/states): ``created`` until paid, cancelled (``POST .../cancel``, only while
``created``) or expired (its ``expire_by`` reached on the fake's clock); a link that
``accept_partial`` (`update_payment_link`, as the merchant may in the Dashboard) takes part
payments and is ``partially_paid`` until the rest is paid, and cannot be cancelled meanwhile.

For end-to-end tests: `pay_payment_link` plays the customer paying a link, in full or in
part (and returns the signed callback parameters), `register_token` plays a customer
registering a new card for recurring payments (Razorpay's authorisation transaction),
`set_payment_status` moves a payment on, and `signed_webhook` builds a webhook body from the
stored entities with its ``X-Razorpay-Signature`` and ``X-Razorpay-Event-Id`` headers, ready
to POST to ``/v1/webhooks/razorpay``. The Payment Link events Razorpay sends
(razorpay.com/docs/webhooks/payment-links: ``payment_link.paid``, ``.partially_paid``,
``.cancelled``, ``.expired``; and ``payment.captured`` for each payment made on a link) are
emitted as they happen, their bodies taken then; `take_webhooks` hands them over signed, to
deliver to our route (directly or through `tests/psp/webhook_delivery.py`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import string
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

_ALPHABET = string.ascii_letters + string.digits
_CAPTURED_LIKE = ("token_ok", "token_5xx", "token_429", "token_5xx_after", "token_slow")

DECLINES: dict[str, dict[str, str]] = {
    "token_insufficient": {
        "code": "BAD_REQUEST_ERROR",
        "description": (
            "Your payment could not be completed due to insufficient account balance. "
            "Try another card or payment method."
        ),
        "source": "customer",
        "step": "payment_authorization",
        "reason": "insufficient_funds",
    },
    "token_declined": {
        "code": "BAD_REQUEST_ERROR",
        "description": "Your payment has been declined by your bank.",
        "source": "bank",
        "step": "payment_authorization",
        "reason": "card_declined",
    },
}
"""Tokens whose recurring payment is declined in the HTTP answer (400 + error object)."""

RECURRING_DEBIT_DELAY = 25 * 3600.0
"""Seconds a recurring debit stays ``created``: the 24 h pre-debit notice, then the debit
"attempted in the 25th hour" (Razorpay, "Create Subsequent Payments", see above)."""

NO_ANSWER_ONCE: dict[str, dict[str, str]] = {
    "token_timeout_once": {
        "code": "BAD_REQUEST_ERROR",
        "description": "Payment was not completed on time.",
        "source": "customer",
        "step": "payment_authentication",
        "reason": "payment_timed_out",
    },
    "token_bank_error_once": {
        "code": "BAD_REQUEST_ERROR",
        "description": "Your payment could not be completed due to a technical issue at the bank.",
        "source": "bank",
        "step": "payment_authorization",
        "reason": "bank_technical_error",
    },
}
"""Tokens (ids starting with these) whose first debit fails because the bank did not answer
in time (the payment is `failed`, answered 200); later debits succeed. Razorpay may still
authorise such a payment late ("Late Authorisation": it polls the bank for 3 days):
`late_authorise` does that."""

ASYNC_FAILURE = {
    "code": "BAD_REQUEST_ERROR",
    "description": "Your payment has been declined by your bank.",
    "source": "bank",
    "step": "payment_authorization",
    "reason": "card_declined",
}


def new_id(prefix: str) -> str:
    """A Razorpay-looking id: ``<prefix>_`` + 14 alphanumerics."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(14))


def sign(message: bytes, secret: str) -> str:
    """Hex HMAC-SHA256, as Razorpay signs webhooks and payment answers."""
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def error_body(
    description: str,
    *,
    code: str = "BAD_REQUEST_ERROR",
    field: str | None = None,
    source: str = "NA",
    step: str = "NA",
    reason: str = "NA",
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "description": description,
            "field": field,
            "source": source,
            "step": step,
            "reason": reason,
            "metadata": metadata or {},
        }
    }


def _validation(description: str, field: str) -> tuple[int, dict[str, Any]]:
    return 400, error_body(
        description,
        field=field,
        source="business",
        step="payment_initiation",
        reason="input_validation_failed",
    )


def _not_found() -> tuple[int, dict[str, Any]]:
    return 400, error_body("The id provided does not exist", field="id")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int = 500
    code: str = "SERVER_ERROR"
    description: str = "The server encountered an error. The incident has been reported to admins."
    raw_body: bytes | None = None
    delay: float = 0.0
    after: bool = False
    drop: bool = False
    times: int = 1


@dataclass
class _Reply:
    status: int
    body: Any = None
    raw: bytes | None = None
    delay: float = 0.0
    drop: bool = False


@dataclass
class FakeRazorpay:
    """The fake's state and controls. All entity dicts are Razorpay-shaped and live."""

    key_id: str = "rzp_test_FakeKey00000001"
    key_secret: str = "fake_key_secret"
    webhook_secret: str = "fake_webhook_secret"
    auto_customers: bool = True
    slow_seconds: float = 2.0
    refund_status: str = "processed"
    """Status given to new refunds: ``processed`` or ``pending``."""
    debit_delay: float = RECURRING_DEBIT_DELAY
    """Seconds of the fake's clock a recurring debit stays ``created`` before its outcome."""
    order_list_lag: float = 0.0
    """Seconds (of real time) before ``GET /v1/orders?receipt=`` lists a new order."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments_by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_links: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Saved cards by token id (`add_token`); any other ``token_...`` is a Visa card of its own."""
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self._faults: list[Fault] = []
        self._spent_tokens: set[str] = set()
        self._payment_capture: dict[str, bool] = {}
        self._clock_offset = 0.0
        self._listed_from: dict[str, float] = {}  # order id -> when the search lists it
        self._refund_keys: dict[str, tuple[str, dict[str, Any]]] = {}  # key -> (refund, body)
        # payment id -> (when, final status, its error if it fails)
        self._due: dict[str, tuple[float, str, dict[str, str] | None]] = {}
        self._emitted: list[tuple[str, bytes]] = []  # (event, body) not taken yet
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Razorpay server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-razorpay",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # ---- views for assertions --------------------------------------------------------------

    @property
    def payments(self) -> list[dict[str, Any]]:
        """Every payment created, oldest first (failed ones included)."""
        with self.lock:
            return list(self.payments_by_id.values())

    def captured_payments(self) -> list[dict[str, Any]]:
        return [p for p in self.payments if p["status"] in ("captured", "refunded")]

    def requests_to(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        pattern = re.compile(path_pattern)
        with self.lock:
            return [
                r
                for r in self.requests
                if r.method == method.upper() and pattern.fullmatch(r.path) is not None
            ]

    # ---- controls --------------------------------------------------------------------------

    def now(self) -> float:
        """The fake's clock: real time plus what `advance` added."""
        return time.time() + self._clock_offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock on; debits now due reach their outcome."""
        with self.lock:
            self._clock_offset += seconds
            self._settle_due()

    def _settle_due(self) -> None:
        now = self.now()
        for payment_id, (when, status, error) in list(self._due.items()):
            if when <= now:
                del self._due[payment_id]
                if self.payments_by_id[payment_id]["status"] == "created":
                    self.set_payment_status(payment_id, status, error=error)
        for link in self.payment_links.values():
            due = link["expire_by"] and link["expire_by"] <= now
            if due and link["status"] in ("created", "partially_paid"):
                link["status"] = "expired"
                link["expired_at"] = link["updated_at"] = int(now)
                self._emit("payment_link.expired", payment_link_id=link["id"])

    def _emit(self, event: str, **entity_ids: str | None) -> None:
        """Razorpay sends `event` now: its body is what the entities are now."""
        self._emitted.append((event, self.webhook_body(event, **entity_ids)))

    def take_webhooks(self, secret: str | None = None) -> list[tuple[str, bytes, dict[str, str]]]:
        """(event, body, headers) of every event emitted since the last call, signed with
        `secret` (default: this fake's ``webhook_secret``), in the order they happened."""
        with self.lock:
            self._settle_due()
            emitted, self._emitted = self._emitted, []
        return [
            (
                event,
                body,
                {
                    "Content-Type": "application/json",
                    "X-Razorpay-Signature": sign(body, secret or self.webhook_secret),
                    "X-Razorpay-Event-Id": new_id("evt"),
                },
            )
            for event, body in emitted
        ]

    def add_token(
        self,
        token_id: str,
        *,
        network: str = "Visa",
        card_id: str | None = None,
        method: str = "card",
        status: str | None = None,
        max_amount: int | None = None,
        expired_at: int | None = None,
    ) -> dict[str, Any]:
        """A saved token, shaped like Razorpay's token entity: a card (`card_id`, Razorpay's
        ``card_...``, is shared by the tokens of one card), or with `method` ``upi``,
        ``emandate`` or ``nach`` a mandate; its debits carry its method. `status` is its
        mandate's (``recurring_details.status``: ``confirmed``, ``paused``, ``cancelled``,
        ``rejected``, ...), `max_amount` the mandate's limit, `expired_at` its end (unix
        time, on the fake's clock). A debit on a token that is not ``confirmed``, over its
        limit or expired is refused with a 400, as Razorpay says it "will fail" ("Token
        States", razorpay.com/docs/api/payments/recurring-payments/upi/tokens); the error's
        wording is the fake's own."""
        token = {
            "id": token_id,
            "entity": "token",
            "token": token_id.removeprefix("token_"),
            "method": method,
            "recurring": True,
            "card": {
                "entity": "card",
                "name": "Gaurav Kumar",
                "last4": "1111",
                "network": network,
                "type": "credit",
                "issuer": None,
                "international": False,
            },
        }
        if card_id is not None:
            token["card"]["id"] = card_id
        if status is not None:
            token["recurring_details"] = {"status": status, "failure_reason": None}
        if max_amount is not None:
            token["max_amount"] = max_amount
        if expired_at is not None:
            token["expired_at"] = expired_at
        with self.lock:
            self.tokens[token_id] = token
        return dict(token)

    def set_token_status(self, token_id: str, status: str) -> None:
        """The mandate moves on (the customer pauses or cancels it, NPCI rejects it)."""
        with self.lock:
            self.tokens[token_id]["recurring_details"] = {"status": status, "failure_reason": None}

    def _token_refusal(self, token_id: str, amount: int) -> str | None:
        token = self.tokens.get(token_id)
        if token is None:
            return None
        state = (token.get("recurring_details") or {}).get("status", "confirmed")
        if state != "confirmed":
            return f"The token is {state} and cannot be used for a recurring payment."
        if token.get("max_amount") is not None and amount > token["max_amount"]:
            return "The amount exceeds the maximum amount allowed for this token."
        if token.get("expired_at") is not None and token["expired_at"] <= self.now():
            return "The token has expired."
        return None

    def register_token(self, customer_id: str, token_id: str | None = None) -> tuple[str, str]:
        """The customer registers a card for recurring payments: Razorpay's authorisation
        transaction (razorpay.com/docs/payments/recurring-payments/cards): an order with
        the token parameters, a captured payment of the authorisation amount that names
        the customer and the new token, and the token, confirmed. Returns (payment id, token
        id); the webhooks are `payment.captured` for the payment and `token.confirmed` for
        the token, whose entity, as in Razorpay's samples, names no customer."""
        with self.lock:
            token = self.add_token(token_id or new_id("token"))
            token["recurring_details"] = {"status": "confirmed", "failure_reason": None}
            token["max_amount"] = 1_000_000_00
            self.tokens[token["id"]] = token
            order = self._new_order(
                amount=100, currency="INR", receipt=None, notes=None, payment_capture=True
            )
            payment = self._new_payment(
                order,
                status="captured",
                email=f"{customer_id}@example.com",
                contact="+919000090000",
                customer_id=customer_id,
                token_id=token["id"],
                description="Card registration",
                notes=None,
            )
            order.update(status="paid", amount_paid=100, amount_due=0)
        return payment["id"], token["id"]

    def add_customer(
        self,
        customer_id: str | None = None,
        *,
        email: str | None = "gaurav.kumar@example.com",
        contact: str | None = "+919000090000",
        name: str = "Gaurav Kumar",
    ) -> dict[str, Any]:
        customer = {
            "id": customer_id or new_id("cust"),
            "entity": "customer",
            "name": name,
            "email": email,
            "contact": contact,
            "gstin": None,
            "notes": [],
            "created_at": int(self.now()),
        }
        with self.lock:
            self.customers[customer["id"]] = customer
        return customer

    def inject(
        self,
        method: str,
        path_pattern: str,
        *,
        status: int = 500,
        code: str = "SERVER_ERROR",
        description: str | None = None,
        raw_body: bytes | None = None,
        delay: float = 0.0,
        after: bool = False,
        drop: bool = False,
        times: int = 1,
    ) -> None:
        """Make the next `times` requests matching (method, path regex, full match) fail.
        `after`: the request takes effect first, then the failure is answered (a lost
        answer). `drop`: close the connection without answering. `raw_body`: answer these
        bytes instead of the JSON error envelope (e.g. a proxy's HTML page)."""
        fault = Fault(
            method=method.upper(),
            path=re.compile(path_pattern),
            status=status,
            code=code,
            raw_body=raw_body,
            delay=delay,
            after=after,
            drop=drop,
            times=times,
        )
        if description is not None:
            fault.description = description
        with self.lock:
            self._faults.append(fault)

    def set_payment_status(
        self, payment_id: str, status: str, *, error: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Move a payment on (e.g. a pending one to ``captured`` or ``failed``)."""
        with self.lock:
            payment = self.payments_by_id[payment_id]
            payment["status"] = status
            payment["captured"] = status in ("captured", "refunded")
            if status == "failed":
                _fill_error(payment, error or ASYNC_FAILURE)
            order = self.orders.get(payment.get("order_id") or "")
            if order is not None and status == "captured":
                _mark_order_paid(order)
            return payment

    def late_authorise(self, payment_id: str) -> dict[str, Any]:
        """The bank answers at last: a `failed` payment is authorised and, its order being
        auto-capture, captured (razorpay.com/docs/payments/payments/late-authorisation)."""
        with self.lock:
            payment = self.payments_by_id[payment_id]
            assert payment["status"] == "failed", payment["status"]
            for key in ("error_code", "error_description", "error_source", "error_step"):
                payment[key] = None
            payment["error_reason"] = None
            return self.set_payment_status(payment_id, "captured")

    def set_refund_status(self, refund_id: str, status: str) -> dict[str, Any]:
        """Move a refund on: a ``pending`` one to ``processed`` (or ``failed``)."""
        with self.lock:
            refund = self.refunds[refund_id]
            refund["status"] = status
            return dict(refund)

    def update_payment_link(self, link_id: str, **fields: Any) -> dict[str, Any]:
        """The merchant edits the link (Razorpay's "Update a Payment Link": e.g.
        ``accept_partial``, ``expire_by``)."""
        with self.lock:
            link = self.payment_links[link_id]
            link.update(fields)
            return dict(link)

    def cancel_payment_link(self, link_id: str) -> dict[str, Any]:
        """The merchant cancels the link in the Dashboard (as ``POST .../cancel``)."""
        status, answer = self._cancel_link(id=link_id)
        if status != 200:
            raise ValueError(answer["error"]["description"])
        return dict(answer)

    def pay_payment_link(
        self, link_id: str, *, method: str = "card", amount: int | None = None
    ) -> dict[str, str]:
        """The customer pays the link: all that is left of it, or `amount` of it where the
        link accepts part payments. The link's order and a captured payment are created; the
        link becomes ``paid`` (``partially_paid`` while some is left), and Razorpay's events
        are emitted. Returns the callback query parameters Razorpay would append to
        ``callback_url``, signed with the key secret."""
        with self.lock:
            self._settle_due()
            link = self.payment_links[link_id]
            if link["status"] not in ("created", "partially_paid"):
                raise ValueError(f"payment link {link_id} is {link['status']}")  # no payment
            left = link["amount"] - link["amount_paid"]
            amount = left if amount is None else amount
            if not 0 < amount <= left or (amount < left and not link["accept_partial"]):
                raise ValueError(f"payment link {link_id} takes {left}, not {amount}")
            if link.get("order_id"):
                order = self.orders[link["order_id"]]
            else:
                order = self._new_order(
                    amount=link["amount"],
                    currency=link["currency"],
                    receipt=None,
                    notes=link["notes"],
                    payment_capture=True,
                )
            customer = link.get("customer") or {}
            payment = self._new_payment(
                order,
                status="captured",
                email=customer.get("email") or "void@razorpay.com",
                contact=customer.get("contact") or "+919000090000",
                customer_id=None,
                token_id=None,
                description=link.get("description"),
                notes=link["notes"],
                method=method,
            )
            payment["amount"] = amount
            order["amount_paid"] += amount
            order["amount_due"] = order["amount"] - order["amount_paid"]
            if order["amount_due"] == 0:
                _mark_order_paid(order)
            link["amount_paid"] += amount
            link["status"] = "paid" if link["amount_paid"] == link["amount"] else "partially_paid"
            link["order_id"] = order["id"]
            link["updated_at"] = int(time.time())
            link["payments"] = [
                *(link["payments"] or []),
                {
                    "amount": amount,
                    "created_at": payment["created_at"],
                    "method": method,
                    "payment_id": payment["id"],
                    "status": "captured",
                },
            ]
            self._emit("payment.captured", payment_id=payment["id"])
            self._emit(f"payment_link.{link['status']}", payment_link_id=link_id)
            message = f"{link['id']}|{link['reference_id']}|{link['status']}|{payment['id']}"
            return {
                "razorpay_payment_id": payment["id"],
                "razorpay_payment_link_id": link["id"],
                "razorpay_payment_link_reference_id": link["reference_id"] or "",
                "razorpay_payment_link_status": link["status"],
                "razorpay_signature": sign(message.encode(), self.key_secret),
            }

    # ---- webhooks --------------------------------------------------------------------------

    def webhook_body(
        self,
        event: str,
        *,
        payment_id: str | None = None,
        refund_id: str | None = None,
        payment_link_id: str | None = None,
        order_id: str | None = None,
        token_id: str | None = None,
    ) -> bytes:
        """A Razorpay webhook body for `event` from the stored entities (razorpay.com/docs/
        webhooks/payments, /refunds, /payment-links, /orders, and the recurring payments'
        token events' sample payloads)."""
        with self.lock:
            payload: dict[str, Any] = {}
            if token_id is not None:
                payload["token"] = {"entity": dict(self.tokens[token_id])}
            if payment_link_id is not None:
                link = self.payment_links[payment_link_id]
                payload["payment_link"] = {"entity": dict(link)}
                order_id = order_id or link.get("order_id")
                if payment_id is None and link.get("payments"):
                    payment_id = link["payments"][-1]["payment_id"]
            if refund_id is not None:
                refund = self.refunds[refund_id]
                payload["refund"] = {"entity": dict(refund)}
                payment_id = payment_id or refund["payment_id"]
            if payment_id is not None:
                payment = self.payments_by_id[payment_id]
                payload["payment"] = {"entity": dict(payment)}
                order_id = order_id or payment.get("order_id")
            if order_id is not None and (event.startswith(("order.", "payment_link."))):
                payload["order"] = {"entity": dict(self.orders[order_id])}
            body = {
                "entity": "event",
                "account_id": "acc_FakeAccount0001",
                "event": event,
                "contains": list(payload),
                "payload": payload,
                "created_at": int(self.now()),
            }
        return json.dumps(body, separators=(",", ":")).encode()

    def signed_webhook(
        self,
        event: str,
        *,
        secret: str | None = None,
        event_id: str | None = None,
        **entity_ids: str | None,
    ) -> tuple[bytes, dict[str, str]]:
        """(body, headers) of a webhook delivery, signed with `secret` (default: this fake's
        ``webhook_secret``). `entity_ids`: as `webhook_body`."""
        body = self.webhook_body(event, **entity_ids)
        headers = {
            "Content-Type": "application/json",
            "X-Razorpay-Signature": sign(body, secret or self.webhook_secret),
            "X-Razorpay-Event-Id": event_id or new_id("evt"),
        }
        return body, headers

    # ---- entity factories (under the lock) ---------------------------------------------------

    def _new_order(
        self,
        *,
        amount: int,
        currency: str,
        receipt: str | None,
        notes: Any,
        payment_capture: bool,
    ) -> dict[str, Any]:
        order = {
            "id": new_id("order"),
            "entity": "order",
            "amount": amount,
            "amount_paid": 0,
            "amount_due": amount,
            "currency": currency,
            "receipt": receipt,
            "offer_id": None,
            "status": "created",
            "attempts": 0,
            "notes": notes or [],
            "created_at": int(self.now()),
        }
        self._listed_from[order["id"]] = time.monotonic() + self.order_list_lag
        self.orders[order["id"]] = order
        self._payment_capture[order["id"]] = payment_capture
        return order

    def _new_payment(
        self,
        order: dict[str, Any],
        *,
        status: str,
        email: str,
        contact: str,
        customer_id: str | None,
        token_id: str | None,
        description: str | None,
        notes: Any,
        method: str = "card",
    ) -> dict[str, Any]:
        payment = {
            "id": new_id("pay"),
            "entity": "payment",
            "amount": order["amount"],
            "currency": order["currency"],
            "status": status,
            "order_id": order["id"],
            "invoice_id": None,
            "international": False,
            "method": method,
            "amount_refunded": 0,
            "refund_status": None,
            "captured": status == "captured",
            "description": description,
            "card_id": new_id("card") if method == "card" else None,
            "bank": None,
            "wallet": None,
            "vpa": None,
            "email": email,
            "contact": contact,
            "customer_id": customer_id,
            "token_id": token_id,
            "notes": notes or [],
            "fee": 0,
            "tax": 0,
            "error_code": None,
            "error_description": None,
            "error_source": None,
            "error_step": None,
            "error_reason": None,
            "acquirer_data": {"auth_code": "541898"},
            "created_at": int(self.now()),
        }
        self.payments_by_id[payment["id"]] = payment
        order["attempts"] += 1
        if order["status"] == "created":
            order["status"] = "attempted"
        return payment

    # ---- request handling ------------------------------------------------------------------

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self._faults:
                if fault.method == method and fault.path.fullmatch(path) is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: Any,
        auth: str | None,
        headers: dict[str, str] | None = None,
    ) -> _Reply:
        headers = headers or {}
        with self.lock:
            self.requests.append(RecordedRequest(method, path, query, body, headers))
            self._settle_due()
        if not self._authorised(auth):
            return _Reply(
                401,
                error_body("The api key provided is invalid", field=None, code="BAD_REQUEST_ERROR"),
            )
        fault = self._take_fault(method, path)
        if fault is not None and not fault.after:
            return _fault_reply(fault)
        status, answer, delay = self._route(method, path, query, body, headers)
        if fault is not None:
            reply = _fault_reply(fault)
            reply.delay += delay
            return reply
        return _Reply(status, answer, delay=delay)

    def _authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[len("Basic ") :]).decode()
        except ValueError:
            return False
        key_id, _, key_secret = decoded.partition(":")
        return hmac.compare_digest(key_id, self.key_id) and hmac.compare_digest(
            key_secret, self.key_secret
        )

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any, headers: dict[str, str]
    ) -> tuple[int, Any, float]:
        routes: list[tuple[str, str, Any]] = [
            ("POST", r"/v1/orders", self._create_order),
            ("GET", r"/v1/orders", self._list_orders),
            ("GET", r"/v1/orders/(?P<id>[^/]+)", self._fetch_order),
            ("GET", r"/v1/orders/(?P<id>[^/]+)/payments", self._order_payments),
            ("POST", r"/v1/payments/create/recurring", self._create_recurring),
            ("GET", r"/v1/payments/(?P<id>[^/]+)", self._fetch_payment),
            ("POST", r"/v1/payments/(?P<id>[^/]+)/refund", self._create_refund),
            ("GET", r"/v1/payments/(?P<id>[^/]+)/refunds", self._payment_refunds),
            ("GET", r"/v1/refunds/(?P<id>[^/]+)", self._fetch_refund),
            ("GET", r"/v1/customers/(?P<id>[^/]+)", self._fetch_customer),
            ("GET", r"/v1/customers/(?P<id>[^/]+)/tokens/(?P<token>[^/]+)", self._fetch_token),
            ("POST", r"/v1/payment_links/?", self._create_link),
            ("GET", r"/v1/payment_links/?", self._list_links),
            ("GET", r"/v1/payment_links/(?P<id>[^/]+)", self._fetch_link),
            ("POST", r"/v1/payment_links/(?P<id>[^/]+)/cancel", self._cancel_link),
        ]
        for route_method, pattern, handler in routes:
            m = re.fullmatch(pattern, path)
            if route_method == method and m is not None:
                result = handler(
                    query=query,
                    body=body if isinstance(body, dict) else {},
                    headers=headers,
                    **m.groupdict(),
                )
                if len(result) == 2:
                    return result[0], result[1], 0.0
                return result
        return 404, error_body("The requested URL was not found on the server."), 0.0

    # orders

    def _create_order(self, *, body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        amount = body.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 100:
            return _validation("The amount must be atleast INR 1.00.", "amount")
        currency = body.get("currency")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
            return _validation("The currency must be a valid currency code.", "currency")
        receipt = body.get("receipt")
        if receipt is not None and (not isinstance(receipt, str) or len(receipt) > 40):
            return _validation("The receipt may not be greater than 40 characters.", "receipt")
        notes = body.get("notes") or []
        if notes and not _valid_notes(notes):
            return _validation("The notes may have at most 15 values of 256 characters.", "notes")
        capture = body.get("payment_capture", False) in (True, 1, "1", "true")
        with self.lock:
            order = self._new_order(
                amount=amount,
                currency=currency,
                receipt=receipt,
                notes=notes,
                payment_capture=capture,
            )
            return 200, dict(order)

    def _list_orders(self, *, query: dict[str, str], **_: Any) -> tuple[int, Any]:
        with self.lock:
            now = time.monotonic()
            items = [
                dict(o)
                for o in reversed(self.orders.values())
                if ("receipt" not in query or o["receipt"] == query["receipt"])
                and self._listed_from.get(o["id"], 0.0) <= now
            ]
        return 200, _collection(items, query)

    def _fetch_order(self, *, id: str, **_: Any) -> tuple[int, Any]:
        with self.lock:
            order = self.orders.get(id)
            return (200, dict(order)) if order else _not_found()

    def _order_payments(self, *, id: str, query: dict[str, str], **_: Any) -> tuple[int, Any]:
        with self.lock:
            if id not in self.orders:
                return _not_found()
            items = [
                dict(p)
                for p in reversed(self.payments_by_id.values())
                if p["order_id"] == id and p["status"] != "created"  # not listed while created
            ]
        return 200, _collection(items, query)

    # payments

    def _create_recurring(self, *, body: dict[str, Any], **_: Any) -> tuple[int, Any, float]:
        for name in (
            "email",
            "contact",
            "amount",
            "currency",
            "order_id",
            "customer_id",
            "token",
            "recurring",
        ):
            if body.get(name) in (None, ""):
                return (*_validation(f"The {name} field is required.", name), 0.0)
        if str(body["recurring"]) not in ("1", "true", "True", "preferred", "auto"):
            return (*_validation("The recurring field is invalid.", "recurring"), 0.0)
        token = str(body["token"])
        with self.lock:
            order = self.orders.get(str(body["order_id"]))
            if order is None:
                return (*_not_found(), 0.0)
            if body["amount"] != order["amount"] or body["currency"] != order["currency"]:
                return (
                    *_validation("Order amount or currency does not match the payment.", "amount"),
                    0.0,
                )
            if order["status"] == "paid":
                return 400, error_body("Order has already been paid"), 0.0
            customer_id = str(body["customer_id"])
            if customer_id not in self.customers and not self.auto_customers:
                return (*_not_found(), 0.0)
            if (refusal := self._token_refusal(token, int(body["amount"]))) is not None:
                return 400, error_body(refusal, field="token"), 0.0
            first_use = token not in self._spent_tokens
            self._spent_tokens.add(token)
            if first_use and token == "token_5xx":
                return 500, error_body(Fault.description, code="SERVER_ERROR"), 0.0
            if first_use and token == "token_429":
                return 429, error_body("Too many requests"), 0.0
            capture = self._payment_capture.get(order["id"], False)
            status = {
                "token_pending": "created",
                "token_authorized": "authorized",
                "token_failed_async": "failed",
            }.get(token)
            no_answer = next(
                (error for name, error in NO_ANSWER_ONCE.items() if token.startswith(name)), None
            )
            no_answer = no_answer if first_use else None
            if no_answer is not None:
                status = "failed"
            if token in DECLINES:
                status = "failed"
            if status is None:
                status = "captured" if capture else "authorized"
            final = status
            if self.debit_delay > 0 and token not in DECLINES and token != "token_pending":
                status = "created"  # the pre-debit notice first; the debit in the 25th hour
            payment = self._new_payment(
                order,
                status=status,
                email=str(body["email"]),
                contact=str(body["contact"]),
                customer_id=customer_id,
                token_id=token,
                description=body.get("description"),
                notes=body.get("notes"),
                method=self.tokens.get(token, {}).get("method", "card"),
            )
            if status == "captured":
                _mark_order_paid(order)
            if status != final:
                self._due[payment["id"]] = (self.now() + self.debit_delay, final, no_answer)
            if token in DECLINES:
                _fill_error(payment, DECLINES[token])
                error = dict(DECLINES[token])
                description = error.pop("description")
                code = error.pop("code")
                return (
                    400,
                    error_body(
                        description,
                        code=code,
                        metadata={"payment_id": payment["id"], "order_id": order["id"]},
                        **error,
                    ),
                    0.0,
                )
            if status == "failed":
                _fill_error(payment, no_answer or ASYNC_FAILURE)
            answer = {
                "razorpay_payment_id": payment["id"],
                "razorpay_order_id": order["id"],
                "razorpay_signature": sign(
                    f"{order['id']}|{payment['id']}".encode(), self.key_secret
                ),
            }
        if first_use and token == "token_5xx_after":
            return 500, error_body(Fault.description, code="SERVER_ERROR"), 0.0
        delay = self.slow_seconds if token == "token_slow" else 0.0
        return 200, answer, delay

    def _fetch_payment(self, *, id: str, **_: Any) -> tuple[int, Any]:
        with self.lock:
            payment = self.payments_by_id.get(id)
            return (200, dict(payment)) if payment else _not_found()

    # refunds

    def _create_refund(
        self, *, id: str, body: dict[str, Any], headers: dict[str, str], **_: Any
    ) -> tuple[int, Any]:
        """`POST /v1/payments/{id}/refund`, idempotent under ``X-Refund-Idempotency``
        (razorpay.com/docs/api/refunds/normal-refunds-idempotent): a key of at least 10
        characters of ``[A-Za-z0-9_-]``; the same key and body answer the first refund, the
        same key with another body is refused."""
        key = headers.get("x-refund-idempotency")
        if key is not None and not re.fullmatch(r"[A-Za-z0-9_-]{10,}", key):
            return _validation(
                "The idempotency key must be at least 10 characters of letters, numbers,"
                " hyphens and underscores.",
                "X-Refund-Idempotency",
            )
        with self.lock:
            if key is not None and key in self._refund_keys:
                refund_id, first_body = self._refund_keys[key]
                if first_body != body:
                    return 400, error_body(
                        "Different request with the same idempotency key has already been"
                        " processed.",
                        field=None,
                    )
                return 200, dict(self.refunds[refund_id])
            payment = self.payments_by_id.get(id)
            if payment is None:
                return _not_found()
            if not payment["captured"]:
                return 400, error_body(
                    "The payment has not been captured yet and cannot be refunded"
                )
            remaining = payment["amount"] - payment["amount_refunded"]
            amount = body.get("amount", remaining)
            if isinstance(amount, str) and amount.isdigit():
                amount = int(amount)
            if not isinstance(amount, int) or amount <= 0:
                return _validation("The amount must be an integer.", "amount")
            if amount > remaining:
                return 400, error_body(
                    "The refund amount provided is greater than amount captured", field="amount"
                )
            receipt = body.get("receipt")
            if receipt is not None and (not isinstance(receipt, str) or len(receipt) > 40):
                return _validation("The receipt may not be greater than 40 characters.", "receipt")
            refund = {
                "id": new_id("rfnd"),
                "entity": "refund",
                "amount": amount,
                "receipt": receipt,
                "currency": payment["currency"],
                "payment_id": payment["id"],
                "notes": body.get("notes") or [],
                "acquirer_data": {"arn": None},
                "created_at": int(self.now()),
                "batch_id": None,
                "status": self.refund_status,
                "speed_processed": "normal",
                "speed_requested": body.get("speed", "normal"),
            }
            self.refunds[refund["id"]] = refund
            if key is not None:
                self._refund_keys[key] = (refund["id"], dict(body))
            payment["amount_refunded"] += amount
            full = payment["amount_refunded"] == payment["amount"]
            payment["refund_status"] = "full" if full else "partial"
            if full:
                payment["status"] = "refunded"
            return 200, dict(refund)

    def _fetch_refund(self, *, id: str, **_: Any) -> tuple[int, Any]:
        with self.lock:
            refund = self.refunds.get(id)
            return (200, dict(refund)) if refund else _not_found()

    def _payment_refunds(self, *, id: str, query: dict[str, str], **_: Any) -> tuple[int, Any]:
        with self.lock:
            if id not in self.payments_by_id:
                return _not_found()
            items = [dict(r) for r in reversed(self.refunds.values()) if r["payment_id"] == id]
        return 200, _collection(items, query)

    # customers

    def _fetch_customer(self, *, id: str, **_: Any) -> tuple[int, Any]:
        with self.lock:
            customer = self.customers.get(id)
            if customer is None and self.auto_customers and id.startswith("cust_"):
                customer = self.add_customer(id, email=f"{id}@example.com")
            return (200, dict(customer)) if customer else _not_found()

    def _fetch_token(self, *, id: str, token: str, **_: Any) -> tuple[int, Any]:
        with self.lock:
            if id not in self.customers and not (self.auto_customers and id.startswith("cust_")):
                return _not_found()
            found = self.tokens.get(token)
        if found is None and token.startswith("token_"):
            found = self.add_token(token)
        return (200, dict(found)) if found else _not_found()

    # payment links

    def _create_link(self, *, body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        amount = body.get("amount")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 100:
            return _validation("The amount must be atleast INR 1.00.", "amount")
        reference_id = body.get("reference_id")
        if reference_id is not None and (
            not isinstance(reference_id, str) or len(reference_id) > 40
        ):
            return _validation(
                "The reference id may not be greater than 40 characters.", "reference_id"
            )
        if body.get("callback_url") and body.get("callback_method") != "get":
            return _validation("callback_method must be get", "callback_method")
        notes = body.get("notes") or None
        if notes and not _valid_notes(notes):
            return _validation("The notes may have at most 15 values of 256 characters.", "notes")
        with self.lock:
            if reference_id and any(
                link["reference_id"] == reference_id for link in self.payment_links.values()
            ):
                return 400, error_body(
                    f"Payment Link with reference id {reference_id} already exists",
                    field="reference_id",
                    source="business",
                    step="payment_initiation",
                    reason="input_validation_failed",
                )
            now = int(time.time())
            link_id = new_id("plink")
            link = {
                "accept_partial": bool(body.get("accept_partial", False)),
                "amount": amount,
                "amount_paid": 0,
                "callback_method": body.get("callback_method", ""),
                "callback_url": body.get("callback_url", ""),
                "cancelled_at": 0,
                "created_at": now,
                "currency": body.get("currency", "INR"),
                "customer": body.get("customer") or {},
                "description": body.get("description", ""),
                "expire_by": body.get("expire_by", 0),
                "expired_at": 0,
                "first_min_partial_amount": body.get("first_min_partial_amount", 0),
                "id": link_id,
                "notes": notes,
                "notify": body.get("notify") or {"email": False, "sms": False},
                "payments": None,
                "reference_id": reference_id or "",
                "reminder_enable": bool(body.get("reminder_enable", False)),
                "reminders": [],
                "short_url": f"https://rzp.io/i/{link_id[len('plink_') :][:8]}",
                "status": "created",
                "updated_at": now,
                "upi_link": bool(body.get("upi_link", False)),
                "user_id": "",
            }
            self.payment_links[link_id] = link
            return 200, dict(link)

    def _list_links(self, *, query: dict[str, str], **_: Any) -> tuple[int, Any]:
        with self.lock:
            links = [
                dict(link)
                for link in reversed(self.payment_links.values())
                if ("reference_id" not in query or link["reference_id"] == query["reference_id"])
                and (
                    "payment_id" not in query
                    or any(p["payment_id"] == query["payment_id"] for p in (link["payments"] or []))
                )
            ]
        return 200, {"payment_links": links}

    def _fetch_link(self, *, id: str, **_: Any) -> tuple[int, Any]:
        with self.lock:
            link = self.payment_links.get(id)
            return (200, dict(link)) if link else _not_found()

    def _cancel_link(self, *, id: str, **_: Any) -> tuple[int, Any]:
        """`POST /v1/payment_links/{id}/cancel`: only an unpaid (`created`) link can be
        cancelled; it answers the link, now `cancelled`."""
        with self.lock:
            link = self.payment_links.get(id)
            if link is None:
                return _not_found()
            if link["status"] != "created":
                return 400, error_body(
                    f"Payment Link cannot be cancelled as it is in {link['status']} state",
                    source="business",
                    step="payment_initiation",
                    reason="input_validation_failed",
                )
            link["status"] = "cancelled"
            link["cancelled_at"] = link["updated_at"] = int(time.time())
            self._emit("payment_link.cancelled", payment_link_id=id)
            return 200, dict(link)


def _valid_notes(notes: Any) -> bool:
    return (
        isinstance(notes, dict)
        and len(notes) <= 15
        and all(isinstance(v, str | int | float) and len(str(v)) <= 256 for v in notes.values())
    )


def _fill_error(payment: dict[str, Any], error: dict[str, str]) -> None:
    payment["error_code"] = error["code"]
    payment["error_description"] = error["description"]
    payment["error_source"] = error["source"]
    payment["error_step"] = error["step"]
    payment["error_reason"] = error["reason"]


def _mark_order_paid(order: dict[str, Any]) -> None:
    order["status"] = "paid"
    order["amount_paid"] = order["amount"]
    order["amount_due"] = 0


def _collection(items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    skip = int(query.get("skip", 0) or 0)
    count = min(int(query.get("count", 10) or 10), 100)
    page = items[skip : skip + count]
    return {"entity": "collection", "count": len(page), "items": page}


def _fault_reply(fault: Fault) -> _Reply:
    if fault.drop:
        return _Reply(0, drop=True, delay=fault.delay)
    if fault.raw_body is not None:
        return _Reply(fault.status, raw=fault.raw_body, delay=fault.delay)
    return _Reply(fault.status, error_body(fault.description, code=fault.code), delay=fault.delay)


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeRazorpay
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        reply = self.server_fake.handle(
            method,
            parts.path.rstrip("/") or "/",
            query,
            body,
            self.headers.get("Authorization"),
            {k.lower(): v for k, v in self.headers.items()},
        )
        if reply.delay:
            time.sleep(reply.delay)
        if reply.drop:
            self.close_connection = True
            return
        data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        content_type = "text/html" if reply.raw is not None else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
            self.close_connection = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


@contextmanager
def fake_razorpay(**options: Any) -> Iterator[FakeRazorpay]:
    """A running fake Razorpay; `options` are `FakeRazorpay` fields (key_id, key_secret,
    webhook_secret, auto_customers, slow_seconds, refund_status)."""
    fake = FakeRazorpay(**options)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
