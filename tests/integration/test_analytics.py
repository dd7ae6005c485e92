"""`GET /v1/analytics/summary` and `/timeseries` against hand-computed figures.

The fixture is written straight into PostgreSQL with fixed times (the figures are about
dates, so no workflow runs): two currencies, runs that started before the period and ended
in it, runs that started in it and ended after it, payments received after the end and
duplicates, and another merchant's data, which must not count. Period: 2026-03-01 to
2026-03-08 (UTC, `to` exclusive).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from temporalio.testing import WorkflowEnvironment

from recovery.auth import generate_key, register_key
from recovery.store import Store
from tests.helpers import add_merchant, assert_envelope, running_stack
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
