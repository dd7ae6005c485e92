"""The HTTP contract against PostgreSQL and a Temporal dev server, through the real relay."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from recovery import constants as names
from recovery.card_networks import HIGHEST_PER_30_DAYS, HIGHEST_PER_DAY
from recovery.models import RecoveryState
from recovery.store import Store
from tests.helpers import (
    INGEST,
    Stack,
    add_merchant,
    assert_envelope,
    eventually,
    failure_body,
    has_next_attempt,
    recovery,
    running_stack,
)
from tests.helpers.stack import counts


async def test_ingest_starts_a_workflow_with_search_attributes(api: Stack) -> None:
    body = failure_body(pm="pm_sim_succeed_on_2")
    r = await api.http.post(INGEST, json=body, headers=api.auth())
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["payment_ref"] == body["payment_ref"] and out["duplicate"] is False
    assert out["status"] == "active" and out["recovery_id"].startswith("rec_")
    assert out["workflow_id"] == names.workflow_id_for(api.merchant_id, body["payment_ref"])

    async def classified() -> dict:
        rec = await recovery(api, body["payment_ref"])
        assert rec["category"] == "funds" and rec["next_attempt_at"], rec
        return rec

    rec = await eventually(classified)
    assert rec["attempts"] == [] and rec["amount"] == 4999 and rec["psp"] == "simulator"

    handle = api.temporal.get_workflow_handle(out["workflow_id"])
    state = await handle.query(names.QUERY_STATE, result_type=RecoveryState)
    assert state.recovery_id == out["recovery_id"] and state.next_attempt_reason

    query = f'MerchantId="{api.merchant_id}" AND RecoveryStatus="active"'

    async def visible() -> Any:
        found = [w async for w in api.temporal.list_workflows(query)]
        assert len(found) == 1
        sa = found[0].typed_search_attributes
        assert sa.get(names.SA_FAILURE_CATEGORY) == "funds"
        assert sa.get(names.SA_PAYMENT_REF) == body["payment_ref"]
        assert sa.get(names.SA_PSP) == "simulator"
        assert sa.get(names.SA_AMOUNT_MINOR) == 4999
        assert sa.get(names.SA_NEXT_ATTEMPT_AT) is not None
        return found

    await eventually(visible)

    # expedite: the attempt happens now, and the payment is charged on attempt 2
    r = await api.http.post(
        f"/v1/recoveries/by_ref/{body['payment_ref']}/expedite", headers=api.auth()
    )
    assert r.status_code == 200, r.text

    async def attempted() -> dict:
        rec = await recovery(api, body["payment_ref"])
        assert len(rec["attempts"]) == 1 and rec["attempts"][0]["outcome"] == "failed", rec
        return rec

    await eventually(attempted)


async def test_idempotency_key_replays_and_rejects_other_bodies(api: Stack) -> None:
    body = failure_body()
    key = {"Idempotency-Key": f"idem-{uuid.uuid4()}", **api.auth()}
    first = await api.http.post(INGEST, json=body, headers=key)
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    again = await api.http.post(INGEST, json=body, headers=key)
    assert again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"

    other = dict(body, amount=body["amount"] + 1)
    assert_envelope(
        await api.http.post(INGEST, json=other, headers=key), 409, "idempotency_key_reused"
    )
    assert (await counts(api, api.merchant_id))[0] == 1


async def test_duplicate_event_id_is_dropped(api: Stack) -> None:
    body = failure_body()
    first = await api.http.post(INGEST, json=body, headers=api.auth())
    assert first.status_code == 202
    dup = await api.http.post(INGEST, json=body, headers=api.auth())
    assert dup.status_code == 200, dup.text
    assert dup.json()["duplicate"] is True
    assert dup.json()["recovery_id"] == first.json()["recovery_id"]
    assert await counts(api, api.merchant_id) == (1, 1, 1)


async def test_twenty_concurrent_identical_posts_make_one_workflow(api: Stack) -> None:
    body = failure_body()
    headers = {"Idempotency-Key": "same-key", **api.auth()}
    replies = await asyncio.gather(
        *(api.http.post(INGEST, json=body, headers=headers) for _ in range(20))
    )
    assert {r.status_code for r in replies} == {202}
    assert len({r.json()["recovery_id"] for r in replies}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in replies) == 19

    # and the same event id without a key, all at once
    body2 = failure_body()
    replies = await asyncio.gather(
        *(api.http.post(INGEST, json=body2, headers=api.auth()) for _ in range(20))
    )
    assert sorted(r.status_code for r in replies) == [200] * 19 + [202]
    assert await counts(api, api.merchant_id) == (2, 2, 2)

    wf_id = replies[0].json()["workflow_id"]

    async def one_run() -> list:
        runs = [w async for w in api.temporal.list_workflows(f'WorkflowId="{wf_id}"')]
        assert len(runs) == 1
        return runs

    await eventually(one_run)

    async def absorbed() -> RecoveryState:
        state = await api.temporal.get_workflow_handle(wf_id).query(
            names.QUERY_STATE, result_type=RecoveryState
        )
        assert state.events_seen == 1 and state.category is not None, state
        return state

    await eventually(absorbed)


async def test_invalid_bodies_get_4xx_envelopes_and_write_nothing(api: Stack) -> None:
    good = failure_body()
    cases: list[tuple[Any, int, str | None]] = [
        ({k: v for k, v in good.items() if k != "payment_ref"}, 422, "payment_ref"),
        ({k: v for k, v in good.items() if k != "failure"}, 422, "failure"),
        (dict(good, occurred_at="yesterday"), 422, "occurred_at"),
        (dict(good, occurred_at="2026-11-27T09:00:00"), 422, "occurred_at"),  # no zone
        (dict(good, amount=-5), 422, "amount"),
        (dict(good, amount=0), 422, "amount"),
        (dict(good, amount=49.99), 422, "amount"),
        (dict(good, amount="4999"), 422, "amount"),
        (dict(good, psp="paypal"), 422, "psp"),
        (dict(good, currency="USD"), 422, "currency"),
        (dict(good, currency="abc"), 422, "currency"),
        (dict(good, metadata=["not", "an", "object"]), 422, "metadata"),
        (dict(good, metadata={"blob": "x" * 10_000}), 422, "metadata"),
        (dict(good, failure={}), 422, "failure"),
        (dict(good, payment_ref="has space"), 422, "payment_ref"),
        (dict(good, psp="stripe"), 422, "psp"),  # no Stripe adapter on this deployment
    ]
    for body, status, field in cases:
        r = await api.http.post(INGEST, json=body, headers=api.auth())
        err = assert_envelope(r, status)
        assert err.get("field", "").split(".")[0] == field, (body, err)
    for raw in (b"not json", b"[1, 2]", b"", b'{"payment_ref": '):
        r = await api.http.post(
            INGEST, content=raw, headers={"Content-Type": "application/json", **api.auth()}
        )
        assert_envelope(r, 400, "invalid_json")
    assert await counts(api, api.merchant_id) == (0, 0, 0)


async def test_authentication_is_required(api: Stack) -> None:
    body = failure_body()
    for headers in (
        {},
        {"Authorization": "Bearer rk_test_nope"},
        {"Authorization": "Basic x"},
        {"Authorization": "Bearer"},
    ):
        assert_envelope(await api.http.post(INGEST, json=body, headers=headers), 401)
        assert_envelope(await api.http.get("/v1/recoveries", headers=headers), 401)


async def test_failed_authentications_are_limited_but_never_a_valid_key(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment
) -> None:
    # one shared address (a NAT, an office) where someone keeps sending a wrong key
    address = dev_env.client.service_client.config.target_host
    limits = {"auth_failure_burst": 3, "auth_failure_refill_per_second": 1e-6}  # no refill
    async with running_stack(store, pg_dsn, address, worker=False, **limits) as api:
        wrong = {"Authorization": "Bearer rk_test_wrong"}
        for _ in range(3):
            assert_envelope(await api.http.get("/v1/recoveries", headers=wrong), 401)
        limited = await api.http.get("/v1/recoveries", headers=wrong)
        assert_envelope(limited, 429, "rate_limited")
        assert int(limited.headers["Retry-After"]) >= 1
        # the valid key behind the same address still works, every time
        for _ in range(3):
            r = await api.http.get("/v1/recoveries", headers=api.auth())
            assert r.status_code == 200, r.text
        assert_envelope(await api.http.get("/v1/recoveries", headers=wrong), 429, "rate_limited")
        assert_envelope(await api.http.get("/v1/recoveries"), 429, "rate_limited")


async def test_merchants_never_see_each_other(api: Stack) -> None:
    body = failure_body()
    assert (await api.http.post(INGEST, json=body, headers=api.auth())).status_code == 202
    _, other_key = await add_merchant(api.store)
    ref = body["payment_ref"]
    assert_envelope(
        await api.http.get(f"/v1/recoveries/by_ref/{ref}", headers=api.auth(other_key)),
        404,
        "not_found",
    )
    for action in ("cancel", "expedite"):
        r = await api.http.post(
            f"/v1/recoveries/by_ref/{ref}/{action}",
            json={"reason": "x"},
            headers=api.auth(other_key),
        )
        assert_envelope(r, 404)
    listed = await api.http.get("/v1/recoveries", headers=api.auth(other_key))
    assert listed.json()["data"] == []


async def test_merchant_role_cannot_cancel(api: Stack) -> None:
    body = failure_body()
    assert (await api.http.post(INGEST, json=body, headers=api.auth())).status_code == 202
    from recovery.auth import generate_key, register_key

    key = generate_key()
    await register_key(api.store, api.merchant_id, "merchant", key)
    r = await api.http.post(
        f"/v1/recoveries/by_ref/{body['payment_ref']}/cancel",
        json={"reason": "x"},
        headers=api.auth(key),
    )
    assert_envelope(r, 403, "forbidden")


async def test_cancel_then_actions_on_ended_recovery_conflict(api: Stack) -> None:
    body = failure_body()
    ref = body["payment_ref"]
    assert (await api.http.post(INGEST, json=body, headers=api.auth())).status_code == 202
    await eventually(lambda: has_next_attempt(api, ref))
    r = await api.http.post(
        f"/v1/recoveries/by_ref/{ref}/cancel",
        json={"reason": "customer disputes"},
        headers=api.auth(),
    )
    assert r.status_code == 200, r.text
    cancelled = r.json()
    assert r.json()["status"] == "cancelled"
    assert "customer disputes" in r.json()["ended_reason"]
    assert r.json()["attempts"] == []
    for action in ("cancel", "expedite"):
        r = await api.http.post(
            f"/v1/recoveries/by_ref/{ref}/{action}", json={"reason": "again"}, headers=api.auth()
        )
        assert_envelope(r, 409, "recovery_finished")
    r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/cancel", json={}, headers=api.auth())
    assert_envelope(r, 422)

    # a new failure after the recovery ended starts a new run of the same workflow id
    again = failure_body(ref)
    r2 = await api.http.post(INGEST, json=again, headers=api.auth())
    assert r2.status_code == 202 and r2.json()["recovery_id"] != cancelled["recovery_id"]
    await eventually(lambda: has_next_attempt(api, ref))


async def test_unknown_ref_is_404(api: Stack) -> None:
    assert_envelope(await api.http.get("/v1/recoveries/by_ref/nope", headers=api.auth()), 404)
    r = await api.http.post(
        "/v1/recoveries/by_ref/nope/cancel", json={"reason": "x"}, headers=api.auth()
    )
    assert_envelope(r, 404, "not_found")


async def test_list_filters_and_paginates_newest_first(api: Stack) -> None:
    refs = []
    for i in range(5):
        body = failure_body(f"list-{uuid.uuid4().hex[:6]}-{i}")
        refs.append(body["payment_ref"])
        assert (await api.http.post(INGEST, json=body, headers=api.auth())).status_code == 202
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.http.get("/v1/recoveries", params=params, headers=api.auth())).json()
        seen += [r["payment_ref"] for r in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(refs))
    r = await api.http.get("/v1/recoveries", params={"status": "exhausted"}, headers=api.auth())
    assert r.json()["data"] == []
    r = await api.http.get("/v1/recoveries", params={"status": "active"}, headers=api.auth())
    assert len(r.json()["data"]) == 5
    assert_envelope(
        await api.http.get("/v1/recoveries", params={"status": "nope"}, headers=api.auth()), 422
    )
    assert_envelope(
        await api.http.get("/v1/recoveries", params={"cursor": "garbage"}, headers=api.auth()), 400
    )
    assert_envelope(
        await api.http.get("/v1/recoveries", params={"limit": 0}, headers=api.auth()), 422
    )


async def test_classify(api: Stack) -> None:
    r = await api.http.post(
        "/v1/classify",
        headers=api.auth(),
        json={"psp": "stripe", "decline_code": "insufficient_funds"},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["category"] == "funds" and out["action"] == "retry" and out["rule"]
    assert_envelope(
        await api.http.post("/v1/classify", headers=api.auth(), json={"psp": "stripe"}), 422
    )


async def test_health_and_readiness(api: Stack) -> None:
    assert (await api.http.get("/healthz")).json() == {"ok": True}
    r = await api.http.get("/readyz")
    assert r.status_code == 200 and r.json()["postgres"] and r.json()["temporal"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"card_attempts_per_30_days": None}, "card_attempts_per_30_days"),
        ({"card_attempts_per_day": None}, "card_attempts_per_day"),
        ({"max_attempts": 3, "card_attempts_per_30_days": None}, "card_attempts_per_30_days"),
        ({"card_attempts_per_30_days": HIGHEST_PER_30_DAYS + 1}, "card_attempts_per_30_days"),
        ({"card_attempts_per_day": HIGHEST_PER_DAY + 1}, "card_attempts_per_day"),
        ({"card_attempts_per_day": 0}, "card_attempts_per_day"),
    ],
)
async def test_policy_cannot_raise_or_unset_a_card_network_limit(
    api: Stack, body: dict, field: str
) -> None:
    _, key = await add_merchant(api.store, role="merchant")  # a merchant-role key
    before = (await api.http.get("/v1/policy", headers=api.auth(key))).json()
    err = assert_envelope(await api.http.put("/v1/policy", json=body, headers=api.auth(key)), 422)
    assert err["code"] == "validation_error" and err["field"] == field, err
    assert (await api.http.get("/v1/policy", headers=api.auth(key))).json() == before


async def test_policy_may_lower_the_card_network_limits_and_missing_ones_are_the_ceilings(
    api: Stack,
) -> None:
    _, key = await add_merchant(api.store, role="merchant")
    r = await api.http.put("/v1/policy", json={"card_attempts_per_day": 2}, headers=api.auth(key))
    assert r.status_code == 200, r.text
    assert r.json()["card_attempts_per_day"] == 2
    assert r.json()["card_attempts_per_30_days"] == HIGHEST_PER_30_DAYS  # missing: not unset


async def test_policy_versions_and_apply_to_a_running_recovery(api: Stack) -> None:
    r = await api.http.get("/v1/policy", headers=api.auth())
    assert r.status_code == 200 and r.json()["version"] == 0
    assert_envelope(
        await api.http.put("/v1/policy", json={"max_attempts": 99}, headers=api.auth()), 422
    )
    assert_envelope(await api.http.put("/v1/policy", json={"bogus": 1}, headers=api.auth()), 422)

    body = failure_body(pm="pm_sim_decline_insufficient_funds")
    ref = body["payment_ref"]
    assert (await api.http.post(INGEST, json=body, headers=api.auth())).status_code == 202
    await eventually(lambda: has_next_attempt(api, ref))
    assert (await recovery(api, ref))["policy_version"] == 0

    r = await api.http.put(
        "/v1/policy", json={"max_attempts": 2, "cooldown_multiplier": 0.5}, headers=api.auth()
    )
    assert r.status_code == 200 and r.json()["version"] == 1
    assert (await api.http.get("/v1/policy", headers=api.auth())).json()["max_attempts"] == 2
    assert (await recovery(api, ref))["policy_version"] == 0  # pinned until applied

    r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/apply_policy", headers=api.auth())
    assert r.status_code == 200, r.text

    async def applied() -> bool:
        rec = await recovery(api, ref)
        assert rec["policy_version"] == 1 and "policy v1" in rec["next_attempt_reason"], rec
        return True

    await eventually(applied)


async def test_nul_characters_are_refused_everywhere(api: Stack) -> None:
    body = failure_body()
    body["failure"]["message"] = "bad\x00byte"
    assert_envelope(
        await api.http.post(INGEST, json=body, headers=api.auth()), 422, "validation_error"
    )
    ref = await _ingested(api)
    r = await api.http.post(
        f"/v1/recoveries/by_ref/{ref}/cancel", json={"reason": "x\x00y"}, headers=api.auth()
    )
    assert_envelope(r, 422, "validation_error")
    assert_envelope(
        await api.http.get("/v1/audit", params={"ref": "\x00"}, headers=api.auth()),
        400,
        "bad_request",
    )
    assert (await recovery(api, ref))["status"] == "active"  # the cancel never got through
    assert await counts(api, api.merchant_id) == (1, 1, 1)


async def _ingested(api: Stack) -> str:
    body = failure_body()
    assert (await api.http.post(INGEST, json=body, headers=api.auth())).status_code == 202
    return body["payment_ref"]
