"""`GET /v1/analytics/summary` and `/timeseries` against hand-computed figures.

The fixture is written straight into PostgreSQL with fixed times (the figures are about
dates, so no workflow runs): two currencies, runs that started before the period and ended
in it, runs that started in it and ended after it, payments received after the end and
duplicates, and another merchant's data, which must not count. Period: 2026-03-01 to
2026-03-08 (UTC, `to` exclusive).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api.routes.analytics import SummaryOut
from recovery.auth import generate_key, register_key
from recovery.dbsetup import open_store
from recovery.migrate import migration_files
from recovery.models import (
    Category,
    ChargeRequest,
    ChargeResult,
    Customer,
    Failure,
    PaymentMethod,
    RecoveryState,
    RecoveryStatus,
    WebhookEvent,
)
from recovery.store import AnalyticsSummary, Store
from recovery.store.analytics import OTHER_MERCHANTS
from scripts.stack import free_port
from tests.helpers import add_merchant, assert_envelope, failure_body, ingest, running_stack
from tests.helpers.stack import Stack

SUMMARY = "/v1/analytics/summary"
SERIES = "/v1/analytics/timeseries"
PERIOD = {"from": "2026-03-01", "to": "2026-03-08"}


def at(text: str) -> datetime:
    """`"03-02 10:00"` is 2026-03-02T10:00Z."""
    return datetime.fromisoformat(f"2026-{text}:00+00:00")


@dataclass
class Seeder:
    conn: asyncpg.Connection
    merchant_id: str
    n: int = 0

    async def run(
        self,
        *,
        amount: int,
        currency: str,
        started: str,
        status: str = "active",
        ended: str | None = None,
        category: str | None = "funds",
        attempts: tuple[str, ...] = (),
        paid_by: str | None = None,
    ) -> tuple[str, str]:
        """A payment and one recovery run of it; `attempts` are their outcomes in order, and
        `paid_by` the source of the payment that settled it ("attempt": the last attempt's).
        Returns (recovery id, payment ref)."""
        self.n += 1
        ref = f"{self.merchant_id}-order-{self.n}"
        rid = f"rec_{ref}"
        await self.conn.execute(
            "INSERT INTO transactions (merchant_id, payment_ref, psp, amount, currency)"
            " VALUES ($1, $2, 'simulator', $3, $4)",
            self.merchant_id,
            ref,
            amount,
            currency,
        )
        await self.conn.execute(
            "INSERT INTO recoveries (id, merchant_id, payment_ref, workflow_id, status,"
            " category, started_at, ended_at, attempt_count)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            rid,
            self.merchant_id,
            ref,
            f"recovery/{self.merchant_id}/{ref}",
            status,
            category,
            at(started),
            at(ended) if ended else None,
            len(attempts),
        )
        for number, outcome in enumerate(attempts, start=1):
            await self.conn.execute(
                "INSERT INTO attempts (recovery_id, number, idempotency_key, psp, amount,"
                " currency, status, psp_payment_id, merchant_id, created_at)"
                " VALUES ($1, $2, $3, 'simulator', $4, $5, $6, $7, $8, $9)",
                rid,
                number,
                f"{rid}:attempt:{number}",
                amount,
                currency,
                outcome,
                f"pi_{rid}_{number}",
                self.merchant_id,
                at(started),
            )
        if paid_by is not None:
            psp_id = f"pi_{rid}_{len(attempts)}" if paid_by == "attempt" else f"chk_{rid}"
            pid = await self.payment(
                ref, rid, "recovered", when=ended or started, source=paid_by, psp_payment_id=psp_id
            )
            await self.conn.execute("UPDATE recoveries SET paid_by = $2 WHERE id = $1", rid, pid)
        return rid, ref

    async def payment(
        self,
        ref: str,
        rid: str,
        disposition: str,
        *,
        when: str,
        source: str = "stripe_webhook",
        psp_payment_id: str | None = None,
        amount: int | None = None,
        currency: str | None = None,
        refund_status: str | None = None,
    ) -> str:
        self.n += 1
        pid = f"pay_{self.merchant_id}_{self.n}"
        await self.conn.execute(
            "INSERT INTO received_payments (id, merchant_id, payment_ref, recovery_id, identity,"
            " source, psp, psp_payment_id, amount, currency, disposition, refund_status,"
            " received_at) VALUES ($1, $2, $3, $4, $5, $6, 'simulator', $7, $8, $9, $10, $11,"
            " $12)",
            pid,
            self.merchant_id,
            ref,
            rid,
            f"identity:{pid}",
            source,
            psp_payment_id,
            amount,
            currency,
            disposition,
            refund_status,
            at(when),
        )
        return pid


@pytest.fixture
async def stack(store: Store, pg_dsn: str, dev_env: WorkflowEnvironment) -> AsyncIterator[Stack]:
    address = dev_env.client.service_client.config.target_host
    async with running_stack(store, pg_dsn, address, worker=False) as s:
        yield s


async def seed(store: Store, merchant_id: str) -> None:
    """The fixture described in the module docstring, for `merchant_id`."""
    async with store.pool.acquire() as conn:
        s = Seeder(conn, merchant_id)
        # recovered by our first attempt: 1 day
        r1, ref1 = await s.run(
            amount=1000, currency="usd", started="03-01 10:00", status="recovered",
            ended="03-02 10:00", attempts=("succeeded",), paid_by="attempt",
        )  # fmt: skip
        # recovered by the customer through a link, after our failed attempt: 6 hours
        r2, ref2 = await s.run(
            amount=2500, currency="eur", started="03-02 00:00", status="recovered",
            ended="03-02 06:00", category="issuer_decline", attempts=("failed",),
            paid_by="simulator_checkout",
        )  # fmt: skip
        # started before the period, recovered in it by our second attempt: 11 days
        await s.run(
            amount=700, currency="usd", started="02-20 00:00", status="recovered",
            ended="03-03 00:00", attempts=("failed", "succeeded"), paid_by="attempt",
        )  # fmt: skip
        await s.run(
            amount=400, currency="usd", started="03-05 00:00", status="exhausted",
            ended="03-07 00:00", category="network", attempts=("failed", "failed"),
        )  # fmt: skip
        r5, ref5 = await s.run(
            amount=300, currency="eur", started="03-06 00:00", status="cancelled",
            ended="03-06 12:00", category="unknown",
        )  # fmt: skip
        # started in the period, recovered after it: open at the period's end
        await s.run(
            amount=900, currency="usd", started="03-06 08:00", status="recovered",
            ended="03-09 00:00", attempts=("succeeded",), paid_by="attempt",
        )  # fmt: skip
        await s.run(amount=50, currency="usd", started="03-07 23:59", category=None)
        await s.run(amount=600, currency="usd", started="02-25 00:00")  # open since before
        await s.run(amount=800, currency="usd", started="03-08 01:00")  # after the period
        await s.run(
            amount=1000, currency="eur", started="02-01 00:00", status="recovered",
            ended="02-05 00:00", attempts=("succeeded",), paid_by="attempt",
        )  # fmt: skip
        # the customer paid the cancelled one after all: kept
        await s.payment(ref5, r5, "paid_after_end", when="03-06 18:00", amount=300, currency="eur")
        # paid twice: one refunded, one whose refund is pending (amount not reported)
        await s.payment(
            ref1, r1, "duplicate", when="03-03 00:00", amount=1000, currency="usd",
            refund_status="succeeded",
        )  # fmt: skip
        await s.payment(ref2, r2, "duplicate", when="03-04 00:00", refund_status="pending")
        await s.payment(
            ref1, r1, "duplicate", when="03-09 00:00", amount=1000, currency="usd",
            refund_status="succeeded",
        )  # fmt: skip


EXPECTED_SUMMARY: dict[str, Any] = {
    "from": "2026-03-01T00:00:00Z",
    "to": "2026-03-08T00:00:00Z",
    "recoveries": {"started": 6, "recovered": 3, "exhausted": 1, "cancelled": 1, "open": 3},
    "recovery_rate": 0.6,
    "recovered_amount": {"eur": 2500, "usd": 1700},
    "open_amount": {"usd": 1550},
    "median_seconds_to_recover": 86400.0,
    "by_category": {
        "funds": {"started": 2, "recovered": 2},
        "issuer_decline": {"started": 1, "recovered": 1},
        "network": {"started": 1, "recovered": 0},
        "unclassified": {"started": 1, "recovered": 0},
        "unknown": {"started": 1, "recovered": 0},
    },
    "by_attempt": [
        {"attempt": 0, "recovered": 1},
        {"attempt": 1, "recovered": 1},
        {"attempt": 2, "recovered": 1},
    ],
    "received_after_end": {"count": 1, "amount": {"eur": 300}},
    "refunded_duplicates": {"count": 1, "amount": {"usd": 1000}, "pending": 1, "failed": 0},
}

ZERO_SUMMARY: dict[str, Any] = {
    **EXPECTED_SUMMARY,
    "recoveries": {"started": 0, "recovered": 0, "exhausted": 0, "cancelled": 0, "open": 0},
    "recovery_rate": None,
    "recovered_amount": {},
    "open_amount": {},
    "median_seconds_to_recover": None,
    "by_category": {},
    "by_attempt": [],
    "received_after_end": {"count": 0, "amount": {}},
    "refunded_duplicates": {"count": 0, "amount": {}, "pending": 0, "failed": 0},
}


async def keys(stack: Stack, role: str) -> tuple[str, str]:
    """A merchant with the fixture and a key of `role` for it."""
    merchant_id, key = await add_merchant(stack.store, role)
    await seed(stack.store, merchant_id)
    return merchant_id, key


async def test_summary_matches_the_hand_computed_figures(stack: Stack) -> None:
    _, key = await keys(stack, "merchant")
    await keys(stack, "merchant")  # another merchant's identical data: never counted
    r = await stack.http.get(SUMMARY, params=PERIOD, headers=stack.auth(key))
    assert r.status_code == 200, r.text
    assert r.json() == EXPECTED_SUMMARY


async def test_a_later_period_counts_the_run_that_ended_after_the_first(stack: Stack) -> None:
    _, key = await keys(stack, "merchant")
    r = await stack.http.get(
        SUMMARY, params={"from": "2026-03-08", "to": "2026-03-10"}, headers=stack.auth(key)
    )
    assert r.status_code == 200, r.text
    body = r.json()
    # started 03-08 01:00; the one started 03-06 recovered 03-09; the 2nd duplicate refunded
    assert body["recoveries"] == {
        "started": 1, "recovered": 1, "exhausted": 0, "cancelled": 0, "open": 3,
    }  # fmt: skip
    assert body["recovered_amount"] == {"usd": 900}
    assert body["open_amount"] == {"usd": 1450}  # 50 + 600 + 800
    assert body["recovery_rate"] == 1.0
    assert body["median_seconds_to_recover"] == 2 * 86400 + 16 * 3600
    assert body["by_attempt"] == [{"attempt": 1, "recovered": 1}]
    assert body["refunded_duplicates"] == {
        "count": 1, "amount": {"usd": 1000}, "pending": 0, "failed": 0,
    }  # fmt: skip


async def test_admin_names_the_merchant_and_others_cannot(stack: Stack) -> None:
    merchant_id, merchant_key = await keys(stack, "merchant")
    other_id, other_key = await keys(stack, "support")
    _, admin_key = await add_merchant(stack.store, "admin")

    r = await stack.http.get(
        SUMMARY, params={**PERIOD, "merchant_id": merchant_id}, headers=stack.auth(admin_key)
    )
    assert r.status_code == 200, r.text
    assert r.json() == EXPECTED_SUMMARY
    # the admin's own merchant has nothing
    r = await stack.http.get(SUMMARY, params=PERIOD, headers=stack.auth(admin_key))
    assert r.json() == ZERO_SUMMARY
    # a merchant or support key naming another merchant: 404, for both endpoints
    for path in (SUMMARY, SERIES):
        for key, other in ((merchant_key, other_id), (other_key, merchant_id)):
            r = await stack.http.get(
                path, params={**PERIOD, "merchant_id": other}, headers=stack.auth(key)
            )
            assert_envelope(r, 404, "not_found")
    r = await stack.http.get(SUMMARY, params=PERIOD)
    assert_envelope(r, 401)


async def test_timeseries_by_utc_day(stack: Stack) -> None:
    _, key = await keys(stack, "merchant")
    await keys(stack, "merchant")
    r = await stack.http.get(SERIES, params={**PERIOD, "interval": "day"}, headers=stack.auth(key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["from"], body["to"], body["interval"]) == (
        "2026-03-01T00:00:00Z", "2026-03-08T00:00:00Z", "day",
    )  # fmt: skip
    assert body["data"] == [
        {"date": "2026-03-01", "started": 1, "recovered": 0, "recovered_amount": {}},
        {
            "date": "2026-03-02", "started": 1, "recovered": 2,
            "recovered_amount": {"eur": 2500, "usd": 1000},
        },
        {"date": "2026-03-03", "started": 0, "recovered": 1, "recovered_amount": {"usd": 700}},
        {"date": "2026-03-04", "started": 0, "recovered": 0, "recovered_amount": {}},
        {"date": "2026-03-05", "started": 1, "recovered": 0, "recovered_amount": {}},
        {"date": "2026-03-06", "started": 2, "recovered": 0, "recovered_amount": {}},
        {"date": "2026-03-07", "started": 1, "recovered": 0, "recovered_amount": {}},
    ]  # fmt: skip
    # the totals agree with the summary's
    summary = (await stack.http.get(SUMMARY, params=PERIOD, headers=stack.auth(key))).json()
    assert sum(d["started"] for d in body["data"]) == summary["recoveries"]["started"]
    assert sum(d["recovered"] for d in body["data"]) == summary["recoveries"]["recovered"]


async def test_a_period_with_offsets_counts_partial_days(stack: Stack) -> None:
    _, key = await keys(stack, "merchant")
    # 2026-03-02T09:00Z to 2026-03-06T06:00Z
    params = {"from": "2026-03-02T10:00:00+01:00", "to": "2026-03-06T06:00:00Z"}
    r = await stack.http.get(SERIES, params=params, headers=stack.auth(key))
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["date"] for d in data] == ["2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05",
                                         "2026-03-06"]  # fmt: skip
    # 03-02: r2 started at 00:00 (before 09:00: not counted) but r1 recovered at 10:00
    assert data[0] == {
        "date": "2026-03-02", "started": 0, "recovered": 1, "recovered_amount": {"usd": 1000},
    }  # fmt: skip
    assert data[4]["started"] == 1  # r5 at 00:00 counted; r6 at 08:00 is after the end


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-02-30"}, "from"),
        ({"to": "2026-03-01T00:00:00"}, "to"),  # no offset
        ({"from": "2026-03-08", "to": "2026-03-01"}, "from"),
        ({"from": "2026-03-01", "to": "2026-03-01"}, "from"),
        ({"to": "9999-12-31T23:00:00-05:00"}, "to"),
        ({"from": "0001-01-01T00:00:00+01:00"}, "from"),
        ({"to": "0001-01-02"}, "to"),
        ({"from": "2000-01-01", "to": "2020-01-01"}, "from"),
        ({"from": "2026-03-01", "to": "2026-03-08", "merchant_id": "x" * 65}, "merchant_id"),
    ],
)
async def test_bad_periods_are_422_in_the_envelope(
    stack: Stack, params: dict[str, str], field: str
) -> None:
    for path in (SUMMARY, SERIES):
        r = await stack.http.get(path, params=params, headers=stack.auth())
        err = assert_envelope(r, 422, "validation_error")
        assert err.get("field") == field, err


async def test_timeseries_refuses_another_interval_and_over_a_year(stack: Stack) -> None:
    r = await stack.http.get(SERIES, params={"interval": "week"}, headers=stack.auth())
    assert assert_envelope(r, 422, "validation_error")["field"] == "interval"
    r = await stack.http.get(
        SERIES, params={"from": "2025-01-01", "to": "2026-03-01"}, headers=stack.auth()
    )
    assert assert_envelope(r, 422, "validation_error")["field"] == "from"
    # a summary may span that
    r = await stack.http.get(
        SUMMARY, params={"from": "2025-01-01", "to": "2026-03-01"}, headers=stack.auth()
    )
    assert r.status_code == 200, r.text


async def test_default_period_is_the_last_30_days(stack: Stack) -> None:
    merchant_id, key = await add_merchant(stack.store, "merchant")
    r = await stack.http.get(SUMMARY, headers=stack.auth(key))
    assert r.status_code == 200, r.text
    body = r.json()
    start = datetime.fromisoformat(body["from"])
    end = datetime.fromisoformat(body["to"])
    assert (end - start).days == 30
    assert abs((datetime.now(UTC) - end).total_seconds()) < 60
    r = await stack.http.get(SERIES, headers=stack.auth(key))
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 31  # today's partial day and 30 days before it

    # a new key sees its own merchant only; a support role reads it too
    support = generate_key()
    await register_key(stack.store, merchant_id, "support", support)
    assert (await stack.http.get(SUMMARY, headers=stack.auth(support))).status_code == 200


# ---- what each run carries for the figures (migration 0019) ----------------------------------
#
# A run keeps its payment's amount and currency and the number of the attempt that recovered
# it. The tests below change what those come from through the store's own writers and check
# the figures, and that every run still agrees with the figures' definitions (`_DRIFT` is the
# join the summary made before 0019: any row it returns is a stale copy).

_DRIFT = """
SELECT r.id, r.amount, r.currency, r.recovered_by_attempt, t.amount AS payment_amount,
       t.currency AS payment_currency, CASE WHEN r.status = 'recovered'
       THEN coalesce(a.number, 0) END AS attempt
  FROM recoveries r JOIN transactions t USING (merchant_id, payment_ref)
  LEFT JOIN received_payments p ON p.id = r.paid_by
  LEFT JOIN LATERAL (
        SELECT number FROM attempts a
         WHERE a.recovery_id = r.id AND a.status = 'succeeded'
           AND (p.id IS NULL OR a.psp_payment_id = p.psp_payment_id)
         ORDER BY number LIMIT 1) a ON true
 WHERE r.merchant_id = $1
   AND ((r.amount, r.currency) IS DISTINCT FROM (t.amount, t.currency)
        OR r.recovered_by_attempt IS DISTINCT FROM
           CASE WHEN r.status = 'recovered' THEN coalesce(a.number, 0) END)
"""


async def assert_no_drift(store: Store, merchant_id: str) -> None:
    stale = await store.pool.fetch(_DRIFT, merchant_id)
    assert [dict(r) for r in stale] == []


async def now_figures(store: Store, merchant_id: str) -> AnalyticsSummary:
    """The merchant's figures over the hour around now (the runs below start and end now)."""
    now = datetime.now(UTC)
    return await store.analytics_summary(
        merchant_id, now - timedelta(hours=1), now + timedelta(hours=1)
    )


def state_of(merchant_id: str, ref: str, recovery_id: str, status: RecoveryStatus) -> RecoveryState:
    return RecoveryState(
        merchant_id=merchant_id,
        payment_ref=ref,
        recovery_id=recovery_id,
        status=status,
        category=Category.FUNDS,
        ended_reason="test",
    )


async def charge(store: Store, merchant_id: str, ref: str, recovery_id: str, number: int) -> str:
    """Our attempt `number` of the run, begun (as the workflow's charge begins it); its key."""
    key = f"{recovery_id}:attempt:{number}"
    await store.begin_attempt(
        ChargeRequest(
            merchant_id=merchant_id,
            recovery_id=recovery_id,
            payment_ref=ref,
            attempt=number,
            idempotency_key=key,
            psp="stripe",
            amount=4999,
            currency="usd",
            customer=Customer(id="cus_1"),
            payment_method=PaymentMethod(id="pm_1"),
            original_failure=Failure(code="card_declined"),
        )
    )
    return key


def paid(merchant_id: str, ref: str, psp_payment_id: str) -> WebhookEvent:
    """Stripe's word that `psp_payment_id` paid `ref` (a checkout of the customer's, or our
    own charge's PaymentIntent)."""
    return WebhookEvent(
        psp="stripe",
        event_id=f"evt_{uuid.uuid4().hex}",
        kind="payment_succeeded",
        psp_type="payment_intent.succeeded",
        merchant_id=merchant_id,
        payment_ref=ref,
        psp_payment_id=psp_payment_id,
        amount=4999,
        currency="usd",
    )


async def test_a_later_event_of_the_payment_changes_the_amount_of_each_of_its_runs(
    store: Store,
) -> None:
    merchant_id, _ = await add_merchant(store, "merchant")
    first = failure_body(amount=1000)
    ref = first["payment_ref"]
    run1 = (await ingest(store, merchant_id, first)).body["recovery_id"]
    assert (await now_figures(store, merchant_id)).open_amount == {"usd": 1000}
    # a second failure of the payment joins the open run, with another amount
    second = failure_body(ref, amount=1500)
    await ingest(store, merchant_id, second)
    figures = await now_figures(store, merchant_id)
    assert (figures.open, figures.open_amount) == (1, {"usd": 1500})
    await assert_no_drift(store, merchant_id)

    ended = state_of(merchant_id, ref, run1, RecoveryStatus.RECOVERED)
    assert (await store.finish(ended, [first["event_id"], second["event_id"]])).finished
    figures = await now_figures(store, merchant_id)
    assert (figures.recovered, figures.recovered_amount, figures.open) == (1, {"usd": 1500}, 0)

    # a failure after the end opens the next run, in another currency: a recovery's amount
    # is its payment's, so the recovered run shows it too (as the figures always counted it)
    third = failure_body(ref, amount=2000) | {"currency": "eur"}
    run2 = (await ingest(store, merchant_id, third)).body["recovery_id"]
    assert run2 != run1
    figures = await now_figures(store, merchant_id)
    assert (figures.started, figures.recovered_amount, figures.open_amount) == (
        2, {"eur": 2000}, {"eur": 2000},
    )  # fmt: skip
    await assert_no_drift(store, merchant_id)


async def test_a_redriven_payment_opens_a_run_with_the_payment_amount(store: Store) -> None:
    merchant_id, _ = await add_merchant(store, "merchant")
    body = failure_body(amount=700)
    ref = body["payment_ref"]
    run1 = (await ingest(store, merchant_id, body)).body["recovery_id"]
    exhausted = state_of(merchant_id, ref, run1, RecoveryStatus.EXHAUSTED)
    assert (await store.finish(exhausted, [body["event_id"]])).finished
    run2 = await store.redrive(merchant_id, ref)
    figures = await now_figures(store, merchant_id)
    assert (figures.started, figures.exhausted, figures.open, figures.open_amount) == (
        2, 1, 1, {"usd": 700},
    )  # fmt: skip
    # the redriven run recovered by our first attempt of it
    key = await charge(store, merchant_id, ref, run2, 1)
    await store.complete_attempt(key, ChargeResult(status="succeeded", psp_payment_id="pi_1"))
    redriven = await store.get_recovery(merchant_id, ref)
    assert redriven.id == run2 and redriven.paid_by is not None
    redriven_events = await store.pool.fetch(
        "SELECT event_id FROM payment_events WHERE recovery_id = $1", run2
    )
    recovered = state_of(merchant_id, ref, run2, RecoveryStatus.RECOVERED)
    assert (await store.finish(recovered, [r["event_id"] for r in redriven_events])).finished
    figures = await now_figures(store, merchant_id)
    assert (figures.recovered, figures.recovered_amount, figures.by_attempt) == (
        1, {"usd": 700}, ((1, 1),),
    )  # fmt: skip
    await assert_no_drift(store, merchant_id)


async def test_the_attempt_that_recovered_a_run_whichever_way_it_was_paid(store: Store) -> None:
    merchant_id, _ = await add_merchant(store, "merchant")

    async def run() -> tuple[str, str, str]:
        body = failure_body()
        res = await ingest(store, merchant_id, body)
        return body["payment_ref"], res.body["recovery_id"], body["event_id"]

    async def recover(ref: str, rid: str, event_id: str) -> None:
        state = state_of(merchant_id, ref, rid, RecoveryStatus.RECOVERED)
        assert (await store.finish(state, [event_id])).finished

    # our second attempt paid: attempt 2
    ref, rid, evt = await run()
    key = await charge(store, merchant_id, ref, rid, 1)
    await store.complete_attempt(key, ChargeResult(status="failed", failure=Failure(code="x")))
    key = await charge(store, merchant_id, ref, rid, 2)
    await store.complete_attempt(key, ChargeResult(status="succeeded", psp_payment_id="pi_a2"))
    await recover(ref, rid, evt)
    # the customer paid through a checkout; our charge, pending, succeeded after the end and
    # is refunded as a duplicate: still 0 (it did not recover the run)
    ref, rid, evt = await run()
    key = await charge(store, merchant_id, ref, rid, 1)
    await store.complete_attempt(key, ChargeResult(status="processing", psp_payment_id="pi_b1"))
    await store.record_webhook(paid(merchant_id, ref, "cs_customer"), {})
    await recover(ref, rid, evt)
    await store.complete_attempt(key, ChargeResult(status="succeeded", psp_payment_id="pi_b1"))
    # Stripe told of our own charge's payment before our charge's answer came, and the run
    # ended recovered by it: 0 at the end, then attempt 1 once the answer says so
    ref, rid, evt = await run()
    key = await charge(store, merchant_id, ref, rid, 1)
    await store.record_webhook(paid(merchant_id, ref, "pi_c1"), {})
    await recover(ref, rid, evt)
    assert (await now_figures(store, merchant_id)).by_attempt == ((0, 2), (2, 1))
    await store.complete_attempt(key, ChargeResult(status="succeeded", psp_payment_id="pi_c1"))

    figures = await now_figures(store, merchant_id)
    assert (figures.recovered, figures.by_attempt) == (3, ((0, 1), (1, 1), (2, 1)))
    assert figures.duplicates["pending"].count == 1
    await assert_no_drift(store, merchant_id)


async def test_a_run_settled_before_payments_were_recorded_counts_its_first_success(
    store: Store,
) -> None:
    """No payment of record settled it (`paid_by` is empty): its first succeeded attempt,
    however its attempts were written (here after the run, as a repair would)."""
    merchant_id, _ = await add_merchant(store, "merchant")
    async with store.pool.acquire() as conn:
        await Seeder(conn, merchant_id).run(
            amount=100, currency="usd", started="03-01 00:00", status="recovered",
            ended="03-01 01:00", attempts=("failed", "succeeded", "succeeded"),
        )  # fmt: skip
    figures = await store.analytics_summary(merchant_id, at("03-01 00:00"), at("03-02 00:00"))
    assert figures.by_attempt == ((2, 1),)
    await assert_no_drift(store, merchant_id)


async def test_a_run_inserted_before_its_payment_is_refused_clearly(store: Store) -> None:
    """A run takes its amount from its payment: a statement that inserts both (the payment
    in a WITH) cannot, since it does not see its own WITH's rows. The store never does that."""
    merchant_id, _ = await add_merchant(store, "merchant")
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="insert its payment"):
        await store.pool.execute(
            "WITH t AS (INSERT INTO transactions (merchant_id, payment_ref, psp, amount, currency)"
            " VALUES ($1, 'order-1', 'simulator', 100, 'usd') RETURNING 1)"
            " INSERT INTO recoveries (id, merchant_id, payment_ref, workflow_id)"
            " VALUES ('rec_' || $1, $1, 'order-1', 'wf')",
            merchant_id,
        )


@contextlib.asynccontextmanager
async def fresh_database(pg_server_dsn: str) -> AsyncIterator[str]:
    """A new empty database (no migration applied), dropped at the end: its dsn."""
    name = f"recovery_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlunsplit(urlsplit(pg_server_dsn)._replace(path=f"/{name}"))
    finally:
        admin = await asyncpg.connect(pg_server_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def test_migration_0019_fills_the_runs_already_there(pg_server_dsn: str) -> None:
    """The hand-computed fixture written under migration 0018's schema, then 0019 applied:
    the same figures, and every run as its triggers would have kept it."""
    async with fresh_database(pg_server_dsn) as dsn:
        old = await Store.connect(dsn)
        try:
            await old.pool.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
                " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for version, migration, sql in migration_files():
                if version < 19:
                    await old.pool.execute(sql)
                    await old.pool.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        version,
                        migration,
                    )
            await old.ensure_merchant("mer_before_0019", "Before 0019")
            await seed(old, "mer_before_0019")
        finally:
            await old.close()
        store = await open_store(dsn)  # applies 0019 and any later migration
        try:
            figures = await store.analytics_summary(
                "mer_before_0019", at("03-01 00:00"), at("03-08 00:00")
            )
            assert SummaryOut.of(figures).model_dump(mode="json", by_alias=True) == (
                EXPECTED_SUMMARY
            )
            await assert_no_drift(store, "mer_before_0019")
        finally:
            await store.close()


# ---- the figures per merchant, for /metrics ---------------------------------------------------


async def seed_merchants(store: Store) -> None:
    """Four merchants; since 03-01: mer_b has the most runs open or started (8), then mer_a
    (6), mer_c (2), mer_d (1)."""
    for merchant_id in ("mer_a", "mer_b", "mer_c", "mer_d"):
        await store.ensure_merchant(merchant_id, merchant_id)
    async with store.pool.acquire() as conn:
        a = Seeder(conn, "mer_a")
        await a.run(
            amount=1000, currency="usd", started="03-02 00:00", status="recovered",
            ended="03-02 02:00", attempts=("succeeded",), paid_by="attempt",
        )  # fmt: skip
        await a.run(
            amount=500, currency="eur", started="03-02 00:00", status="recovered",
            ended="03-03 00:00", paid_by="simulator_checkout",
        )  # fmt: skip
        rid, ref = await a.run(
            amount=300, currency="usd", started="03-01 12:00", status="exhausted",
            ended="03-04 00:00", attempts=("failed",),
        )  # fmt: skip
        await a.payment(ref, rid, "paid_after_end", when="03-05 00:00", amount=300, currency="usd")
        await a.run(amount=200, currency="usd", started="03-05 00:00")
        await a.run(amount=100, currency="usd", started="02-20 00:00")
        rid, ref = await a.run(
            amount=900, currency="usd", started="02-01 00:00", status="recovered",
            ended="02-05 00:00", attempts=("succeeded",), paid_by="attempt",
        )  # fmt: skip
        await a.payment(ref, rid, "duplicate", when="02-28 00:00", refund_status="pending")
        b = Seeder(conn, "mer_b")
        for _ in range(4):
            await b.run(amount=50, currency="usd", started="03-06 00:00", category=None)
        c = Seeder(conn, "mer_c")
        await c.run(amount=70, currency="eur", started="03-06 00:00")
        await c.run(
            amount=400, currency="usd", started="02-25 00:00", status="recovered",
            ended="03-01 00:00", attempts=("failed", "succeeded"), paid_by="attempt",
        )  # fmt: skip
        d = Seeder(conn, "mer_d")
        rid, ref = await d.run(
            amount=80, currency="usd", started="03-02 00:00", status="cancelled",
            ended="03-02 06:00", category="network",
        )  # fmt: skip
        await d.payment(
            ref, rid, "duplicate", when="03-03 00:00", amount=80, currency="usd",
            refund_status="succeeded",
        )  # fmt: skip


async def test_figures_per_merchant_name_the_busiest_and_sum_the_rest(
    pg_server_dsn: str,
) -> None:
    async with fresh_database(pg_server_dsn) as dsn:
        store = await open_store(dsn)
        try:
            await seed_merchants(store)
            f = await store.merchant_figures(at("03-01 00:00"), top=2)
            other = OTHER_MERCHANTS
            assert f.open == {"mer_a": 2, "mer_b": 4, other: 1}
            assert f.open_amount == {
                ("mer_a", "usd"): 300,
                ("mer_b", "usd"): 200,
                (other, "eur"): 70,
            }
            assert f.started == {
                ("mer_a", "funds"): 4, ("mer_b", "unclassified"): 4, (other, "funds"): 1,
                (other, "network"): 1,
            }  # fmt: skip
            assert f.ended == {
                ("mer_a", "recovered"): 2, ("mer_a", "exhausted"): 1, (other, "recovered"): 1,
                (other, "cancelled"): 1,
            }  # fmt: skip
            assert f.recovered_amount == {
                ("mer_a", "usd"): 1000, ("mer_a", "eur"): 500, (other, "usd"): 400,
            }  # fmt: skip
            assert f.by_attempt == {("mer_a", 1): 1, ("mer_a", 0): 1, (other, 2): 1}
            # bounds 1 h, 6 h, 1 d, 3 d, 7 d, 14 d, 30 d, +Inf; each bound is inclusive
            assert f.seconds_to_recover == {
                "mer_a": ((0, 1, 2, 2, 2, 2, 2, 2), 2 * 3600 + 86400.0),  # 2 h and 1 d
                other: ((0, 0, 0, 0, 1, 1, 1, 1), 4 * 86400.0),  # 4 d
            }
            assert f.payments == {
                ("mer_a", "paid_after_end", "none"): 1, (other, "duplicate", "succeeded"): 1,
            }  # fmt: skip

            assert (await store.merchant_figures(at("03-01 00:00"), top=10)).open == {
                "mer_a": 2, "mer_b": 4, "mer_c": 1,
            }  # fmt: skip
            assert (await store.merchant_figures(at("03-01 00:00"), top=0)).open == {other: 7}
            # a later window: only what happened since
            later = await store.merchant_figures(at("03-05 00:00"), top=2)
            assert later.started == {("mer_b", "unclassified"): 4, ("mer_a", "funds"): 1,
                                     (other, "funds"): 1}  # fmt: skip
            assert (later.ended, later.payments) == (
                {}, {("mer_a", "paid_after_end", "none"): 1},
            )  # fmt: skip
        finally:
            await store.close()


async def test_metrics_per_merchant_on_the_metrics_listener(
    pg_server_dsn: str, dev_env: WorkflowEnvironment
) -> None:
    """Runs of now, through the store's writers, scraped from METRICS_ADDRESS."""
    async with fresh_database(pg_server_dsn) as dsn:
        store = await open_store(dsn)
        try:
            merchant_id, _ = await add_merchant(store, "merchant")
            recovered = failure_body(amount=1200)
            ref = recovered["payment_ref"]
            rid = (await ingest(store, merchant_id, recovered)).body["recovery_id"]
            key = await charge(store, merchant_id, ref, rid, 1)
            await store.complete_attempt(
                key, ChargeResult(status="succeeded", psp_payment_id="pi_1")
            )
            state = state_of(merchant_id, ref, rid, RecoveryStatus.RECOVERED)
            assert (await store.finish(state, [recovered["event_id"]])).finished
            await ingest(store, merchant_id, failure_body(amount=300))

            address = dev_env.client.service_client.config.target_host
            metrics_address = f"127.0.0.1:{free_port()}"
            async with (
                running_stack(
                    store, dsn, address, worker=False, metrics_address=metrics_address
                ) as api,
                httpx.AsyncClient() as http,
            ):
                assert (await api.http.get("/metrics", headers=api.auth())).status_code == 404
                scraped = await http.get(f"http://{metrics_address}/metrics")
        finally:
            await store.close()
    assert scraped.status_code == 200
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in scraped.text.splitlines()
        if line.startswith("recovery_merchant_")
    }
    m = f'merchant="{merchant_id}"'
    gsum = samples.pop(f"recovery_merchant_seconds_to_recover_24h_gsum{{{m}}}")
    assert 0 <= gsum < 3600  # recovered within the test
    buckets = ["3600.0", "21600.0", "86400.0", "259200.0", "604800.0", "1.2096e+06", "2.592e+06"]
    assert samples == {
        f"recovery_merchant_recoveries_open{{{m}}}": 1,
        f'recovery_merchant_open_amount_minor{{currency="usd",{m}}}': 300,
        f'recovery_merchant_recoveries_started_24h{{category="funds",{m}}}': 1,
        f'recovery_merchant_recoveries_started_24h{{category="unclassified",{m}}}': 1,
        f'recovery_merchant_recoveries_ended_24h{{{m},status="recovered"}}': 1,
        f'recovery_merchant_recovered_amount_minor_24h{{currency="usd",{m}}}': 1200,
        f'recovery_merchant_recovered_by_attempt_24h{{attempt="1",{m}}}': 1,
        **{
            f'recovery_merchant_seconds_to_recover_24h_bucket{{le="{le}",{m}}}': 1
            for le in [*buckets, "+Inf"]
        },
        f"recovery_merchant_seconds_to_recover_24h_gcount{{{m}}}": 1,
    }
