"""Waiting for something that happens in its own time (a workflow, the relay, a server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]],
    within: float = 15.0,
    *,
    what: str = "condition",
    interval: float = 0.1,
) -> T:
    """Poll `check` until it returns something truthy without raising, and return that; an
    exception (a failed assertion, a workflow not found yet) counts as "not yet". After
    `within` seconds of wall time, fail with the last answer or error."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except Exception as e:  # not there yet
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {within:.0f}s; last: {last!r}")
        await asyncio.sleep(interval)
