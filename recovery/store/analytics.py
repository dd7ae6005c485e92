"""Recovery figures for one merchant over a period, computed in PostgreSQL.

The period is half-open, `[start, end)`. Each figure is bucketed by the one date it is about:

- **started**, `by_category[*].started`: recovery runs whose `started_at` is in the period.
- **recovered / exhausted / cancelled**, `recovered_amount`, `by_category[*].recovered`,
  `by_attempt`, `median_seconds_to_recover`: runs whose `ended_at` is in the period (a run
  that started before the period and ended in it counts; one that started in it and ends
  after it does not, yet).
- **open**, `open_amount`: runs open at the end of the period: started before `end` and not
  ended before it (ended later, or not at all). A run started in the period that ended after
  it is open here.
- **recovery_rate**: recovered / (recovered + exhausted + cancelled), all ended in the
  period; None when none ended.
- **median_seconds_to_recover**: the median of `ended_at - started_at` of the runs recovered
  in the period (a redriven payment's run counts from its own start).
- **by_attempt**: runs recovered in the period by the number of our charge attempt that
  recovered them; 0 is a payment the customer made themselves (a retry link, the PSP's own
  page), not one of our attempts.
- **received_after_end**, **duplicates**: payments received in the period (`received_at`)
  that paid an already ended (cancelled or exhausted) recovery, or that paid twice and are
  refunded (by refund status).

Amounts are integer minor units per currency, never summed across currencies: a recovery's
amount is its payment's (`transactions.amount`); a received payment's is its own, or its
payment's when the PSP did not report one. Categories not yet known are `unclassified`.
Every query is filtered by the merchant and reads an index built for it (migration 0018);
all of them run in one read-only repeatable-read transaction, so the figures agree.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime

import asyncpg

from recovery.store.db import connection
from recovery.store.records import (
    AnalyticsSummary,
    CategoryFigures,
    DayFigures,
    PaymentFigures,
)

UNCLASSIFIED = "unclassified"

_STARTED = """
SELECT coalesce(category, 'unclassified') AS category, count(*) AS n
  FROM recoveries
 WHERE merchant_id = $1 AND started_at >= $2 AND started_at < $3
 GROUP BY 1
"""

_ENDED = """
SELECT r.status, coalesce(r.category, 'unclassified') AS category, t.currency,
       count(*) AS n, sum(t.amount)::bigint AS amount
  FROM recoveries r JOIN transactions t USING (merchant_id, payment_ref)
 WHERE r.merchant_id = $1 AND r.ended_at >= $2 AND r.ended_at < $3
 GROUP BY 1, 2, 3
"""

_MEDIAN = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ended_at - started_at))
  FROM recoveries
 WHERE merchant_id = $1 AND ended_at >= $2 AND ended_at < $3 AND status = 'recovered'
"""

# The attempt that recovered a run: ours whose PSP payment is the one that settled it (or,
# for runs settled before payments were recorded, its first attempt that succeeded).
_BY_ATTEMPT = """
SELECT coalesce(a.number, 0) AS attempt, count(*) AS n
  FROM recoveries r
  LEFT JOIN received_payments p ON p.id = r.paid_by
  LEFT JOIN LATERAL (
        SELECT number FROM attempts a
         WHERE a.recovery_id = r.id AND a.status = 'succeeded'
           AND (p.id IS NULL OR a.psp_payment_id = p.psp_payment_id)
         ORDER BY number LIMIT 1) a ON true
 WHERE r.merchant_id = $1 AND r.ended_at >= $2 AND r.ended_at < $3 AND r.status = 'recovered'
 GROUP BY 1 ORDER BY 1
"""

# Open at the end: still open, or ended at/after the end (two index ranges, not one OR).
_OPEN = """
SELECT currency, count(*) AS n, sum(amount)::bigint AS amount FROM (
    SELECT t.currency, t.amount
      FROM recoveries r JOIN transactions t USING (merchant_id, payment_ref)
     WHERE r.merchant_id = $1 AND r.ended_at IS NULL AND r.started_at < $2
    UNION ALL
    SELECT t.currency, t.amount
      FROM recoveries r JOIN transactions t USING (merchant_id, payment_ref)
     WHERE r.merchant_id = $1 AND r.ended_at >= $2 AND r.started_at < $2
) open_at_end
GROUP BY 1
"""

_RECEIVED = """
SELECT p.disposition, coalesce(p.refund_status, 'none') AS refund_status,
       CASE WHEN p.amount IS NULL OR p.currency IS NULL THEN t.currency
            ELSE p.currency END AS currency,
       count(*) AS n,
       sum(CASE WHEN p.amount IS NULL OR p.currency IS NULL THEN t.amount
                ELSE p.amount END)::bigint AS amount
  FROM received_payments p JOIN transactions t USING (merchant_id, payment_ref)
 WHERE p.merchant_id = $1 AND p.received_at >= $2 AND p.received_at < $3
   AND p.disposition IN ('paid_after_end', 'duplicate')
 GROUP BY 1, 2, 3
"""

_DAYS = """
WITH days AS (
    SELECT d::date AS day
      FROM generate_series(($2::timestamptz AT TIME ZONE 'UTC')::date,
                           (($3::timestamptz - interval '1 microsecond') AT TIME ZONE 'UTC')::date,
                           interval '1 day') d
), started AS (
    SELECT (started_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
      FROM recoveries
     WHERE merchant_id = $1 AND started_at >= $2 AND started_at < $3
     GROUP BY 1
), recovered AS (
    SELECT (r.ended_at AT TIME ZONE 'UTC')::date AS day, t.currency,
           count(*) AS n, sum(t.amount)::bigint AS amount
      FROM recoveries r JOIN transactions t USING (merchant_id, payment_ref)
     WHERE r.merchant_id = $1 AND r.ended_at >= $2 AND r.ended_at < $3
       AND r.status = 'recovered'
     GROUP BY 1, 2
)
SELECT days.day, coalesce(s.n, 0) AS started, rc.currency, coalesce(rc.n, 0) AS recovered,
       coalesce(rc.amount, 0)::bigint AS amount
  FROM days
  LEFT JOIN started s ON s.day = days.day
  LEFT JOIN recovered rc ON rc.day = days.day
 ORDER BY days.day, rc.currency
"""


async def summary(
    pool: asyncpg.Pool, merchant_id: str, start: datetime, end: datetime
) -> AnalyticsSummary:
    """The merchant's figures for `[start, end)` (see the module docstring)."""
    async with (
        connection(pool) as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        started_rows = await conn.fetch(_STARTED, merchant_id, start, end)
        ended_rows = await conn.fetch(_ENDED, merchant_id, start, end)
        median = await conn.fetchval(_MEDIAN, merchant_id, start, end)
        attempt_rows = await conn.fetch(_BY_ATTEMPT, merchant_id, start, end)
        open_rows = await conn.fetch(_OPEN, merchant_id, end)
        received_rows = await conn.fetch(_RECEIVED, merchant_id, start, end)

    started_by: dict[str, int] = {r["category"]: r["n"] for r in started_rows}
    recovered_by: dict[str, int] = defaultdict(int)
    ended: dict[str, int] = defaultdict(int)
    recovered_amount: dict[str, int] = defaultdict(int)
    for r in ended_rows:
        ended[r["status"]] += r["n"]
        if r["status"] == "recovered":
            recovered_by[r["category"]] += r["n"]
            recovered_amount[r["currency"]] += r["amount"]
    after_end = PaymentFigures.empty()
    duplicates: dict[str, PaymentFigures] = {}
    for r in received_rows:
        if r["disposition"] == "paid_after_end":
            after_end = after_end.plus(r["n"], r["currency"], r["amount"])
        else:  # duplicate, by refund status
            status = r["refund_status"]
            duplicates[status] = duplicates.get(status, PaymentFigures.empty()).plus(
                r["n"], r["currency"], r["amount"]
            )
    return AnalyticsSummary(
        start=start,
        end=end,
        started=sum(started_by.values()),
        recovered=ended["recovered"],
        exhausted=ended["exhausted"],
        cancelled=ended["cancelled"],
        open=sum(r["n"] for r in open_rows),
        recovered_amount=dict(sorted(recovered_amount.items())),
        open_amount={r["currency"]: r["amount"] for r in sorted(open_rows, key=_currency)},
        median_seconds_to_recover=float(median) if median is not None else None,
        by_category={
            category: CategoryFigures(
                started=started_by.get(category, 0), recovered=recovered_by.get(category, 0)
            )
            for category in sorted(started_by.keys() | recovered_by.keys())
        },
        by_attempt=tuple((r["attempt"], r["n"]) for r in attempt_rows),
        received_after_end=after_end,
        duplicates=dict(sorted(duplicates.items())),
    )


async def days(
    pool: asyncpg.Pool, merchant_id: str, start: datetime, end: datetime
) -> list[DayFigures]:
    """One entry per UTC day that meets `[start, end)`, zeros included: runs started that day
    (by `started_at`) and recovered that day (by `ended_at`) with their amounts per
    currency. The first and last days count only the part of them inside the period."""
    async with connection(pool) as conn:
        rows = await conn.fetch(_DAYS, merchant_id, start, end)
    out: dict[date, DayFigures] = {}
    for r in rows:
        day = out.get(r["day"]) or DayFigures(day=r["day"], started=r["started"])
        if r["currency"] is not None:
            day = DayFigures(
                day=day.day,
                started=day.started,
                recovered=day.recovered + r["recovered"],
                recovered_amount={**day.recovered_amount, r["currency"]: r["amount"]},
            )
        out[r["day"]] = day
    return list(out.values())


def _currency(row: asyncpg.Record) -> str:
    return str(row["currency"])
