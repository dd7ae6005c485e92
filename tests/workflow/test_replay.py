"""Every stored history must replay against the current workflow code."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from worker.main import WORKFLOW_RUNNER
from workflows.pending import WatchPendingPaymentWorkflow
from workflows.receipts import CustomerReceiptWorkflow
from workflows.recovery import PaymentRecoveryWorkflow
from workflows.refunds import RefundDuplicatePaymentWorkflow
from workflows.webhooks import WebhookDeliveryWorkflow, WebhookEndpointWorkflow

HISTORIES_DIR = Path(__file__).parent.parent / "histories"
HISTORIES = sorted(HISTORIES_DIR.glob("*.json"))


def replayer() -> Replayer:
    return Replayer(
        workflows=[
            PaymentRecoveryWorkflow,
            RefundDuplicatePaymentWorkflow,
            WatchPendingPaymentWorkflow,
            WebhookDeliveryWorkflow,
            WebhookEndpointWorkflow,
            CustomerReceiptWorkflow,
        ],
        data_converter=pydantic_data_converter,
        workflow_runner=WORKFLOW_RUNNER,
    )


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def test_there_are_histories_to_replay() -> None:
    assert len(HISTORIES) >= 17


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_stored_history_replays(path: Path) -> None:
    await replayer().replay_workflow(load(path))


async def test_a_changed_history_is_detected_as_nondeterministic() -> None:
    """The replay test can fail: rename the first activity the workflow scheduled."""
    data = json.loads(
        (Path(__file__).parent.parent / "histories" / "recovered_on_third_attempt.json").read_text()
    )
    for event in data["events"]:
        attrs = event.get("activityTaskScheduledEventAttributes")
        if attrs:
            attrs["activityType"]["name"] = "some_other_activity"
            break
    history = WorkflowHistory.from_json("tampered", json.dumps(data))
    with pytest.raises(NondeterminismError):
        await replayer().replay_workflow(history)


async def test_a_history_without_its_patch_marker_does_not_replay() -> None:
    """The exact-support-actions patch is what keeps old histories replaying: the same
    history with its marker naming another patch takes the old path and is caught."""
    path = HISTORIES_DIR / "exact_paused_and_resumed_within_cooldown.json"
    data = json.loads(path.read_text())
    renamed = 0
    for event in data["events"]:
        attrs = event.get("markerRecordedEventAttributes")
        for payload in attrs["details"]["patch-data"]["payloads"] if attrs else []:
            marker = json.loads(base64.b64decode(payload["data"]))
            if marker.get("id") == "exact-support-actions":
                marker["id"] = "some-other-patch"
                payload["data"] = base64.b64encode(json.dumps(marker).encode()).decode()
                renamed += 1
    assert renamed == 1
    history = WorkflowHistory.from_json("unpatched", json.dumps(data))
    with pytest.raises(NondeterminismError):
        await replayer().replay_workflow(history)
