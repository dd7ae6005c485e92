"""Replay every recovery workflow history the reliability suite produced (banked from each
test's Temporal server before it stopped) against the current workflow code: zero
non-determinism errors. Runs after every other test (see conftest.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.reliability import support
from worker.main import WORKFLOW_RUNNER
from workflows.recovery import PaymentRecoveryWorkflow


async def test_replay_every_history_the_suite_produced() -> None:
    assert not support.BANK_ERRORS, support.BANK_ERRORS
    if not support.HISTORIES:
        pytest.skip("no histories banked: run it together with the rest of tests/reliability")

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for _, history in support.HISTORIES:
            yield history

    replayer = Replayer(
        workflows=[PaymentRecoveryWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=WORKFLOW_RUNNER,
    )
    results = await replayer.replay_workflows(histories(), raise_on_replay_failure=False)
    failures = {
        run_id: f"{type(err).__name__}: {err}" for run_id, err in results.replay_failures.items()
    }
    if failures:
        out = support.figures_file().parent / "replay-failures"
        out.mkdir(exist_ok=True)
        for _, history in support.HISTORIES:
            if history.run_id in failures:
                (out / f"{history.run_id}.json").write_text(history.to_json())
        pytest.fail(f"{len(failures)} histories do not replay (saved in {out}): {failures}")
    by_source = Counter(source for source, _ in support.HISTORIES)
    events = sum(len(h.events) for _, h in support.HISTORIES)
    support.record(
        "replay",
        histories=len(support.HISTORIES),
        events=events,
        by_test=dict(by_source),
        nondeterminism_errors=0,
    )
