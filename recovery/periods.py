"""The period an analytics figure covers: `[start, end)` in UTC, from the `from` and `to`
that a client sends (an ISO-8601 date, which is that day's midnight UTC, or a date-time with
its UTC offset)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from recovery.errors import InvalidInput

DEFAULT_DAYS = 30
MAX_SUMMARY_DAYS = 3660  # ten years
MAX_SERIES_DAYS = 366  # one point per day


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    @property
    def days(self) -> float:
        return (self.end - self.start) / timedelta(days=1)


def parse_instant(text: str, field: str) -> datetime:
    """`2026-11-01` (midnight UTC) or `2026-11-01T09:30:00Z` / `...+05:30`, in UTC."""
    text = text.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{field} must be an ISO-8601 date (2026-11-01) or date-time with its UTC offset "
            "(2026-11-01T00:00:00Z)",
            field=field,
        ) from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"{field} needs a UTC offset (e.g. 2026-11-01T00:00:00Z)", field=field)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(
            f"{field} must fall between the years 1 and 9999 in UTC", field=field
        ) from None


def parse_period(
    start_text: str | None,
    end_text: str | None,
    *,
    now: datetime,
    max_days: int = MAX_SUMMARY_DAYS,
) -> Period:
    """The period `[from, to)`. Without `to` it ends now; without `from` it starts
    `DEFAULT_DAYS` before its end. `from` must come before `to`, at most `max_days` apart."""
    end = parse_instant(end_text, "to") if end_text else now.astimezone(UTC)
    if start_text:
        start = parse_instant(start_text, "from")
    else:
        try:
            start = end - timedelta(days=DEFAULT_DAYS)
        except OverflowError:
            raise InvalidInput("to is too early to count back from", field="to") from None
    if start >= end:
        raise InvalidInput("from must be before to", field="from")
    if end - start > timedelta(days=max_days):
        raise InvalidInput(f"the period may span at most {max_days} days", field="from")
    return Period(start, end)
