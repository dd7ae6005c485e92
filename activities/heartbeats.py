"""Heartbeats around a call whose outcome must not be cut short."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from temporalio import activity

from recovery.constants import CHARGE_HEARTBEAT_EVERY

log = logging.getLogger("recovery.activities")
T = TypeVar("T")


async def heartbeating(call: Coroutine[Any, Any, T]) -> T:
    """Run `call`, heartbeating every CHARGE_HEARTBEAT_EVERY while it runs, so that a worker
    that dies is noticed within the activity's heartbeat timeout (and the activity tried
    again elsewhere). A cancel from the workflow does not cut the call short (its outcome
    would be unknown: a charge made, a message taken): it runs to its end, and its result
    stands."""
    task = asyncio.ensure_future(call)
    while True:
        try:
            done, _ = await asyncio.wait({task}, timeout=CHARGE_HEARTBEAT_EVERY.total_seconds())
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            log.info("cancel requested: the call in flight runs to its end")
            continue
        if done:
            return task.result()
        activity.heartbeat()
