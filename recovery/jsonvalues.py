"""JSON that PostgreSQL's `jsonb` and our own code can hold: no NaN or Infinity (not JSON,
and `jsonb` refuses them), no number beyond a double (`1e400`), and a bounded depth (deep
nesting exhausts Python's recursion limit in `json`)."""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32


def check_json(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise ValueError unless `value` (parsed JSON) is finite and at most `max_depth` deep."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise ValueError(f"is nested more than {max_depth} levels deep")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite (no NaN, Infinity or overflow)")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:20]!r} is out of range")
    return number


def _refuse_constant(text: str) -> float:
    raise ValueError(f"{text} is not JSON")


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` for untrusted bodies; raises ValueError (never RecursionError) for what
    `check_json` refuses and for what is not JSON."""
    try:
        value = json.loads(raw, parse_float=_finite, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError(f"is nested more than {max_depth} levels deep") from None
    check_json(value, max_depth)
    return value
