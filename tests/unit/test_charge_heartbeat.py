"""The charge activity's PSP call: heartbeats while it runs, is bounded by its budget, and a
cancel lets the call in flight finish (its result is the truth about the attempt)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.testing import ActivityEnvironment

from activities.heartbeats import heartbeating
from activities.recovery import _within
from recovery import constants as names
from recovery.psp.base import TransientPSPError


async def test_a_slow_psp_call_heartbeats_while_it_runs() -> None:
    env = ActivityEnvironment()
    beats: list[object] = []
    env.on_heartbeat = lambda *details: beats.append(details)

    async def slow_call() -> str:
        await asyncio.sleep(names.CHARGE_HEARTBEAT_EVERY.total_seconds() * 2.5)
        return "charged"

    async def activity() -> str:
        return await heartbeating(slow_call())

    assert await env.run(activity) == "charged"
    assert len(beats) >= 2


async def test_a_cancel_lets_the_call_in_flight_finish_and_keeps_its_result() -> None:
    env = ActivityEnvironment()
    started, finished = asyncio.Event(), asyncio.Event()

    async def call() -> str:
        started.set()
        await asyncio.sleep(0.5)
        finished.set()
        return "succeeded"

    async def cancel_once_started() -> None:
        await started.wait()
        env.cancel()

    async def activity() -> str:
        return await heartbeating(call())

    canceller = asyncio.create_task(cancel_once_started())
    result = await env.run(activity)
    await canceller
    assert result == "succeeded" and finished.is_set()


async def test_a_call_that_never_answers_ends_at_its_budget_as_a_transient_error() -> None:
    with pytest.raises(TransientPSPError, match="no answer"):
        await _within(timedelta(milliseconds=200), asyncio.Event().wait())
