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

Each figure reads one index range of one table, filtered by the merchant, and no join: a run
carries its payment's amount and currency and the number of the attempt that recovered it,
derived by triggers whatever statement changes what they come from (migration 0019), and
the indexes hold what each figure groups by (migrations 0018, 0019). One pass over the runs
that ended in the period gives the ended counts, the recovered amounts, categories and
attempts. All the queries run in one read-only repeatable-read transaction, so the figures
agree.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from itertools import accumulate

import asyncpg

from recovery.store.db import connection
from recovery.store.records import (
    AnalyticsSummary,
    CategoryFigures,
    DayFigures,
    MerchantFigures,
    PaymentFigures,
)

UNCLASSIFIED = "unclassified"
OTHER_MERCHANTS = "(other)"
"""The label of the merchants /metrics does not name: never a merchant id (those are
`[A-Za-z0-9_]`)."""
RECOVERY_SECONDS_BUCKETS = (3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400)
"""Upper bounds (seconds, inclusive) of the time-to-recover histogram of /metrics."""

_STARTED = """
SELECT coalesce(category, 'unclassified') AS category, count(*) AS n
  FROM recoveries
 WHERE merchant_id = $1 AND started_at >= $2 AND started_at < $3
 GROUP BY 1
"""

_ENDED = """
SELECT status, coalesce(category, 'unclassified') AS category, currency,
       recovered_by_attempt AS attempt, count(*) AS n, sum(amount)::bigint AS amount
  FROM recoveries
 WHERE merchant_id = $1 AND ended_at >= $2 AND ended_at < $3
 GROUP BY 1, 2, 3, 4
"""

_MEDIAN = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ended_at - started_at))
  FROM recoveries
 WHERE merchant_id = $1 AND ended_at >= $2 AND ended_at < $3 AND status = 'recovered'
"""

# Open at the end: still open, or ended at/after the end (two index ranges, not one OR).
_OPEN = """
SELECT currency, count(*) AS n, sum(amount)::bigint AS amount FROM (
    SELECT currency, amount FROM recoveries
     WHERE merchant_id = $1 AND ended_at IS NULL AND started_at < $2
    UNION ALL
    SELECT currency, amount FROM recoveries
     WHERE merchant_id = $1 AND ended_at >= $2 AND started_at < $2
) open_at_end
GROUP BY 1
"""

# A received payment's amount and currency, or its payment's when the PSP did not report
# them (looked up for those payments only).
_RECEIVED = """
SELECT p.disposition, coalesce(p.refund_status, 'none') AS refund_status, paid.currency,
       count(*) AS n, sum(paid.amount)::bigint AS amount
  FROM received_payments p
 CROSS JOIN LATERAL (
        SELECT p.currency, p.amount WHERE p.amount IS NOT NULL AND p.currency IS NOT NULL
        UNION ALL
        SELECT t.currency, t.amount FROM transactions t
         WHERE (p.amount IS NULL OR p.currency IS NULL)
           AND t.merchant_id = p.merchant_id AND t.payment_ref = p.payment_ref
       ) paid
 WHERE p.merchant_id = $1 AND p.received_at >= $2 AND p.received_at < $3
   AND p.disposition <> 'recovered'
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
    SELECT (ended_at AT TIME ZONE 'UTC')::date AS day, currency,
           count(*) AS n, sum(amount)::bigint AS amount
      FROM recoveries
     WHERE merchant_id = $1 AND ended_at >= $2 AND ended_at < $3 AND status = 'recovered'
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
        open_rows = await conn.fetch(_OPEN, merchant_id, end)
        received_rows = await conn.fetch(_RECEIVED, merchant_id, start, end)

    started_by: dict[str, int] = {r["category"]: r["n"] for r in started_rows}
    recovered_by: dict[str, int] = defaultdict(int)
    ended: dict[str, int] = defaultdict(int)
    recovered_amount: dict[str, int] = defaultdict(int)
    by_attempt: dict[int, int] = defaultdict(int)
    for r in ended_rows:
        ended[r["status"]] += r["n"]
        if r["status"] == "recovered":
            recovered_by[r["category"]] += r["n"]
            recovered_amount[r["currency"]] += r["amount"]
            by_attempt[r["attempt"]] += r["n"]
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
        by_attempt=tuple(sorted(by_attempt.items())),
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


# ---- per merchant, for /metrics ----------------------------------------------------------------
#
# At most `top` merchants are named, those with the most runs open now or started in the
# window; the others are summed under OTHER_MERCHANTS, so the labels stay bounded however
# many merchants there are. A scrape reads the open runs (the backlog) and, merchant by
# merchant, the index range of the window: it costs the merchants and the runs open or in the
# window, never the whole history.

_TOP_MERCHANTS = """
WITH by_volume AS MATERIALIZED (
    SELECT m.id,
           (SELECT count(*) FROM recoveries r WHERE r.merchant_id = m.id AND r.ended_at IS NULL)
         + (SELECT count(*) FROM recoveries r WHERE r.merchant_id = m.id AND r.started_at >= $1)
           AS volume
      FROM merchants m
)
SELECT id FROM by_volume WHERE volume > 0 ORDER BY volume DESC, id LIMIT $2
"""

_LABEL = "CASE WHEN m.id = ANY($1::text[]) THEN m.id ELSE $2 END"

# the open runs are few (the backlog): one pass over all of them
_MERCHANT_OPEN = """
SELECT CASE WHEN merchant_id = ANY($1::text[]) THEN merchant_id ELSE $2 END AS merchant,
       currency, count(*) AS n, sum(amount)::bigint AS amount
  FROM recoveries
 WHERE ended_at IS NULL
 GROUP BY 1, 2
"""

_MERCHANT_STARTED = f"""
SELECT {_LABEL} AS merchant, f.category, sum(f.n)::bigint AS n
  FROM merchants m
 CROSS JOIN LATERAL (
        SELECT coalesce(category, 'unclassified') AS category, count(*) AS n FROM recoveries r
         WHERE r.merchant_id = m.id AND r.started_at >= $3
         GROUP BY 1) f
 GROUP BY 1, 2
"""

# bucket: how many of the histogram's bounds a recovered run's seconds exceed, i.e. the index
# of the first bound it is within (len(bounds): none, +Inf)
_MERCHANT_ENDED = f"""
SELECT {_LABEL} AS merchant, f.status, f.currency, f.attempt, f.bucket,
       sum(f.n)::bigint AS n, sum(f.amount)::bigint AS amount, sum(f.seconds) AS seconds
  FROM merchants m
 CROSS JOIN LATERAL (
        SELECT status, currency, recovered_by_attempt AS attempt,
               CASE WHEN status = 'recovered' THEN (
                    SELECT count(*) FROM unnest($4::float8[]) bound
                     WHERE bound < extract(epoch FROM ended_at - started_at)) END AS bucket,
               count(*) AS n, sum(amount) AS amount,
               sum(extract(epoch FROM ended_at - started_at))::float8 AS seconds
          FROM recoveries r
         WHERE r.merchant_id = m.id AND r.ended_at >= $3
         GROUP BY 1, 2, 3, 4) f
 GROUP BY 1, 2, 3, 4, 5
"""

_MERCHANT_RECEIVED = f"""
SELECT {_LABEL} AS merchant, f.disposition, f.refund_status, sum(f.n)::bigint AS n
  FROM merchants m
 CROSS JOIN LATERAL (
        SELECT disposition, coalesce(refund_status, 'none') AS refund_status, count(*) AS n
          FROM received_payments p
         WHERE p.merchant_id = m.id AND p.received_at >= $3 AND p.disposition <> 'recovered'
         GROUP BY 1, 2) f
 GROUP BY 1, 2, 3
"""


async def merchant_figures(pool: asyncpg.Pool, since: datetime, top: int) -> MerchantFigures:
    """Every merchant's figures: open now, and started, ended and received since `since`
    (each by the date the summary buckets it by), under at most `top` + 1 labels."""
    async with (
        connection(pool) as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        named = [r["id"] for r in await conn.fetch(_TOP_MERCHANTS, since, top)]
        label = (named, OTHER_MERCHANTS)
        open_rows = await conn.fetch(_MERCHANT_OPEN, *label)
        started_rows = await conn.fetch(_MERCHANT_STARTED, *label, since)
        ended_rows = await conn.fetch(
            _MERCHANT_ENDED, *label, since, list(RECOVERY_SECONDS_BUCKETS)
        )
        received_rows = await conn.fetch(_MERCHANT_RECEIVED, *label, since)

    open_runs: dict[str, int] = defaultdict(int)
    for r in open_rows:
        open_runs[r["merchant"]] += r["n"]
    ended: dict[tuple[str, str], int] = defaultdict(int)
    recovered_amount: dict[tuple[str, str], int] = defaultdict(int)
    by_attempt: dict[tuple[str, int], int] = defaultdict(int)
    in_bucket: dict[str, list[int]] = {}
    seconds: dict[str, float] = defaultdict(float)
    for r in ended_rows:
        merchant = r["merchant"]
        ended[merchant, r["status"]] += r["n"]
        if r["status"] != "recovered":
            continue
        recovered_amount[merchant, r["currency"]] += r["amount"]
        by_attempt[merchant, r["attempt"]] += r["n"]
        counts = in_bucket.setdefault(merchant, [0] * (len(RECOVERY_SECONDS_BUCKETS) + 1))
        counts[r["bucket"]] += r["n"]
        seconds[merchant] += r["seconds"]
    return MerchantFigures(
        since=since,
        open=dict(open_runs),
        open_amount={(r["merchant"], r["currency"]): r["amount"] for r in open_rows},
        started={(r["merchant"], r["category"]): r["n"] for r in started_rows},
        ended=dict(ended),
        recovered_amount=dict(recovered_amount),
        by_attempt=dict(by_attempt),
        seconds_to_recover={
            merchant: (tuple(accumulate(counts)), seconds[merchant])
            for merchant, counts in in_bucket.items()
        },
        payments={
            (r["merchant"], r["disposition"], r["refund_status"]): r["n"] for r in received_rows
        },
    )


def _currency(row: asyncpg.Record) -> str:
    return str(row["currency"])
