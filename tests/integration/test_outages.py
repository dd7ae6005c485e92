"""Ingest through outages: Temporal down keeps answering 202 and delivers later; Postgres
down answers 503 with Retry-After and writes nothing half-way."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from recovery import constants as names
from recovery.dbsetup import open_store
from recovery.models import RecoveryState
from recovery.store import Store
from tests.helpers import INGEST, assert_envelope, eventually, failure_body, running_stack
from tests.helpers.stack import counts
from tests.integration.servers import OwnPostgres, TemporalDevServer


async def test_events_accepted_while_temporal_is_down_reach_their_workflows(
    store: Store, pg_dsn: str, tmp_path: Path
) -> None:
    temporal = TemporalDevServer(tmp_path / "temporal.db")
    await temporal.start()
    try:
        async with running_stack(store, pg_dsn, temporal.address) as api:
            first = failure_body()
            assert (await api.http.post(INGEST, json=first, headers=api.auth())).status_code == 202

            async def state_of(ref: str) -> RecoveryState:
                wf = names.workflow_id_for(api.merchant_id, ref)
                return await api.temporal.get_workflow_handle(wf).query(
                    names.QUERY_STATE, result_type=RecoveryState
                )

            async def classified(ref: str, events: int) -> bool:
                s = await state_of(ref)
                assert s.events_seen == events and s.category is not None, s
                return True

            await eventually(lambda: classified(first["payment_ref"], 1))

            await temporal.stop()
            accepted = [failure_body() for _ in range(5)]
            accepted.append(failure_body(first["payment_ref"]))  # joins the running recovery
            for body in accepted:
                r = await api.http.post(INGEST, json=body, headers=api.auth())
                assert r.status_code == 202, r.text
            pending = await api.store.pool.fetchval(
                "SELECT count(*) FROM outbox WHERE delivered_at IS NULL"
                " AND payload->>'merchant_id' = $1",
                api.merchant_id,
            )
            assert pending == 6

            await temporal.start()
            for body in accepted[:-1]:
                await eventually(lambda b=body: classified(b["payment_ref"], 1), within=60)
            await eventually(lambda: classified(first["payment_ref"], 2), within=60)
    finally:
        await temporal.stop()


@pytest.fixture
async def own_pg(tmp_path: Path) -> AsyncIterator[tuple[OwnPostgres, Store]]:
    pg = OwnPostgres(tmp_path / "pg")
    s = await open_store(pg.dsn)
    yield pg, s
    await s.close()


async def test_postgres_down_is_503_and_the_retry_completes(
    own_pg: tuple[OwnPostgres, Store], dev_env: WorkflowEnvironment
) -> None:
    pg, store = own_pg
    address = dev_env.client.service_client.config.target_host
    async with running_stack(store, pg.dsn, address) as api:
        body = failure_body()
        headers = {"Idempotency-Key": f"k-{uuid.uuid4()}", **api.auth()}
        pg.stop()
        try:
            for _ in range(3):
                r = await api.http.post(INGEST, json=body, headers=headers)
                assert_envelope(r, 503, "unavailable")
                assert int(r.headers["Retry-After"]) > 0
            r = await api.http.get(
                f"/v1/recoveries/by_ref/{body['payment_ref']}", headers=api.auth()
            )
            assert_envelope(r, 503, "unavailable")
            assert (await api.http.get("/readyz")).status_code == 503
        finally:
            pg.start()
        assert await counts(api, api.merchant_id) == (0, 0, 0)  # nothing half-written

        r = await api.http.post(INGEST, json=body, headers=headers)
        assert r.status_code == 202, r.text
        assert "Idempotent-Replayed" not in r.headers
        assert await counts(api, api.merchant_id) == (1, 1, 1)

        async def started() -> bool:
            rec = await api.http.get(
                f"/v1/recoveries/by_ref/{body['payment_ref']}", headers=api.auth()
            )
            assert rec.json()["category"] == "funds", rec.text
            return True

        await eventually(started)
