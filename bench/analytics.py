"""Benchmark 7: `GET /v1/analytics/summary` over 100k recoveries.

The recoveries are written straight into PostgreSQL (no workflow runs: the figures are about
rows and dates), spread over 90 days for one merchant, beside another merchant's: half
recovered (each by an attempt whose payment settled it), a fifth exhausted, a tenth
cancelled, the rest open, in three currencies, with some duplicates and payments after the
end. The tables are then vacuumed and analysed, as autovacuum leaves them a while after a bulk
write (before it, every read would also pay for the visibility map a fresh bulk write lacks).
Then the summary is read through the API one request at a time, for the last 30 days and for
all 90; `GET /healthz` in the same run is the baseline (the HTTP round trip alone), and the
store call in-process is the SQL alone.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import load
from bench.common import Ctx
from bench.stats import summary
from recovery.auth import generate_key, register_key

# two statements: a run's payment must be there before the run (migration 0019's trigger
# copies its amount, and a statement does not see what its own WITH inserts)
_TRANSACTIONS = """
INSERT INTO transactions (merchant_id, payment_ref, psp, amount, currency, customer_id)
SELECT $1, 'an-' || i, 'simulator', 500 + (i * 7919) % 9500,
       (ARRAY['usd', 'eur', 'inr'])[1 + i % 3], 'cus_' || (i % 5000)
  FROM generate_series(1, $2::int) i
"""

_RECOVERIES = """
WITH m AS (SELECT $1::text AS id, $2::int AS n)
INSERT INTO recoveries (id, merchant_id, payment_ref, workflow_id, status, category,
                        started_at, ended_at, attempt_count, next_attempt_at)
SELECT 'rec_' || m.id || '_' || i, m.id, 'an-' || i, 'recovery/' || m.id || '/an-' || i,
       CASE WHEN i % 10 < 5 THEN 'recovered' WHEN i % 10 < 7 THEN 'exhausted'
            WHEN i % 10 = 7 THEN 'cancelled' ELSE 'active' END,
       (ARRAY['funds', 'issuer_decline', 'network', 'auth_timeout', 'upi_pending', 'unknown'])
           [1 + i % 6],
       $3::timestamptz - (i::float8 / m.n) * interval '90 days',
       CASE WHEN i % 10 < 8 THEN least($3::timestamptz,
            $3::timestamptz - (i::float8 / m.n) * interval '90 days'
                            + (1 + i % 72) * interval '1 hour') END,
       1 + i % 4,
       CASE WHEN i % 10 >= 8 THEN $3::timestamptz + (i % 48) * interval '1 hour' END
  FROM m, generate_series(1, m.n) i
"""

_ATTEMPTS = """
INSERT INTO attempts (recovery_id, number, idempotency_key, psp, amount, currency, status,
                      psp_payment_id, merchant_id, created_at)
SELECT r.id, 1, r.id || ':attempt:1', 'simulator', t.amount, t.currency, 'succeeded',
       'pi_' || r.id || '_0', r.merchant_id, r.ended_at
  FROM recoveries r JOIN transactions t USING (merchant_id, payment_ref)
 WHERE r.merchant_id = $1 AND r.status = 'recovered'
"""

_PAYMENTS = """
INSERT INTO received_payments (id, merchant_id, payment_ref, recovery_id, identity, source, psp,
                               psp_payment_id, amount, currency, disposition, refund_status,
                               received_at)
SELECT 'pay_' || r.id || '_' || k, r.merchant_id, r.payment_ref, r.id,
       'simulator:pi_' || r.id || '_' || k, 'attempt', 'simulator', 'pi_' || r.id || '_' || k,
       t.amount, t.currency,
       CASE WHEN k = 0 THEN 'recovered'
            WHEN r.status = 'recovered' THEN 'duplicate' ELSE 'paid_after_end' END,
       CASE WHEN k = 1 AND r.status = 'recovered' THEN 'succeeded' END,
       r.ended_at + k * interval '1 hour'
  FROM recoveries r JOIN transactions t USING (merchant_id, payment_ref)
  CROSS JOIN generate_series(0, 1) k
 WHERE r.merchant_id = $1 AND r.ended_at IS NOT NULL
   AND ((k = 0 AND r.status = 'recovered')
        OR (k = 1 AND abs(hashtext(r.id)) % 100 = 0))
"""

_PAID_BY = """
UPDATE recoveries r SET paid_by = 'pay_' || r.id || '_0'
 WHERE r.merchant_id = $1 AND r.status = 'recovered'
"""


# Each seeding statement writes up to 100k rows: more than the store's 30 s command timeout
# allows when the machine is busy (a quick run on 2026-12-06 timed out on the attempts).
SEED_TIMEOUT = 600.0


async def seed(ctx: Ctx, merchant_id: str, n: int, now: datetime) -> float:
    """`n` recoveries of a new merchant; seconds it took."""
    t0 = time.perf_counter()
    async with ctx.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO merchants (id, name) VALUES ($1, $2)", merchant_id, "bench analytics"
        )
        await conn.execute(_TRANSACTIONS, merchant_id, n, timeout=SEED_TIMEOUT)
        await conn.execute(_RECOVERIES, merchant_id, n, now, timeout=SEED_TIMEOUT)
        await conn.execute(_ATTEMPTS, merchant_id, timeout=SEED_TIMEOUT)
        await conn.execute(_PAYMENTS, merchant_id, timeout=SEED_TIMEOUT)
        await conn.execute(_PAID_BY, merchant_id, timeout=SEED_TIMEOUT)
    async with ctx.pool.acquire() as conn:
        await conn.execute(
            "VACUUM ANALYZE recoveries, transactions, attempts, received_payments",
            timeout=SEED_TIMEOUT,
        )
    return round(time.perf_counter() - t0, 1)


async def bench_analytics(ctx: Ctx) -> dict[str, Any]:
    n = ctx.sizes.analytics_recoveries
    requests = ctx.sizes.analytics_requests
    now = datetime.now(UTC)
    seeded = f"mer_analytics_{uuid.uuid4().hex[:6]}"
    seed_seconds = await seed(ctx, seeded, n, now)
    other_seconds = await seed(ctx, f"{seeded}_other", n // 5, now)
    store = ctx.stack.store
    assert store is not None
    key = generate_key("test")
    await register_key(store, seeded, "merchant", key)
    cases: dict[str, dict[str, str]] = {
        "summary, last 30 days": {
            "from": (now - timedelta(days=30)).isoformat(),
            "to": now.isoformat(),
        },
        "summary, all 90 days": {
            "from": (now - timedelta(days=91)).isoformat(),
            "to": (now + timedelta(seconds=1)).isoformat(),
        },
    }
    out: dict[str, Any] = {
        "recoveries": n,
        "other_merchant_recoveries": n // 5,
        "seed_seconds": round(seed_seconds + other_seconds, 1),
        "requests_per_case": requests,
        "cases": {},
    }
    async with ctx.http(key, 1) as http:
        figures = (
            await http.get("/v1/analytics/summary", params=cases["summary, all 90 days"])
        ).json()
        out["figures_all_90_days"] = figures.get("recoveries")

        async def run(path: str, params: dict[str, str] | None) -> dict[str, Any]:
            async def get(i: int) -> Any:
                return await http.get(path, params=params)

            cpu = ctx.cpu()
            r = await load.run_load(
                load.http_request(get), count=requests, concurrency=1, seconds=120
            )
            return {**r.as_dict(), "cpu_pct": cpu.done()}

        out["baseline_healthz"] = await run("/healthz", None)
        for name, params in cases.items():
            out["cases"][name] = await run("/v1/analytics/summary", params)
        out["cases"]["timeseries, last 30 days"] = await run(
            "/v1/analytics/timeseries", cases["summary, last 30 days"]
        )
    # the SQL alone: the store call in this process
    sql = []
    for _ in range(requests):
        t = time.perf_counter()
        await store.analytics_summary(seeded, now - timedelta(days=30), now)
        sql.append(time.perf_counter() - t)
    out["store_call_30_days_ms"] = summary(sql, scale=1000)
    return out
