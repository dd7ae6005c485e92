"""`GET /v1/analytics/summary` and `/timeseries`: a merchant's recovery figures.

`from` and `to` bound the period `[from, to)`: an ISO-8601 date (midnight UTC) or a date-time
with its offset; without `to` it ends now, without `from` it starts 30 days before `to`.
Which date each figure is counted by is in `recovery.store.analytics`. Amounts are integer
minor units per currency, never summed across currencies.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from api.deps import ScopeDep, StoreDep
from recovery.periods import MAX_SERIES_DAYS, Period, parse_period
from recovery.store import AnalyticsSummary

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])

FromQuery = Annotated[
    str | None,
    Query(
        alias="from",
        max_length=64,
        description="Start (inclusive): 2026-11-01 or 2026-11-01T00:00:00Z. Default: 30 days "
        "before `to`.",
    ),
]
ToQuery = Annotated[
    str | None,
    Query(max_length=64, description="End (exclusive), as `from`. Default: now."),
]


class RecoveryCounts(BaseModel):
    started: int
    """runs started in the period"""
    recovered: int
    """runs that ended recovered in the period (whenever they started)"""
    exhausted: int
    cancelled: int
    open: int
    """runs open at the end of the period (started before it ends, not ended by then)"""


class CategoryOut(BaseModel):
    started: int
    recovered: int


class AttemptOut(BaseModel):
    attempt: int
    """our charge attempt that recovered the run; 0: the customer paid (a retry link)"""
    recovered: int


class PaymentsOut(BaseModel):
    count: int
    amount: dict[str, int]


class RefundedDuplicatesOut(BaseModel):
    """Payments that paid an already paid recovery again: refunded (`count`, `amount`), and
    those whose refund is still pending or failed."""

    count: int
    amount: dict[str, int]
    pending: int
    failed: int


class SummaryOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: datetime = Field(
        validation_alias=AliasChoices("from", "from_"), serialization_alias="from"
    )
    to: datetime
    recoveries: RecoveryCounts
    recovery_rate: float | None
    """recovered / (recovered + exhausted + cancelled), of the runs ended in the period"""
    recovered_amount: dict[str, int]
    open_amount: dict[str, int]
    median_seconds_to_recover: float | None
    by_category: dict[str, CategoryOut]
    by_attempt: list[AttemptOut]
    received_after_end: PaymentsOut
    """payments that arrived for a cancelled or exhausted recovery (kept, not refunded)"""
    refunded_duplicates: RefundedDuplicatesOut

    @classmethod
    def of(cls, s: AnalyticsSummary) -> SummaryOut:
        refunded = s.duplicates.get("succeeded")
        return cls(
            from_=s.start,
            to=s.end,
            recoveries=RecoveryCounts(
                started=s.started,
                recovered=s.recovered,
                exhausted=s.exhausted,
                cancelled=s.cancelled,
                open=s.open,
            ),
            recovery_rate=round(s.recovery_rate, 4) if s.recovery_rate is not None else None,
            recovered_amount=s.recovered_amount,
            open_amount=s.open_amount,
            median_seconds_to_recover=(
                round(s.median_seconds_to_recover, 1)
                if s.median_seconds_to_recover is not None
                else None
            ),
            by_category={
                k: CategoryOut(started=v.started, recovered=v.recovered)
                for k, v in s.by_category.items()
            },
            by_attempt=[AttemptOut(attempt=a, recovered=n) for a, n in s.by_attempt],
            received_after_end=PaymentsOut(
                count=s.received_after_end.count, amount=s.received_after_end.amount
            ),
            refunded_duplicates=RefundedDuplicatesOut(
                count=refunded.count if refunded else 0,
                amount=refunded.amount if refunded else {},
                pending=sum(
                    f.count for status, f in s.duplicates.items() if status in ("pending", "none")
                ),
                failed=s.duplicates["failed"].count if "failed" in s.duplicates else 0,
            ),
        )


class DayOut(BaseModel):
    date: str
    """the UTC day, YYYY-MM-DD"""
    started: int
    recovered: int
    recovered_amount: dict[str, int]


class TimeseriesOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: datetime = Field(
        validation_alias=AliasChoices("from", "from_"), serialization_alias="from"
    )
    to: datetime
    interval: Literal["day"]
    data: list[DayOut]


def _period(start: str | None, end: str | None, max_days: int | None = None) -> Period:
    now = datetime.now(UTC)
    if max_days is None:
        return parse_period(start, end, now=now)
    return parse_period(start, end, now=now, max_days=max_days)


@router.get("/summary", response_model=SummaryOut)
async def summary(
    scope: ScopeDep, store: StoreDep, start: FromQuery = None, to: ToQuery = None
) -> SummaryOut:
    period = _period(start, to)
    return SummaryOut.of(await store.analytics_summary(scope.merchant_id, period.start, period.end))


@router.get("/timeseries", response_model=TimeseriesOut)
async def timeseries(
    scope: ScopeDep,
    store: StoreDep,
    start: FromQuery = None,
    to: ToQuery = None,
    interval: Annotated[Literal["day"], Query(description="Only `day` (UTC days).")] = "day",
) -> TimeseriesOut:
    period = _period(start, to, MAX_SERIES_DAYS)
    days = await store.analytics_days(scope.merchant_id, period.start, period.end)
    return TimeseriesOut(
        from_=period.start,
        to=period.end,
        interval=interval,
        data=[
            DayOut(
                date=d.day.isoformat(),
                started=d.started,
                recovered=d.recovered,
                recovered_amount=d.recovered_amount,
            )
            for d in days
        ],
    )
