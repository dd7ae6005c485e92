"""localstripe for tests: a real fake Stripe server on a free port, and setup helpers.

`localstripe` (PyPI; Customers, PaymentMethods, PaymentIntents, Charges, Refunds, signed
webhooks) runs as a subprocess bound to 127.0.0.1. Nothing here reaches the internet.

    with localstripe() as base_url:                      # e.g. "http://127.0.0.1:41234"
        card = create_customer_with_card(base_url, CARD_OK)
        adapter = StripeAdapter(TEST_API_KEY, api_base=base_url)
        ...
        assert len(successful_charges(base_url, card.customer_id)) == 1

The URL yielded is that of a small proxy in front of localstripe which adds the two things of
Stripe's documented API that localstripe lacks and our adapter relies on:

1. Idempotency keys (docs.stripe.com/api/idempotent_requests). localstripe ignores
   `Idempotency-Key`, so a retried charge would charge twice. The proxy saves the first
   response to each POST with a key (per API key) and replays it, with
   `Idempotent-Replayed: true`, for the same key and parameters; the same key with other
   parameters is a 400 `idempotency_error`; a key whose first request is still running is a
   409. As on Stripe, a response is not saved when the request is refused as invalid (400).
2. `automatic_payment_methods` on PaymentIntent create/confirm: localstripe predates dynamic
   payment methods and refuses parameters it does not know, so the proxy drops it (with a
   card PaymentMethod named, as our off-session charges do, the outcome is the same).
3. Listing PaymentIntents by `customer` (newest first) and the Search API for them
   (`GET /v1/payment_intents/search`, `metadata['k']:'v'` clauses joined by `AND`), which
   localstripe lacks: the proxy lists every PaymentIntent from localstripe and filters.
4. Checkout Sessions (docs.stripe.com/api/checkout/sessions), which localstripe lacks:
   create (`mode=payment`, one `price_data` line item, `customer` or `customer_email`,
   `expires_at` within 30 minutes to 24 hours of now as Stripe requires, `metadata`,
   `payment_intent_data[metadata]` and `[setup_future_usage]`), retrieve and `expire` (only
   an `open` session expires). `pay_checkout` plays the customer: it pays an `open`, unexpired
   session with a card at localstripe (a PaymentIntent with the session's
   `payment_intent_data`, so localstripe's `payment_intent.succeeded` webhook names our
   ids; with `setup_future_usage` the card stays on the customer) and completes the session;
   paying a session that is not open is refused, as Stripe's page refuses it.
5. Declines as Stripe sends them on an off-session PaymentIntent (docs.stripe.com/api/errors,
   docs.stripe.com/declines/card): localstripe answers a declined charge with
   `type=invalid_request_error` and no decline code, and an off-session charge that needs
   3-D Secure with a 200 `requires_action`. The proxy answers both as Stripe does: a 402
   `type=card_error` with `code`, `decline_code`, `payment_intent` (now
   `requires_payment_method`, its `last_payment_error` the same error) and `charge`; the
   authentication case as `code=decline_code=authentication_required` (off-session, Stripe
   does not leave the PaymentIntent in `requires_action`). `script_decline` makes the next
   off-session charge of a customer decline with the codes a test names (`decline_code`,
   `advice_code`, `network_advice_code`, `network_decline_code`), charging nothing. Reads
   of such a PaymentIntent show what Stripe would show.
6. Server errors as Stripe gives them (`inject_server_errors`): the next POSTs to a path are
   answered `500 api_error`, after the request ran (the charge was made) or before; and, as
   on Stripe, that 500 is the saved answer of its idempotency key, replayed to every retry
   with the same key (docs.stripe.com/error-low-level#idempotency).
7. Idempotency keys are pruned 24 hours after their first request (`KEY_LIFETIME`, on the
   proxy's clock, which `advance_clock` moves): the same key then runs as a new request, as
   on Stripe.

localstripe runs without its disk persistence: stock `localstripe` pickles its whole store to
the one shared path /tmp/localstripe.pickle after every write, which parallel runs (or another
user's file) would break. Webhooks that localstripe sends go straight from it to the URL you
register (`register_webhook_endpoint`), signed with your secret like Stripe's.

localstripe's test cards (`localstripe/resources.py`, `PaymentMethod`): `CARD_OK` charges;
`CARD_DECLINED_ON_CHARGE` (4000000000000341) attaches, then every charge is declined with
`card_declined` and no `decline_code`; `CARD_REQUIRES_AUTH` (4000002500003155 and others)
puts the PaymentIntent in `requires_action`; `CARD_DECLINED_ON_ATTACH` (4000000000000002,
4000000000009995 "insufficient funds", ...) cannot be saved at all (the attach is a 402).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import stripe

from scripts.stack import free_port

TEST_API_KEY = "sk_test_localstripe"
"""Any key starting with `sk_` works; localstripe keeps one store for all keys."""

CARD_OK = "4242424242424242"
CARD_DECLINED_ON_CHARGE = "4000000000000341"
CARD_REQUIRES_AUTH = "4000002500003155"
CARD_DECLINED_ON_ATTACH = "4000000000000002"

_LAUNCH = """\
import sys
from aiohttp import web
from localstripe import resources
from localstripe.server import app
resources.Store.dump_to_disk = lambda self: None
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


# ---- the server -------------------------------------------------------------------------


@contextlib.contextmanager
def localstripe(*, startup_timeout: float = 30.0) -> Iterator[str]:
    """Start localstripe (and the idempotency proxy in front of it) on free ports; yield the
    base URL to give `StripeAdapter(api_base=...)` and the helpers below; stop both after."""
    with _localstripe_process(startup_timeout) as upstream, _proxy(upstream) as url:
        yield url


@contextlib.contextmanager
def _localstripe_process(startup_timeout: float) -> Iterator[str]:
    last_error = ""
    for _ in range(3):  # another process may take the free port before localstripe binds it
        port = free_port()
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCH, str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            try:
                url = f"http://127.0.0.1:{port}"
                if _wait_until_up(proc, url, startup_timeout):
                    yield url
                    return
                log.seek(0)
                last_error = log.read().decode(errors="replace")[-2000:]
            finally:
                _stop(proc)
    raise RuntimeError(f"localstripe did not start:\n{last_error}")


def _wait_until_up(proc: subprocess.Popen[bytes], url: str, within: float) -> bool:
    deadline = time.monotonic() + within
    request = urllib.request.Request(
        f"{url}/v1/customers?limit=1", headers={"Authorization": f"Bearer {TEST_API_KEY}"}
    )
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"localstripe did not answer on {url} within {within}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ---- the idempotency proxy ----------------------------------------------------------------

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "date",
    "server",
    "host",
    "accept-encoding",
}


@dataclass
class _Fault:
    path: str  # the POST path that fails, e.g. "/v1/payment_intents"
    ran: bool  # the request runs at localstripe before the 500 (the charge is made)
    times: int


_SERVER_ERROR = json.dumps(
    {"error": {"type": "api_error", "message": "An unknown error occurred (injected)."}}
).encode()


@dataclass(frozen=True)
class _Saved:
    request: tuple[str, str, bytes]  # method, path, body: "the same parameters"
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    at: float  # when it was saved, on the proxy's clock


KEY_LIFETIME = 24 * 3600.0
"""Stripe prunes an idempotency key 24 hours after its first request; the same key then
runs as a new request (docs.stripe.com/api/idempotent_requests: "Keys are eligible to be
removed from the system automatically after they're at least 24 hours old")."""


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.lock = threading.Lock()
        self.saved: dict[tuple[str, str], _Saved] = {}
        self.running: set[tuple[str, str]] = set()
        self.faults: list[_Fault] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.latency: dict[str, tuple[float, float]] = {}  # path -> (before, after) seconds
        self.declines: dict[str, list[dict[str, str]]] = {}  # customer -> scripted declines
        self.intent_overrides: dict[str, dict[str, Any]] = {}  # what Stripe would show
        self.clock_offset = 0.0  # seconds `advance_clock` added to real time

    def now(self) -> float:
        return time.time() + self.clock_offset

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-request (a killed worker) is no error: its response is
        saved for the retry all the same."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextlib.contextmanager
def _proxy(upstream: str) -> Iterator[str]:
    server = _ProxyServer(upstream)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="localstripe-proxy", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _drop_unsupported(method: str, path: str, body: bytes) -> bytes:
    """localstripe refuses `automatic_payment_methods` (see the module docstring)."""
    if method != "POST" or not path.startswith("/v1/payment_intents"):
        return body
    fields = parse_qsl(body.decode(), keep_blank_values=True)
    kept = [(k, v) for k, v in fields if not k.startswith("automatic_payment_methods[")]
    return urlencode(kept).encode() if len(kept) != len(fields) else body


def _error_body(kind: str, code: str, message: str) -> bytes:
    return json.dumps({"error": {"type": kind, "code": code, "message": message}}).encode()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if (self.command, self.path) == ("POST", "/_proxy/latency"):
            asked = json.loads(raw)
            with self.server.lock:
                self.server.latency[asked["path"]] = (asked["before"], asked["after"])
            self._send(200, [], b"{}")
            return
        if (self.command, self.path) == ("POST", "/_proxy/declines"):
            asked = json.loads(raw)
            with self.server.lock:
                self.server.declines.setdefault(asked.pop("customer"), []).append(asked)
            self._send(200, [], b"{}")
            return
        if (self.command, self.path) == ("POST", "/_proxy/clock"):
            with self.server.lock:
                self.server.clock_offset += float(json.loads(raw)["advance"])
            self._send(200, [], b"{}")
            return
        if (self.command, self.path) == ("POST", "/_proxy/faults"):
            with self.server.lock:
                self.server.faults.append(_Fault(**json.loads(raw)))
            self._send(200, [], b"{}")
            return
        parts = urlsplit(self.path)
        if parts.path.startswith("/v1/checkout/sessions") or parts.path.startswith("/_checkout/"):
            self._send(*self._checkout(parts.path, raw))
            return
        if self.command == "GET" and parts.path == "/v1/payment_intents/search":
            self._send(200, [], self._search(dict(parse_qsl(parts.query))))
            return
        query = dict(parse_qsl(parts.query))
        if self.command == "GET" and parts.path == "/v1/payment_intents" and "customer" in query:
            self._send(200, [], self._by_customer(query))
            return
        body = _drop_unsupported(self.command, self.path, raw)
        key = self.headers.get("Idempotency-Key") if self.command == "POST" else None
        if not key:
            answer = self._answer(body)
            if (self.command, self.path) == ("DELETE", "/_config/data"):
                with self.server.lock:  # `reset`: saved responses name objects now gone
                    self.server.saved.clear()
            self._send(*answer)
            return
        scope = (self.headers.get("Authorization", ""), key)
        request = (self.command, self.path, body)
        with self.server.lock:
            saved = self.server.saved.get(scope)
            if saved is not None and self.server.now() - saved.at >= KEY_LIFETIME:
                del self.server.saved[scope]  # pruned: the key runs anew
                saved = None
            in_flight = saved is None and scope in self.server.running
            if saved is None and not in_flight:
                self.server.running.add(scope)
        if in_flight:
            message = "There is currently another in-progress request using this key."
            self._send(409, [], _error_body("idempotency_error", "idempotency_key_in_use", message))
            return
        if saved is not None:
            if saved.request != request:
                message = (
                    "Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with. Try using a key other than '{key}'."
                )
                self._send(400, [], _error_body("idempotency_error", "", message))
            else:
                self._send(
                    saved.status, [*saved.headers, ("Idempotent-Replayed", "true")], saved.body
                )
            return
        status, headers, response = 502, [], b""
        try:
            fault = self._take_fault()
            before, after = self.server.latency.get(urlsplit(self.path).path, (0.0, 0.0))
            time.sleep(before)
            if fault is None or fault.ran:
                status, headers, response = self._answer(body)
            time.sleep(after)
            if fault is not None:
                status, headers, response = 500, [], _SERVER_ERROR
        finally:
            with self.server.lock:
                self.server.running.discard(scope)
                if status not in (400, 502):
                    self.server.saved[scope] = _Saved(
                        request, status, headers, response, self.server.now()
                    )
        self._send(status, headers, response)

    def _checkout(self, path: str, raw: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Checkout Sessions as Stripe documents them (see the module docstring)."""
        form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        parts = path.strip("/").split("/")
        now = int(time.time())
        with self.server.lock:
            if path == "/v1/checkout/sessions" and self.command == "POST":
                return self._create_session(form, now)
            session = self.server.sessions.get(parts[3] if parts[0] == "v1" else parts[1])
            if session is None:
                return (
                    404,
                    [],
                    _error_body(
                        "invalid_request_error", "resource_missing", "No such checkout.session"
                    ),
                )
            if session["status"] == "open" and session["expires_at"] <= now:
                session["status"] = "expired"
            if self.command == "GET":
                return 200, [], json.dumps(session).encode()
            if parts[-1] == "expire":
                if session["status"] != "open":
                    message = (
                        'Only Checkout Sessions with a status in ["open"] can be expired. This'
                        f' Checkout Session has a status of "{session["status"]}".'
                    )
                    return 400, [], _error_body("invalid_request_error", "", message)
                session["status"] = "expired"
                return 200, [], json.dumps(session).encode()
            if parts[0] == "_checkout" and parts[-1] == "pay":
                if session["status"] != "open":
                    message = f"this checkout is {session['status']}: it takes no payment"
                    return 400, [], _error_body("invalid_request_error", "", message)
                session["status"] = "paying"  # one payment per session
        return self._pay_session(session, form)

    def _create_session(
        self, form: dict[str, str], now: int
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        def bad(param: str, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
            body = {"error": {"type": "invalid_request_error", "param": param, "message": message}}
            return 400, [], json.dumps(body).encode()

        if form.get("mode") != "payment":
            return bad("mode", "mode must be payment here")
        try:
            amount = int(form["line_items[0][price_data][unit_amount]"]) * int(
                form.get("line_items[0][quantity]", "1")
            )
            currency = form["line_items[0][price_data][currency]"]
        except (KeyError, ValueError):
            return bad("line_items", "one line item with price_data is required")
        expires_at = int(form.get("expires_at") or now + 24 * 3600)
        if not now + 30 * 60 - 5 <= expires_at <= now + 24 * 3600 + 5:
            return bad("expires_at", "expires_at must be 30 minutes to 24 hours from now")

        def prefixed(prefix: str) -> dict[str, str]:
            return {k[len(prefix) : -1]: v for k, v in form.items() if k.startswith(prefix)}

        session_id = f"cs_test_{uuid.uuid4().hex}"
        host, port = self.server.server_address[:2]
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "status": "open",
            "payment_status": "unpaid",
            "amount_total": amount,
            "currency": currency,
            "customer": form.get("customer"),
            "customer_email": form.get("customer_email"),
            "client_reference_id": form.get("client_reference_id"),
            "metadata": prefixed("metadata["),
            "expires_at": expires_at,
            "success_url": form.get("success_url"),
            "cancel_url": form.get("cancel_url"),
            "payment_intent": None,
            "url": f"http://{host}:{port}/_checkout/{session_id}",
            "_payment_intent_data": {
                "metadata": prefixed("payment_intent_data[metadata]["),
                "setup_future_usage": form.get("payment_intent_data[setup_future_usage]"),
            },
        }
        self.server.sessions[session_id] = session
        return 200, [], json.dumps(session).encode()

    def _pay_session(
        self, session: dict[str, Any], form: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The customer pays with a card (`form["card"]`) at localstripe."""
        data = session["_payment_intent_data"]
        fields = {
            "type": "card",
            "card[number]": form.get("card", CARD_OK),
            "card[exp_month]": "12",
            "card[exp_year]": "2034",
            "card[cvc]": "123",
        }
        status, _, content = self._upstream("POST", "/v1/payment_methods", fields)
        pm = json.loads(content)
        if status == 200 and session["customer"] and data["setup_future_usage"]:
            self._upstream(
                "POST", f"/v1/payment_methods/{pm['id']}/attach", {"customer": session["customer"]}
            )
        intent = {
            "amount": str(session["amount_total"]),
            "currency": session["currency"],
            "payment_method": pm.get("id", ""),
            "confirm": "true",
        } | {f"metadata[{k}]": v for k, v in data["metadata"].items()}
        if session["customer"]:
            intent["customer"] = session["customer"]
        status, _, content = self._upstream("POST", "/v1/payment_intents", intent)
        with self.server.lock:
            paid = status == 200 and json.loads(content).get("status") == "succeeded"
            session["status"] = "complete" if paid else "open"
            if paid:
                session["payment_status"] = "paid"
                session["payment_intent"] = json.loads(content)["id"]
        return status, [], content

    def _upstream(
        self, method: str, path: str, fields: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """A form POST of our own to localstripe, with the caller's API key."""
        connection = HTTPConnection(*self.server.upstream, timeout=60)
        headers = {
            "Authorization": self.headers.get("Authorization", f"Bearer {TEST_API_KEY}"),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        try:
            connection.request(method, path, body=urlencode(fields).encode(), headers=headers)
            response = connection.getresponse()
            return response.status, [], response.read()
        finally:
            connection.close()

    def _take_fault(self) -> _Fault | None:
        with self.server.lock:
            for fault in self.server.faults:
                if self.command == "POST" and urlsplit(self.path).path == fault.path:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.server.faults.remove(fault)
                    return fault
        return None

    def _answer(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """localstripe's answer, as Stripe would give it (declines, see the docstring)."""
        path = urlsplit(self.path).path
        if self.command == "POST" and path == "/v1/payment_intents":
            return self._create_intent(body)
        status, headers, content = self._forward(body)
        if self.command == "GET" and path.startswith("/v1/payment_intents/pi_") and status == 200:
            return status, headers, json.dumps(self._as_stripe(json.loads(content))).encode()
        return status, headers, content

    def _as_stripe(self, intent: dict[str, Any]) -> dict[str, Any]:
        with self.server.lock:
            return intent | self.server.intent_overrides.get(intent.get("id", ""), {})

    def _create_intent(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
        off_session = fields.get("confirm") == "true" and fields.get("off_session") == "true"
        customer = fields.get("customer", "")
        with self.server.lock:
            queue = self.server.declines.get(customer) if off_session else None
            scripted = queue.pop(0) if queue else None
        if scripted is not None:  # created, never confirmed: nothing is charged
            unconfirmed = {k: v for k, v in fields.items() if k not in ("confirm", "off_session")}
            status, headers, content = self._upstream("POST", "/v1/payment_intents", unconfirmed)
            if status != 200:
                return status, headers, content
            return self._declined(json.loads(content), {"code": "card_declined", **scripted})
        status, headers, content = self._forward(body)
        if not off_session:
            return status, headers, content
        if status == 402:
            error = json.loads(content).get("error", {})
            charge = error.get("charge")
            _, _, found = self._upstream("GET", f"/v1/charges/{charge}", {})
            intent_id = json.loads(found).get("payment_intent")
            _, _, found = self._upstream("GET", f"/v1/payment_intents/{intent_id}", {})
            declined = {"code": "card_declined", "decline_code": "generic_decline"}
            return self._declined(json.loads(found), declined | {"charge": charge})
        intent = json.loads(content)
        if status == 200 and intent.get("status") == "requires_action":
            authentication = {
                "code": "authentication_required",
                "decline_code": "authentication_required",
                "message": "Your card was declined. This transaction requires authentication.",
            }
            return self._declined(intent, authentication)
        return status, headers, content

    def _declined(
        self, intent: dict[str, Any], error: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Stripe's 402 for a declined off-session PaymentIntent, and what reads show after."""
        last = {
            "type": "card_error",
            "message": "Your card was declined.",
            **error,
            "doc_url": f"https://stripe.com/docs/error-codes/{error['code'].replace('_', '-')}",
            "payment_method": {"id": intent.get("payment_method"), "object": "payment_method"},
        }
        override = {"status": "requires_payment_method", "last_payment_error": last}
        with self.server.lock:
            self.server.intent_overrides[intent["id"]] = override
        body = {"error": {**last, "payment_intent": intent | override}}
        return 402, [("Content-Type", "application/json")], json.dumps(body).encode()

    def _all_intents(self) -> list[dict[str, Any]]:
        intents: list[dict[str, Any]] = []
        after = ""
        while True:
            self.path = f"/v1/payment_intents?limit=100{after}&expand[]=data.latest_charge"
            status, _, content = self._forward(b"")
            if status != 200:
                raise RuntimeError(f"localstripe listed PaymentIntents with {status}")
            page = json.loads(content)
            intents += [self._as_stripe(pi) for pi in page["data"]]
            if not page.get("has_more") or not page["data"]:
                return intents
            after = f"&starting_after={page['data'][-1]['id']}"

    def _by_customer(self, query: dict[str, str]) -> bytes:
        limit = int(query.get("limit", 10))
        found = [pi for pi in self._all_intents() if pi.get("customer") == query["customer"]]
        found.sort(key=lambda pi: pi.get("created", 0), reverse=True)
        if after := query.get("starting_after"):
            ids = [pi["id"] for pi in found]
            found = found[ids.index(after) + 1 :] if after in ids else []
        return json.dumps(
            {
                "object": "list",
                "url": "/v1/payment_intents",
                "has_more": len(found) > limit,
                "data": found[:limit],
            }
        ).encode()

    def _search(self, query: dict[str, str]) -> bytes:
        clauses = [c.strip() for c in query.get("query", "").split(" AND ")]
        wanted: dict[str, str] = {}
        for clause in clauses:
            key, _, value = clause.partition(":")
            if not (key.startswith("metadata['") and key.endswith("']")):
                raise ValueError(f"unsupported search clause {clause!r}")
            wanted[key[len("metadata['") : -2]] = value.strip("'")
        found = [
            pi
            for pi in self._all_intents()
            if all((pi.get("metadata") or {}).get(k) == v for k, v in wanted.items())
        ]
        return json.dumps(
            {
                "object": "search_result",
                "url": "/v1/payment_intents/search",
                "has_more": False,
                "data": found,
            }
        ).encode()

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        connection = HTTPConnection(*self.server.upstream, timeout=60)
        try:
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            content = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            return response.status, kept, content
        except OSError as err:
            message = f"localstripe is unreachable: {type(err).__name__}"
            return 502, [], _error_body("api_error", "", message)
        finally:
            connection.close()

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        has_type = False
        for name, value in headers:
            has_type = has_type or name.lower() == "content-type"
            self.send_header(name, value)
        if not has_type:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# ---- setup and assertion helpers (the real `stripe` SDK, synchronous) ---------------------


@dataclass(frozen=True)
class SavedCard:
    customer_id: str
    payment_method_id: str


def stripe_client(base_url: str, api_key: str = TEST_API_KEY) -> stripe.StripeClient:
    """A synchronous `StripeClient` against `base_url`, for test setup and assertions. Its
    calls block: fine in a test, also in an async one (the servers run elsewhere)."""
    return stripe.StripeClient(api_key, base_addresses={"api": base_url}, max_network_retries=0)


def create_customer_with_card(
    base_url: str,
    card_number: str = CARD_OK,
    *,
    email: str | None = None,
    api_key: str = TEST_API_KEY,
) -> SavedCard:
    """A Customer with a card PaymentMethod attached and set as its default (what a merchant
    has after saving a card). Raises `stripe.CardError` for a card that declines on attach."""
    client = stripe_client(base_url, api_key)
    customer = client.v1.customers.create({"email": email} if email else {})
    pm_id = attach_card(base_url, customer.id, card_number, api_key=api_key)
    return SavedCard(customer_id=customer.id, payment_method_id=pm_id)


def attach_card(
    base_url: str,
    customer_id: str,
    card_number: str,
    *,
    make_default: bool = True,
    api_key: str = TEST_API_KEY,
) -> str:
    """Attach another card to a customer (the customer "updates their card"); returns the
    new PaymentMethod id. With `make_default`, it becomes the customer's default method."""
    client = stripe_client(base_url, api_key)
    pm = client.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": card_number, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    client.v1.payment_methods.attach(pm.id, {"customer": customer_id})
    if make_default:
        client.v1.customers.update(
            customer_id, {"invoice_settings": {"default_payment_method": pm.id}}
        )
    return pm.id


def payment_intents_for_customer(
    base_url: str, customer_id: str, *, api_key: str = TEST_API_KEY
) -> list[dict[str, Any]]:
    """All PaymentIntents of a customer (localstripe cannot filter PaymentIntents by
    customer: this lists all and filters)."""
    client = stripe_client(base_url, api_key)
    intents = client.v1.payment_intents.list({"limit": 100}).auto_paging_iter()
    found = (pi.to_dict() for pi in intents)
    return [pi for pi in found if pi.get("customer") == customer_id]


def charges_for_customer(
    base_url: str, customer_id: str, *, api_key: str = TEST_API_KEY
) -> list[dict[str, Any]]:
    """All Charges of a customer, failed ones included."""
    client = stripe_client(base_url, api_key)
    charges = client.v1.charges.list({"customer": customer_id, "limit": 100}).auto_paging_iter()
    return [charge.to_dict() for charge in charges]


def successful_charges(
    base_url: str, customer_id: str, *, api_key: str = TEST_API_KEY
) -> list[dict[str, Any]]:
    """The customer's charges that moved money: "exactly one successful charge"."""
    charges = charges_for_customer(base_url, customer_id, api_key=api_key)
    return [c for c in charges if c.get("status") == "succeeded"]


def register_webhook_endpoint(
    base_url: str,
    url: str,
    secret: str,
    *,
    events: list[str] | None = None,
    endpoint_id: str = "recovery",
) -> None:
    """Make localstripe POST its events to `url`, signed with `secret` (`Stripe-Signature`,
    as Stripe signs them), about a second after each event. `events` filters by type;
    registering the same `endpoint_id` again replaces it. localstripe-specific
    (`POST /_config/webhooks/{id}`), not a Stripe API."""
    fields: list[tuple[str, str]] = [("url", url), ("secret", secret)]
    fields += [(f"events[{i}]", event) for i, event in enumerate(events or [])]
    request = urllib.request.Request(
        f"{base_url}/_config/webhooks/{endpoint_id}",
        data=urlencode(fields).encode(),
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"localstripe refused the webhook endpoint: {response.status}")


def pay_checkout(url: str, card_number: str = CARD_OK) -> tuple[int, dict[str, Any]]:
    """The customer pays the Checkout Session at `url` (its `url`) with a card: (HTTP status,
    the PaymentIntent or the error). A session that is not open refuses the payment."""
    request = urllib.request.Request(
        f"{url}/pay",
        data=urlencode({"card": card_number}).encode(),
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def set_latency(base_url: str, path: str, *, before: float, after: float) -> None:
    """Slow every POST with an idempotency key to `path`: `before` seconds before it reaches
    localstripe, `after` seconds between the charge and its answer (a worker killed then has
    charged and never heard)."""
    request = urllib.request.Request(
        f"{base_url}/_proxy/latency",
        data=json.dumps({"path": path, "before": before, "after": after}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def script_decline(base_url: str, customer_id: str, **codes: str) -> None:
    """The next off-session charge of `customer_id` is declined as Stripe declines it, with
    `codes` (`decline_code`, `advice_code`, `network_advice_code`, `network_decline_code`,
    `message`; `code` defaults to `card_declined`). Nothing is charged."""
    request = urllib.request.Request(
        f"{base_url}/_proxy/declines",
        data=json.dumps({"customer": customer_id, **codes}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def advance_clock(base_url: str, seconds: float) -> None:
    """Move the proxy's clock on: idempotency keys older than `KEY_LIFETIME` are pruned."""
    request = urllib.request.Request(
        f"{base_url}/_proxy/clock", data=json.dumps({"advance": seconds}).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def inject_server_errors(base_url: str, path: str, *, ran: bool, times: int = 1) -> None:
    """Answer the next `times` POSTs to `path` with Stripe's `500 api_error`: after the
    request ran at localstripe (`ran`: the charge was made, its answer lost) or instead of
    it. Each 500 is saved for its idempotency key and replayed to retries, as Stripe does."""
    request = urllib.request.Request(
        f"{base_url}/_proxy/faults",
        data=json.dumps({"path": path, "ran": ran, "times": times}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def reset(base_url: str) -> None:
    """Forget every object in localstripe (customers, payments, ...) and every saved
    idempotent response; webhook endpoints stay."""
    request = urllib.request.Request(
        f"{base_url}/_config/data",
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        method="DELETE",
    )
    with urllib.request.urlopen(request, timeout=10):
        pass
