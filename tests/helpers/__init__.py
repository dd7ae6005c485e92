"""What the tests share, as plain functions (fixtures come from the conftest files, through
pytest). No test module imports another test module or a conftest
(`tests/unit/test_test_layout.py` checks it):

- `waiting`: `eventually`, the one poll-until-true;
- `bodies`: the ingest path, a valid failure body, PSP webhook bodies signed as the PSPs sign;
- `envelopes`: the API's error envelope, checked;
- `stack`: the API in-process on real servers (`running_stack`) and the calls tests make on it;
- `workflows`: recoveries without the API (store ingest, outbox relay), a worker on a task
  queue of its own, the time-skipping server, the workflow's state;
- `cli`: the operator CLI;
- `webhooks`: a merchant's webhook endpoint on 127.0.0.1 (a receiver that records what it
  gets), and an endpoint with an event to deliver, through the store.

`free_port` is the product's (`scripts.stack`).
"""

from scripts.stack import free_port
from tests.helpers.bodies import INGEST, failure_body
from tests.helpers.cli import cli
from tests.helpers.envelopes import assert_envelope, is_envelope
from tests.helpers.stack import (
    Stack,
    add_merchant,
    has_next_attempt,
    recovery,
    running_stack,
    scheduled_recovery,
)
from tests.helpers.waiting import eventually
from tests.helpers.workflows import (
    RunningWorker,
    activities_run,
    expedited,
    ingest,
    recorded_receipt,
    relay,
    run_out,
    running_worker,
    start_recovery,
    wait_for_state,
    workflow_state,
)

__all__ = [
    "INGEST",
    "RunningWorker",
    "Stack",
    "activities_run",
    "add_merchant",
    "assert_envelope",
    "cli",
    "eventually",
    "expedited",
    "failure_body",
    "free_port",
    "has_next_attempt",
    "ingest",
    "is_envelope",
    "recorded_receipt",
    "recovery",
    "relay",
    "run_out",
    "running_stack",
    "running_worker",
    "scheduled_recovery",
    "start_recovery",
    "wait_for_state",
    "workflow_state",
]
