"""Fuzz the API from its own OpenAPI document with schemathesis: no 5xx, and every error in
the envelope `{"error": {"code", "message", "field"?}}`.

The document is the one the app serves at /openapi.json (read over ASGI at import, so that
each operation is a test of its own); the requests go, over ASGI, to a live app on a real
PostgreSQL and Temporal, with a worker running, a valid support key, and for half the
generated `{ref}`s a recovery that exists (in various states), so that support actions
reach real workflows.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from api.app import create_app
from recovery import constants as names
from recovery.models import RecoveryState
from recovery.settings import Settings
from recovery.store import Store
from tests.helpers import INGEST, add_merchant, eventually, failure_body, ingest, is_envelope, relay
from tests.helpers.stack import stack_settings
from tests.reliability.support import WorkerProcess, record, serving_temporal

MAX_EXAMPLES = 30


def _without_lifespan(app: Callable) -> Callable:
    """The app's HTTP side only: serves /openapi.json without connecting to anything."""

    async def serve(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan: documents only")  # "not supported" to the caller
        await app(scope, receive, send)

    return serve


schema = schemathesis.openapi.from_asgi(
    "/openapi.json", _without_lifespan(create_app(Settings(environment="development")))
)
# NUL characters are generated everywhere but in header values: a real server refuses those
# before the app (uvicorn's h11 and httptools answer 400), only an in-process call gets them in.
schema.config.generation.update(exclude_header_characters="\n\r\x1f\x1e\x1d\x1c\x00")

CALLS: Counter[str] = Counter()
STATUSES: Counter[str] = Counter()


@dataclass
class Target:
    app: Any
    merchant_id: str
    key: str
    refs: list[str]
    served_document: dict
    settings: Settings


# Seeded recoveries: (payment method, failure) -> the state the worker takes it to.
SEEDS = [
    ("pm_sim_succeed_on_3", "insufficient_funds"),  # active, cooling down
    ("pm_sim_succeed_on_1", "insufficient_funds"),  # active; recovered when expedited
    ("pm_sim_decline_insufficient_funds", "insufficient_funds"),  # exhausted when pushed
    ("pm_sim_succeed_on_1", "stolen_card"),  # awaiting the customer
    ("pm_sim_pending", "insufficient_funds"),  # stays processing when charged
]


@pytest.fixture(scope="module")
async def target(
    store: Store, pg_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Target]:
    workdir = tmp_path_factory.mktemp("fuzz")
    async with serving_temporal(workdir, "test_api_fuzz") as server:
        task_queue = f"tq-{uuid.uuid4()}"
        merchant_id, key = await add_merchant(store)
        refs = []
        for pm, decline in SEEDS:
            body = failure_body(pm=pm, decline_code=decline)
            await ingest(store, merchant_id, body)
            refs.append(body["payment_ref"])
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        await relay(store, client, task_queue)
        worker = WorkerProcess(pg_dsn, server.address, task_queue, workdir)
        app_settings = stack_settings(pg_dsn, server.address, task_queue)
        app = create_app(app_settings)
        try:
            worker.start()
            with asgi.get_client(app) as http:  # starts the app's lifespan, kept for the module
                served = http.get("/openapi.json").json()
            yield Target(app, merchant_id, key, refs, served, app_settings)
        finally:
            try:
                asgi.shutdown_lifespans()
            finally:
                worker.stop()


def error_envelope(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every 4xx and 5xx answer is `{"error": {"code", "message", "field"?}}`."""
    if response.status_code >= 400:
        try:
            body = response.json()
        except Exception:
            body = None
        assert is_envelope(body), (
            f"{response.status_code} not in the error envelope: {response.text[:300]!r}"
        )


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_fuzz(case: schemathesis.Case, target: Target) -> None:
    assert case.operation.schema.raw_schema == target.served_document  # the app's own document
    if "ref" in (case.path_parameters or {}):
        generated = str(case.path_parameters["ref"])
        pick = zlib.crc32(generated.encode())
        if pick % 2:  # half of them: a recovery that exists
            case.path_parameters["ref"] = target.refs[pick % len(target.refs)]
    response = case.call_and_validate(
        app=target.app,
        headers={"Authorization": f"Bearer {target.key}"},
        checks=[not_a_server_error, error_envelope],
    )
    CALLS[case.operation.label] += 1
    STATUSES[f"{response.status_code // 100}xx"] += 1
    record(
        "api_fuzz",
        operations=len(CALLS),
        examples=sum(CALLS.values()),
        max_examples_per_operation=MAX_EXAMPLES,
        responses=dict(sorted(STATUSES.items())),
        server_errors=STATUSES["5xx"],
        bad_envelopes=0,
    )


def test_every_operation_was_fuzzed(target: Target) -> None:
    """The document's operations all ran above (none skipped or silently filtered out)."""
    if not CALLS:
        pytest.skip("runs after the fuzz tests of this module")
    documented = {
        f"{method.upper()} {path}"
        for path, item in target.served_document["paths"].items()
        for method in item
    }
    assert documented == set(CALLS), documented ^ set(CALLS)


# ---- what the fuzzing found, kept as regression tests ------------------------------------------
#
# A NUL character (U+0000) cannot be stored in a Postgres `text` or `jsonb`. Before
# api/guards.py (commit e8c8a2f) each of these was a 500 internal_error (asyncpg
# CharacterNotInRepertoireError / UntranslatableCharacterError), and a NUL in a support
# action's reason went out in the workflow signal before the audit write failed: the
# workflow's own Postgres writes then failed for ever (a cancelled recovery never ended).


@contextlib.asynccontextmanager
async def _api(target: Target, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The same API in this event loop, answering as a server would (500s included);
    `settings` are changed settings (e.g. webhook secrets)."""
    app = create_app(Settings.model_validate(target.settings.model_dump() | settings))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport,
            base_url="http://api",
            headers={"Authorization": f"Bearer {target.key}"},
        ) as http,
    ):
        yield http


def _assert_refused(r: httpx.Response) -> None:
    """A 4xx in the envelope: 400 for the URL, 422 for the body."""
    assert r.status_code in (400, 422), f"{r.request.method} {r.request.url}: {r.text}"
    assert is_envelope(r.json()), r.text


def _with_nul(where: str) -> dict:
    body = failure_body()
    if where == "metadata":
        body["metadata"] = {"plan": "pro\x00"}
        return body
    obj = body
    *parents, leaf = where.split(".")
    for name in parents:
        obj = obj[name]
    obj[leaf] = f"{obj[leaf]}\x00"
    return body


@pytest.mark.parametrize(
    "where",
    [
        "event_id",
        "customer.id",
        "customer.email",
        "payment_method.id",
        "failure.code",
        "failure.message",
        "metadata",
    ],
)
async def test_nul_in_an_ingested_event_is_refused(target: Target, where: str) -> None:
    """POST /v1/events/payment_failed with "\\u0000" in `where`: was a 500."""
    async with _api(target) as http:
        _assert_refused(await http.post(INGEST, json=_with_nul(where)))


async def test_nul_in_the_audit_filter_is_refused(target: Target) -> None:
    """GET /v1/audit?ref=%00 (schemathesis found it): was a 500."""
    async with _api(target) as http:
        _assert_refused(await http.get("/v1/audit", params={"ref": "\x00"}))


@pytest.mark.parametrize("action", ["cancel", "pause"])
async def test_nul_in_a_support_reason_is_refused_and_leaves_the_recovery_working(
    target: Target, action: str
) -> None:
    """POST /v1/recoveries/by_ref/{ref}/cancel (or pause) {"reason": "a\\u0000b"}: was a
    500 after the signal went out; then finish_recovery (cancel) or save_recovery_state
    (pause, once the cooldown ended) failed for ever on the NUL."""
    async with _api(target) as http:
        # the fuzzing before published random policies for this merchant (a one-day window
        # ends a funds recovery at once): this one runs under the defaults
        r = await http.put("/v1/policy", json={})
        assert r.status_code == 200, r.text
        body = failure_body()
        ref = body["payment_ref"]
        assert (await http.post(INGEST, json=body)).status_code == 202

        async def in_its_cooldown() -> bool:
            rec = (await http.get(f"/v1/recoveries/by_ref/{ref}")).json()
            return rec.get("next_attempt_at") is not None

        await eventually(in_its_cooldown, within=30, what="recovery waiting on its cooldown")
        path = f"/v1/recoveries/by_ref/{ref}"
        _assert_refused(await http.post(f"{path}/{action}", json={"reason": "a\x00b"}))
        # ... and nothing reached the workflow: not paused, and a normal cancel still ends it
        client = await Client.connect(
            target.settings.temporal_address, data_converter=pydantic_data_converter
        )
        handle = client.get_workflow_handle(names.workflow_id_for(target.merchant_id, ref))
        state = await handle.query(names.QUERY_STATE, result_type=RecoveryState)
        assert not state.paused, state.paused_reason
        r = await http.post(f"{path}/cancel", json={"reason": "ops"})
        assert r.status_code == 200, r.text

        async def cancelled() -> bool:
            return (await http.get(path)).json()["status"] == "cancelled"

        await eventually(cancelled, within=15, what="recovery cancelled")


# ---- hostile input: a clear 4xx in the envelope, nothing written ------------------------------
#
# Each of these was a 500 before commit "No 500 on hostile input": deep nesting (RecursionError
# in the route's json.loads), NaN / Infinity / 1e400 (Postgres refuses them in jsonb), dates
# whose UTC time is outside year 1..9999 (asyncpg OverflowError), and signed webhooks with ids
# too long for a btree index or numbers that are NaN.

WEBHOOK_SECRETS = {
    "stripe_api_key": "sk_test_fuzz_0123456789",
    "stripe_webhook_secret": "whsec_fuzz_0123456789",
    "razorpay_key_id": "rzp_test_fuzz",
    "razorpay_key_secret": "rzp_secret_fuzz_0123456789",
    "razorpay_webhook_secret": "rzp_whsec_fuzz_0123456789",
}


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _raw(obj: Any) -> str:
    """`obj` as JSON text, where each `Raw(text)` inside is written as that text itself."""
    texts: dict[str, str] = {}

    def mark(value: Any) -> Any:
        if isinstance(value, Raw):
            texts[marker := f"__raw_{len(texts)}__"] = value.text
            return marker
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        return value

    out = json.dumps(mark(obj))
    for marker, text in texts.items():
        out = out.replace(f'"{marker}"', text)
    return out


@dataclass
class Raw:
    text: str


def _raw_body(metadata: Any = None, **fields: Any) -> str:
    """A valid ingest body as JSON text, with `fields` (and metadata["x"]) replaced."""
    body = failure_body() | fields
    if metadata is not None:
        body["metadata"] = {"x": metadata}
    return _raw(body)


HOSTILE_INGEST_BODIES = {
    "metadata nested 1,000 deep": _raw_body(Raw(_nested(1000))),
    "metadata nested 100 deep": _raw_body(Raw(_nested(100))),
    "metadata NaN": _raw_body(Raw("NaN")),
    "metadata -Infinity": _raw_body(Raw("-Infinity")),
    "metadata 1e400": _raw_body(Raw("1e400")),
    "amount NaN": _raw_body(amount=Raw("NaN")),
    "amount 1e400": _raw_body(amount=Raw("1e400")),
    "occurred_at year 1 east of UTC": _raw_body(occurred_at="0001-01-01T00:00:00+05:00"),
    "occurred_at year 9999 west of UTC": _raw_body(occurred_at="9999-12-31T23:59:59-05:00"),
    "body nested 100,000 deep": "[" * 100_000 + "]" * 100_000,
}


async def _events_of(store: Store, merchant_id: str) -> int:
    async with store.pool.acquire() as conn:
        return await conn.fetchval(
            "SELECT count(*) FROM payment_events WHERE merchant_id = $1", merchant_id
        )


@pytest.mark.parametrize("name", list(HOSTILE_INGEST_BODIES))
async def test_hostile_ingest_body_is_refused(target: Target, store: Store, name: str) -> None:
    async with _api(target) as http:
        before = await _events_of(store, target.merchant_id)
        r = await http.post(
            INGEST,
            content=HOSTILE_INGEST_BODIES[name],
            headers={"Content-Type": "application/json"},
        )
        assert 400 <= r.status_code < 500, f"{name}: {r.status_code} {r.text[:300]}"
        assert is_envelope(r.json()), r.text
        assert await _events_of(store, target.merchant_id) == before
        assert (await http.get("/healthz")).status_code == 200


def _cursor(started_at: str) -> str:
    raw = json.dumps([started_at, "rec_x"]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor("0001-01-01T00:00:00+05:00"),
        _cursor("9999-12-31T23:59:59-05:00"),
        _cursor("2026-01-01T00:00:00"),  # no offset
        _cursor("NaN"),
        base64.urlsafe_b64encode(b"[" * 300).decode(),  # not a pair
    ],
)
async def test_hostile_list_cursor_is_refused(target: Target, cursor: str) -> None:
    async with _api(target) as http:
        r = await http.get("/v1/recoveries", params={"cursor": cursor})
        assert r.status_code == 400, r.text
        assert is_envelope(r.json()) and r.json()["error"]["field"] == "cursor", r.text


def _stripe_signed(payload: bytes) -> dict[str, str]:
    ts = int(time.time())
    secret = WEBHOOK_SECRETS["stripe_webhook_secret"]
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={ts},v1={sig}", "Content-Type": "application/json"}


def _razorpay_signed(payload: bytes) -> dict[str, str]:
    """Signed, with an unsigned `X-Razorpay-Event-Id` of 5 kB that nothing may read."""
    secret = WEBHOOK_SECRETS["razorpay_webhook_secret"]
    sig = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return {
        "X-Razorpay-Signature": sig,
        "X-Razorpay-Event-Id": "evt_" + "x" * 5000,
        "Content-Type": "application/json",
    }


def _stripe_event(event_id: str = "evt_1", pi_id: str = "pi_1", amount: str = "100") -> bytes:
    obj = {"id": pi_id, "amount": Raw(amount), "amount_received": Raw(amount), "metadata": {}}
    event = {"id": event_id, "type": "payment_intent.succeeded", "data": {"object": obj}}
    return _raw(event).encode()


def _razorpay_event(
    payment_id: str = "pay_1", amount: str = "100", event: str = "payment.captured"
) -> bytes:
    payment = {"id": payment_id, "amount": Raw(amount), "currency": "INR", "notes": {}}
    return _raw({"event": event, "payload": {"payment": {"entity": payment}}}).encode()


LONG = "x" * 5000
HOSTILE_WEBHOOKS = {
    "stripe event id 5 kB": ("stripe", _stripe_event(event_id="evt_" + LONG)),
    "stripe payment id 5 kB": ("stripe", _stripe_event(pi_id="pi_" + LONG)),
    "stripe amount NaN": ("stripe", _stripe_event(amount="NaN")),
    "stripe amount 1e400": ("stripe", _stripe_event(amount="1e400")),
    "stripe nested 100,000 deep": ("stripe", b"[" * 100_000 + b"]" * 100_000),
    "razorpay event name 5 kB": ("razorpay", _razorpay_event(event="payment." + LONG)),
    "razorpay payment id 5 kB": ("razorpay", _razorpay_event(payment_id="pay_" + LONG)),
    "razorpay amount NaN": ("razorpay", _razorpay_event(amount="NaN")),
    "razorpay amount -Infinity": ("razorpay", _razorpay_event(amount="-Infinity")),
}


async def _webhooks_stored(store: Store) -> int:
    async with store.pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM webhook_events")


@pytest.mark.parametrize("name", list(HOSTILE_WEBHOOKS))
async def test_hostile_signed_webhook_is_refused(target: Target, store: Store, name: str) -> None:
    psp, payload = HOSTILE_WEBHOOKS[name]
    headers = _stripe_signed(payload) if psp == "stripe" else _razorpay_signed(payload)
    async with _api(target, **WEBHOOK_SECRETS) as http:
        before = await _webhooks_stored(store)
        r = await http.post(f"/v1/webhooks/{psp}", content=payload, headers=headers)
        assert r.status_code == 400, f"{name}: {r.status_code} {r.text[:300]}"
        assert is_envelope(r.json()), r.text
        assert await _webhooks_stored(store) == before
        assert (await http.get("/healthz")).status_code == 200
