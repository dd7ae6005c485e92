"""Asking a PSP again until something settles, with growing pauses: one way for every
workflow that waits on a PSP (a pending payment's watcher, a pending refund). Deterministic
code only: workflow timers and activities."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError

T = TypeVar("T")


async def poll(
    check: Callable[[], Awaitable[T]],
    settled: Callable[[T], bool],
    *,
    first: timedelta,
    most: timedelta,
    until: datetime,
    what: str,
) -> T | None:
    """Sleep `first`, then twice as long each time up to `most`, calling `check` after each
    pause until its answer is `settled` or `until` has passed. Returns the last answer (None
    when no check answered); a check that fails (the PSP did not answer within its own
    bound) is logged and asked again after the next pause."""
    every = first
    last: T | None = None
    while workflow.now() < until:
        await workflow.sleep(min(every, until - workflow.now()))
        every = min(every * 2, most)
        try:
            last = await check()
        except ActivityError as e:
            workflow.logger.warning("%s not checked: %s", what, e)
            continue
        if settled(last):
            break
    return last
