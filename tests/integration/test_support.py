"""Keys, roles and tenancy on every endpoint; support actions and their audit trail; the
operator CLI."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from api.relay import OutboxRelay
from recovery import constants as names
from recovery.auth import generate_key, register_key
from recovery.store import Store
from tests.helpers import (
    INGEST,
    Stack,
    add_merchant,
    assert_envelope,
    cli,
    eventually,
    failure_body,
    is_envelope,
    recovery,
    running_stack,
    scheduled_recovery,
)
from worker.main import build_worker

SUPPORT_ACTIONS = ("cancel", "expedite", "pause", "resume", "retry", "apply_policy")


def endpoints(ref: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    base = f"/v1/recoveries/by_ref/{ref}"
    return [
        ("GET", base, None),
        *[("POST", f"{base}/{a}", {"reason": "r"}) for a in SUPPORT_ACTIONS],
    ]


async def test_isolation_matrix(api: Stack) -> None:
    ref = await scheduled_recovery(api)
    other_merchant, other_key = await add_merchant(api.store, "support")
    merchant_key = generate_key()
    await register_key(api.store, api.merchant_id, "merchant", merchant_key)
    revoked = generate_key()
    key_id = await register_key(api.store, api.merchant_id, "support", revoked)
    assert await api.store.revoke_api_key(key_id)

    for method, path, body in endpoints(ref):
        # another merchant's key: 404, never 403
        r = await api.http.request(method, path, json=body, headers=api.auth(other_key))
        assert_envelope(r, 404, "not_found")
        # naming the merchant does not help a non-admin
        r = await api.http.request(
            method,
            path,
            json=body,
            headers=api.auth(other_key),
            params={"merchant_id": api.merchant_id},
        )
        assert_envelope(r, 404)
        for headers in (
            {},
            {"Authorization": f"Bearer {revoked}"},
            {"Authorization": "Bearer"},
            {"Authorization": f"Token {api.key}"},
            {"Authorization": "Bearer " + "x" * 500},
        ):
            assert_envelope(
                await api.http.request(method, path, json=body, headers=headers),
                401,
                "unauthorized",
            )
        if method == "POST":  # merchant role on a support endpoint
            r = await api.http.request(method, path, json=body, headers=api.auth(merchant_key))
            assert_envelope(r, 403, "forbidden")
    listed = await api.http.get("/v1/recoveries", headers=api.auth(other_key))
    assert listed.json()["data"] == []
    # B's tries are in B's audit log (as not found), none in A's
    theirs = (await api.http.get("/v1/audit", headers=api.auth(other_key))).json()["data"]
    assert theirs and {e["result"] for e in theirs} == {"rejected: not_found"}
    ours = (await api.http.get("/v1/audit", headers=api.auth())).json()["data"]
    assert {e["actor_key_id"] for e in ours}.isdisjoint({e["actor_key_id"] for e in theirs})
    assert {e["result"] for e in ours} == {"rejected: forbidden"}
    assert_envelope(await api.http.get("/v1/audit", headers=api.auth(merchant_key)), 403)
    assert other_merchant != api.merchant_id
    # the recovery is untouched by all of that
    assert (await recovery(api, ref))["status"] == "active"


async def test_admin_reads_any_merchant_by_naming_it(api: Stack) -> None:
    ref = await scheduled_recovery(api)
    _, admin_key = await add_merchant(api.store, "admin")
    path = f"/v1/recoveries/by_ref/{ref}"
    assert_envelope(await api.http.get(path, headers=api.auth(admin_key)), 404)
    r = await api.http.get(
        path, headers=api.auth(admin_key), params={"merchant_id": api.merchant_id}
    )
    assert r.status_code == 200 and r.json()["payment_ref"] == ref


async def test_support_actions_are_audited_with_their_actor(api: Stack) -> None:
    ref = await scheduled_recovery(api, pm="pm_sim_succeed_on_1")
    key_id = (await api.store.list_api_keys(api.merchant_id))[0].id
    r = await api.http.post(
        f"/v1/recoveries/by_ref/{ref}/pause",
        json={"reason": "chargeback review"},
        headers=api.auth(),
    )
    assert r.status_code == 200, r.text

    async def paused() -> bool:
        rec = await recovery(api, ref)
        assert rec["paused"] is True, rec
        return True

    # a pause shows at once, in the reply and in every read after it
    assert r.json()["paused"] is True and r.json()["next_attempt_at"] is None
    shown = await recovery(api, ref)
    assert shown["paused"] is True and shown["next_attempt_at"] is None
    # nothing waits on a cooldown while paused: refused, and not kept for later
    r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/expedite", headers=api.auth())
    assert_envelope(r, 409, "nothing_to_expedite")
    r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/resume", headers=api.auth())
    assert r.status_code == 200, r.text
    assert r.json()["paused"] is False and r.json()["next_attempt_at"] is not None
    assert (await recovery(api, ref))["attempts"] == []  # the cooldown goes on
    r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/expedite", headers=api.auth())
    assert r.status_code == 200, r.text

    async def recovered() -> bool:
        rec = await recovery(api, ref)
        assert rec["status"] == "recovered" and len(rec["attempts"]) == 1, rec
        return True

    await eventually(recovered)
    r = await api.http.post(
        f"/v1/recoveries/by_ref/{ref}/cancel", json={"reason": "late"}, headers=api.auth()
    )
    assert_envelope(r, 409, "recovery_finished")

    entries = (await api.http.get("/v1/audit", params={"ref": ref}, headers=api.auth())).json()
    got = [
        (e["action"], e["result"], e["actor_key_id"], e["actor_role"])
        for e in reversed(entries["data"])
    ]
    assert got == [
        ("pause", "accepted", key_id, "support"),
        ("expedite", "rejected: nothing_to_expedite", key_id, "support"),
        ("resume", "accepted", key_id, "support"),
        ("expedite", "accepted", key_id, "support"),
        ("cancel", "rejected: recovery_finished", key_id, "support"),
    ]
    assert entries["data"][-1]["reason"] == "chargeback review"


async def awaiting_customer(api: Stack, **kw: Any) -> str:
    body = failure_body(decline_code="stolen_card", **kw)
    assert (await api.http.post(INGEST, json=body, headers=api.auth())).status_code == 202

    async def waiting() -> bool:
        return (await recovery(api, body["payment_ref"]))["status"] == "awaiting_customer"

    await eventually(waiting)
    return body["payment_ref"]


async def signals_named(api: Stack, workflow_id: str, name: str) -> int:
    """How many `name` signals the workflow's history holds (its start's included)."""
    history = await api.temporal.get_workflow_handle(workflow_id).fetch_history()
    return sum(
        1
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        and e.workflow_execution_signaled_event_attributes.signal_name == name
    )


@pytest.mark.parametrize("relay_beside", [False, True], ids=["alone", "relay_beside"])
@pytest.mark.parametrize("action", ["expedite", "cancel", "pause"])
async def test_an_action_right_after_ingest_starts_the_recovery_and_acts_once(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment, action: str, relay_beside: bool
) -> None:
    """No relay has started the run yet (the app's relay does not run: no NOTIFY reaches
    it, its sweep never comes), alone or with another relay's pass at the same moment: the
    action starts the run from its outbox row, which is delivered exactly once, acts once,
    and answers 200, not 503."""
    address = dev_env.client.service_client.config.target_host
    async with running_stack(
        store, pg_dsn, address, run_relay=False, outbox_sweep_seconds=3600
    ) as api:
        body = failure_body(pm="pm_sim_succeed_on_1")  # funds: a cooldown of about a day
        ref = body["payment_ref"]
        r = await api.http.post(INGEST, json=body, headers=api.auth())
        assert r.status_code == 202, r.text
        workflow_id = r.json()["workflow_id"]
        other_relay = OutboxRelay(
            store, api.temporal, dsn="unused", task_queue=api.settings.temporal_task_queue
        )
        act = api.http.post(
            f"/v1/recoveries/by_ref/{ref}/{action}",
            json={"reason": "right away"},
            headers=api.auth(),
        )
        if relay_beside:
            acted, _ = await asyncio.gather(act, other_relay.relay_once())
        else:  # nothing else will ever start it: a wait for a relay ends in 503
            acted = await act
        assert acted.status_code == 200, acted.text

        async def done() -> dict[str, Any]:
            rec = await recovery(api, ref)
            expected = {
                "expedite": rec["status"] == "recovered" and len(rec["attempts"]) == 1,
                "cancel": rec["status"] == "cancelled" and rec["attempts"] == [],
                "pause": rec["paused"] is True and rec["next_attempt_at"] is None,
            }
            assert expected[action], rec
            return rec

        await eventually(done)
        assert await signals_named(api, workflow_id, names.SIGNAL_PAYMENT_FAILED) == 1
        if action != "expedite":
            assert await signals_named(api, workflow_id, action) == 1
        pending = await store.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE workflow_id = $1 AND delivered_at IS NULL",
            workflow_id,
        )
        assert pending == 0
        audit = (await api.http.get("/v1/audit", params={"ref": ref}, headers=api.auth())).json()
        assert [(e["action"], e["result"]) for e in audit["data"]] == [(action, "accepted")]


async def test_an_expedite_before_a_worker_took_up_the_new_run_waits_for_its_first_step(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment
) -> None:
    """The relay has started the run, but no worker has run it yet: an expedite sent then
    would be refused as the run's first task begins (nothing decided yet: "no attempt is
    waiting"). It is asked once the run has shown its first step, a cooldown: 200."""
    address = dev_env.client.service_client.config.target_host
    async with running_stack(store, pg_dsn, address, worker=False) as api:
        body = failure_body(pm="pm_sim_succeed_on_1")
        ref = body["payment_ref"]
        assert (await api.http.post(INGEST, json=body, headers=api.auth())).status_code == 202
        asked = asyncio.ensure_future(
            api.http.post(f"/v1/recoveries/by_ref/{ref}/expedite", headers=api.auth())
        )
        await asyncio.sleep(1)  # the relay starts the run; nothing polls its task queue
        assert not asked.done()
        async with build_worker(
            dev_env.client, store, api.settings.temporal_task_queue, settings=api.settings
        ):
            r = await asked
            assert r.status_code == 200, r.text

            async def recovered() -> bool:
                rec = await recovery(api, ref)
                assert rec["status"] == "recovered" and len(rec["attempts"]) == 1, rec
                return True

            await eventually(recovered)


async def test_an_expedite_right_after_ingest_of_a_hard_decline_is_still_409(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment
) -> None:
    """Asked once the run has shown its first step: awaiting the customer, nothing to
    expedite (not a 503, and not an expedite kept for later)."""
    address = dev_env.client.service_client.config.target_host
    async with running_stack(
        store, pg_dsn, address, run_relay=False, outbox_sweep_seconds=3600
    ) as api:
        body = failure_body(pm="pm_sim_succeed_on_1", decline_code="stolen_card")
        assert (await api.http.post(INGEST, json=body, headers=api.auth())).status_code == 202
        path = f"/v1/recoveries/by_ref/{body['payment_ref']}/expedite"
        r = await api.http.post(path, headers=api.auth())
        assert_envelope(r, 409, "nothing_to_expedite")
        assert "awaiting the customer" in r.json()["error"]["message"]
        rec = await recovery(api, body["payment_ref"])
        assert rec["status"] == "awaiting_customer" and rec["attempts"] == []


async def test_expedite_while_awaiting_the_customer_is_409(api: Stack) -> None:
    ref = await awaiting_customer(api, pm="pm_sim_succeed_on_1")
    r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/expedite", headers=api.auth())
    assert_envelope(r, 409, "nothing_to_expedite")
    assert "awaiting the customer" in r.json()["error"]["message"]
    assert (await recovery(api, ref))["attempts"] == []


async def test_a_new_payment_method_is_attempted_now(api: Stack) -> None:
    ref = await awaiting_customer(api, pm="pm_sim_decline_stolen_card")
    merchant_key = generate_key()  # the merchant's own integration says so: no support role
    await register_key(api.store, api.merchant_id, "merchant", merchant_key)
    path = f"/v1/recoveries/by_ref/{ref}/payment_method_updated"
    for bad in (
        {},
        {"payment_method": {"type": "card"}},
        {"payment_method": {"type": "card", "id": ""}},
        {"payment_method": {"type": "card", "id": 7}},
        {"payment_method": {"type": "card", "id": "pm_x"}, "extra": 1},
    ):
        r = await api.http.post(path, json=bad, headers=api.auth(merchant_key))
        assert_envelope(r, 422)
    _, other_key = await add_merchant(api.store, "merchant")
    new = {"payment_method": {"type": "card", "id": "pm_sim_succeed_on_1"}}
    assert_envelope(await api.http.post(path, json=new, headers=api.auth(other_key)), 404)
    r = await api.http.post(path, json=new, headers=api.auth(merchant_key))
    assert r.status_code == 202, r.text

    async def recovered() -> bool:
        rec = await recovery(api, ref)
        assert rec["status"] == "recovered" and len(rec["attempts"]) == 1, rec
        return True

    await eventually(recovered)
    assert_envelope(await api.http.post(path, json=new, headers=api.auth()), 409)


async def test_retry_redrives_an_exhausted_recovery_with_a_fresh_budget(api: Stack) -> None:
    r = await api.http.put("/v1/policy", json={"max_unknown_attempts": 0}, headers=api.auth())
    assert r.status_code == 200
    body = failure_body(
        pm="pm_sim_succeed_on_1", code="zz_unheard_of", decline_code=None, message=None
    )
    ref = body["payment_ref"]
    assert (await api.http.post(INGEST, json=body, headers=api.auth())).status_code == 202

    async def exhausted() -> dict:
        rec = await recovery(api, ref)
        assert rec["status"] == "exhausted", rec
        return rec

    first = await eventually(exhausted)
    assert_envelope(
        await api.http.post(f"/v1/recoveries/by_ref/{ref}/expedite", headers=api.auth()),
        409,
        "recovery_finished",
    )
    await api.http.put("/v1/policy", json={"max_unknown_attempts": 1}, headers=api.auth())
    r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/retry", headers=api.auth())
    assert r.status_code == 200, r.text
    assert r.json()["recovery_id"] != first["recovery_id"] and r.json()["status"] == "active"
    assert_envelope(
        await api.http.post(f"/v1/recoveries/by_ref/{ref}/retry", headers=api.auth()),
        409,
        "recovery_not_exhausted",
    )

    async def scheduled() -> dict:
        rec = await recovery(api, ref)
        assert rec["next_attempt_at"] and rec["policy_version"] == 2, rec
        return rec

    await eventually(scheduled)


async def test_a_revoked_key_stops_working_within_5_s_on_every_replica(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment
) -> None:
    """Two API processes on one database, each keeping the keys it verified (at the longest
    cache allowed, 5 s): a key revoked through one is refused by the other within 5 s."""
    address = dev_env.client.service_client.config.target_host
    async with (
        running_stack(store, pg_dsn, address, worker=False, api_key_cache_seconds=5) as a,
        running_stack(store, pg_dsn, address, worker=False, api_key_cache_seconds=5) as b,
    ):
        key = generate_key()
        key_id = await register_key(store, a.merchant_id, "support", key)
        for replica in (a, b):
            r = await replica.http.get("/v1/recoveries", headers=replica.auth(key))
            assert r.status_code == 200, r.text
        assert await a.store.revoke_api_key(key_id)
        revoked = time.monotonic()

        async def refused_by_b() -> bool:
            r = await b.http.get("/v1/recoveries", headers=b.auth(key))
            assert r.status_code in (200, 401), r.text
            return r.status_code == 401

        await eventually(refused_by_b, within=10, interval=0.05)
        assert time.monotonic() - revoked <= 5.0 + 0.5  # + one poll and request, not the cache
        assert_envelope(await a.http.get("/v1/recoveries", headers=a.auth(key)), 401)


async def test_a_verified_key_is_kept_and_a_refused_one_is_not(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment
) -> None:
    address = dev_env.client.service_client.config.target_host
    async with running_stack(store, pg_dsn, address, worker=False, api_key_cache_seconds=5) as api:
        # an unknown key is asked again each time: registered now, it works now
        key = generate_key()
        assert_envelope(await api.http.get("/v1/recoveries", headers=api.auth(key)), 401)
        await register_key(store, api.merchant_id, "support", key)
        assert (await api.http.get("/v1/recoveries", headers=api.auth(key))).status_code == 200

        # a verified key is served without asking Postgres: with the keys' table locked
        # against every read, it still gets in, and a key never verified waits for the lock
        other = generate_key()
        await register_key(store, api.merchant_id, "support", other)
        async with store.pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
            r = await asyncio.wait_for(
                api.http.get("/v1/recoveries", headers=api.auth(key)), timeout=4
            )
            assert r.status_code == 200, r.text
            waiting = asyncio.ensure_future(api.http.get("/v1/recoveries", headers=api.auth(other)))
            await asyncio.sleep(0.3)
            assert not waiting.done()
        assert (await waiting).status_code == 200


async def test_operator_cli_creates_lists_and_revokes_keys(api: Stack, pg_dsn: str) -> None:
    name = f"Shop {uuid.uuid4().hex[:6]}"
    made = cli(pg_dsn, "merchants", "create", name, "--json")
    assert made.returncode == 0, made.stderr
    merchant = json.loads(made.stdout)
    assert merchant["name"] == name and merchant["id"].startswith("mer_")

    out = cli(pg_dsn, "keys", "create", "--merchant", merchant["id"], "--role", "support", "--json")
    assert out.returncode == 0, out.stderr
    key = json.loads(out.stdout)
    assert key["key"].startswith("rk_live_") and key["role"] == "support"
    r = await api.http.get("/v1/recoveries", headers=api.auth(key["key"]))
    assert r.status_code == 200 and r.json()["data"] == []

    listed = json.loads(cli(pg_dsn, "keys", "list", "--merchant", merchant["id"], "--json").stdout)
    assert [k["id"] for k in listed] == [key["id"]]
    assert key["key"] not in json.dumps(listed)  # only the prefix is kept
    assert cli(pg_dsn, "keys", "revoke", key["id"]).returncode == 0
    assert cli(pg_dsn, "keys", "revoke", key["id"]).returncode == 1

    async def refused() -> bool:  # the API keeps a verified key for API_KEY_CACHE_SECONDS
        r = await api.http.get("/v1/recoveries", headers=api.auth(key["key"]))
        return r.status_code == 401 and is_envelope(r.json())

    await eventually(refused, within=5, interval=0.05)
    bad = cli(pg_dsn, "keys", "create", "--merchant", "mer_nope", "--role", "admin")
    assert bad.returncode == 1 and "no merchant" in bad.stderr

    # the address customers' replies to our e-mail go to
    changed = cli(
        pg_dsn, "merchants", "set", merchant["id"], "--reply-to", "help@shop.test", "--json"
    )
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["reply_to"] == "help@shop.test"
    listed = json.loads(cli(pg_dsn, "merchants", "list", "--json").stdout)
    assert {"id": merchant["id"], "reply_to": "help@shop.test"}.items() <= next(
        m for m in listed if m["id"] == merchant["id"]
    ).items()
    bad = cli(pg_dsn, "merchants", "set", merchant["id"], "--reply-to", "not an address")
    assert bad.returncode == 2 and "not an e-mail address" in bad.stderr
    cleared = cli(pg_dsn, "merchants", "set", merchant["id"], "--reply-to", "", "--json")
    assert json.loads(cleared.stdout)["reply_to"] is None
    assert cli(pg_dsn, "merchants", "set", "mer_nope", "--name", "x").returncode == 1


async def test_cli_sets_a_merchants_own_psp_credentials(api: Stack, pg_dsn: str) -> None:
    # without credentials a Stripe event is refused...
    assert (
        await api.http.post(INGEST, json=failure_body(psp="stripe"), headers=api.auth())
    ).status_code == 422
    bad = cli(
        pg_dsn,
        "psp",
        "set",
        "--merchant",
        api.merchant_id,
        "--psp",
        "razorpay",
        "--key-id",
        "rzp_test_1",
    )
    assert bad.returncode == 2 and "key_secret" in bad.stderr
    ok = cli(
        pg_dsn,
        "psp",
        "set",
        "--merchant",
        api.merchant_id,
        "--psp",
        "stripe",
        "--api-key",
        "sk_test_merchant_own",
        "--json",
    )
    assert ok.returncode == 0, ok.stderr
    assert "sk_test_merchant_own" not in ok.stdout
    # ...and accepted once the merchant has its own
    r = await api.http.post(INGEST, json=failure_body(psp="stripe"), headers=api.auth())
    assert r.status_code == 202, r.text


async def test_an_action_right_after_ingest_waits_for_the_run_to_start(api: Stack) -> None:
    """Reproduced in the bench: a cancel or expedite right after ingest answered
    `503 still starting` until the relay had started the run. The relay is held back here
    (the outbox row becomes due 1.5 s after ingest) and the cancel waits for it."""
    await api.store.pool.execute(
        "CREATE FUNCTION test_hold_outbox() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN NEW.available_at := clock_timestamp() + interval '1.5 seconds'; RETURN NEW;"
        " END $$;"
        "CREATE TRIGGER test_hold_outbox BEFORE INSERT ON outbox"
        " FOR EACH ROW EXECUTE FUNCTION test_hold_outbox()"
    )
    try:
        body = failure_body()
        assert (await api.http.post(INGEST, json=body, headers=api.auth())).status_code == 202
        r = await api.http.post(
            f"/v1/recoveries/by_ref/{body['payment_ref']}/cancel",
            json={"reason": "changed mind"},
            headers=api.auth(),
        )
    finally:
        await api.store.pool.execute(
            "DROP TRIGGER test_hold_outbox ON outbox; DROP FUNCTION test_hold_outbox()"
        )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
