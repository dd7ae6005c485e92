"""What a recovery costs in Temporal history: the events of the common paths, counted.

Events are what Temporal stores, replays and (with the actions among them) bills, so their
number is a product property, deterministic for a given path: these tests fail when a change
makes the common paths dearer. Timings are measured in `bench/`, never here.
"""

from __future__ import annotations

import collections

from temporalio.client import WorkflowHandle

from recovery import constants as names
from recovery.models import ExpediteRequest, RecoveryStatus
from recovery.store import Store
from tests.helpers import RunningWorker, eventually, start_recovery

# ingest -> expedite -> recovered, 27 events: start + signal; the first task (its 3 events,
# the lean-history patch's marker and the TemporalChangeVersion upsert the SDK makes with
# it, the recovery's start and its state as local activities, the search attributes, the
# cooldown's timer); the expedite update (its task's 3, accepted, completed, the timer
# cancelled, the card reserved, the charge scheduled); the charge (started, completed, its
# task's 3); the end (written, search attributes, completed). Before lean-history: 88.
# Once no recovery from before that patch runs, `deprecate_patch` saves the two patch events.
ONE_ATTEMPT_EVENTS = 27


async def event_types(handle: WorkflowHandle) -> list[str]:
    history = await handle.fetch_history()
    return [e.WhichOneof("attributes") or "" for e in history.events]


async def test_a_one_attempt_recovery_costs_at_most_27_history_events(
    worker: RunningWorker, store: Store, merchant: str
) -> None:
    handle = await start_recovery(store, worker, merchant, pm="pm_sim_succeed_on_1")

    async def cooling_down() -> bool:  # read in Postgres: a query would cost a task
        rec = await store.get_recovery(merchant, handle.id.rsplit("/", 1)[-1])
        return rec.next_attempt_at is not None

    await eventually(cooling_down)
    await handle.execute_update(names.UPDATE_EXPEDITE, ExpediteRequest(actor="support"))
    result = await handle.result()
    assert result.status is RecoveryStatus.RECOVERED
    assert [a.outcome for a in result.attempts] == ["succeeded"]
    events = await event_types(handle)
    counted = collections.Counter(events)
    assert len(events) <= ONE_ATTEMPT_EVENTS, f"{len(events)} events: {counted.most_common()}"
