"""Small statistics helpers: percentiles (nearest rank) and summaries of samples."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The nearest-rank `q` percentile (0 < q <= 100) of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary(values: Iterable[float], *, scale: float = 1.0, digits: int = 1) -> dict[str, Any]:
    """n, min, p50, p90, p99, max and mean of `values` times `scale`, rounded."""
    data = sorted(v * scale for v in values)
    if not data:
        return {"n": 0}

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, digits)

    return {
        "n": len(data),
        "min": r(data[0]),
        "p50": r(percentile(data, 50)),
        "p90": r(percentile(data, 90)),
        "p99": r(percentile(data, 99)),
        "max": r(data[-1]),
        "mean": r(sum(data) / len(data)),
    }


def fmt(value: Any, unit: str = "") -> str:
    """A number for a table cell; `-` when missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text} {unit}".rstrip()


def pcts(s: dict[str, Any], unit: str = "ms") -> str:
    """`p50 / p99 / max` of a summary, for a table cell."""
    if not s or not s.get("n"):
        return "-"
    return f"{fmt(s['p50'])} / {fmt(s['p99'])} / {fmt(s['max'])} {unit}"
