"""Merchant webhooks end to end: the API, the store's events, the relay, WebhookEndpointWorkflow
on a Temporal dev server, and a real HTTP receiver on 127.0.0.1. Every signature is checked
with the `standardwebhooks` package (a verifier none of us wrote).

The stacks here run with ENVIRONMENT=development, where endpoints may be http and local (the
receivers are); the refusals outside development are tested with ENVIRONMENT=test."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.webhooks import WebhookActivities
from recovery import constants as names
from recovery.models import (
    ChargeRequest,
    Failure,
    RecoveryState,
    RecoveryStatus,
    WebhookEvent,
    WebhookPassRequest,
)
from recovery.settings import Settings
from recovery.store import Store
from tests.helpers import INGEST, eventually, failure_body, ingest, recovery
from tests.helpers.stack import (
    TEST_CREDENTIALS_KEY,
    Stack,
    add_merchant,
    put_policy,
    running_stack,
    stack_settings,
)
from tests.helpers.stack import expedite as expedite_now
from tests.helpers.webhooks import (
    Late,
    Received,
    WebhookReceiver,
    endpoint_with_event,
    webhook_receiver,
)

ENDPOINTS = "/v1/webhook_endpoints"


@pytest.fixture
async def api(store: Store, pg_dsn: str, dev_env: WorkflowEnvironment) -> AsyncIterator[Stack]:
    """A stack in development (local endpoints allowed), tries that wait 1 s for an answer."""
    address = dev_env.client.service_client.config.target_host
    async with running_stack(
        store, pg_dsn, address, environment="development", webhook_timeout_seconds=1
    ) as stack:
        yield stack


@pytest.fixture
async def prod_api(store: Store, pg_dsn: str, dev_env: WorkflowEnvironment) -> AsyncIterator[Stack]:
    """The same outside development (ENVIRONMENT=test): only public https endpoints."""
    address = dev_env.client.service_client.config.target_host
    async with running_stack(store, pg_dsn, address, worker=False) as stack:
        assert stack.settings.environment == "test"
        yield stack


async def add_endpoint(api: Stack, url: str, **fields: Any) -> dict[str, Any]:
    r = await api.http.post(ENDPOINTS, json={"url": url, **fields}, headers=api.auth())
    assert r.status_code == 201, r.text
    return r.json()


def verified(got: Received, secret: str) -> dict[str, Any]:
    """The delivery's event, if `secret` signed it (raises otherwise)."""
    return Webhook(secret).verify(got.body, got.headers)


def signed_by(got: Received, secret: str) -> bool:
    try:
        verified(got, secret)
    except WebhookVerificationError:
        return False
    return True


async def arrived(receiver: WebhookReceiver, count: int, within: float = 30) -> list[Received]:
    async def enough() -> list[Received] | None:
        return receiver.received[:] if len(receiver.received) >= count else None

    return await eventually(enough, within=within)


async def of_type(
    receiver: WebhookReceiver, event_type: str, count: int = 1, within: float = 30
) -> list[Received]:
    async def enough() -> list[Received] | None:
        found = [r for r in receiver.received if json.loads(r.body)["type"] == event_type]
        return found if len(found) >= count else None

    return await eventually(enough, within=within)


async def ingest_body(api: Stack, body: dict[str, Any]) -> str:
    r = await api.http.post(INGEST, json=body, headers=api.auth())
    assert r.status_code == 202, r.text
    return str(body["payment_ref"])


async def in_cooldown(api: Stack, ref: str) -> dict[str, Any]:
    async def scheduled() -> dict[str, Any] | None:
        rec = await recovery(api, ref)
        return rec if rec["next_attempt_at"] is not None else None

    return await eventually(scheduled, within=30)


async def expedite(api: Stack, ref: str) -> None:
    """Expedite the attempt once it waits on its cooldown."""
    await in_cooldown(api, ref)
    await expedite_now(api, ref)


async def deliveries(api: Stack, **params: str) -> list[dict[str, Any]]:
    r = await api.http.get("/v1/webhook_deliveries", params=params, headers=api.auth())
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def event(got: Received) -> dict[str, Any]:
    return dict(json.loads(got.body))


# ---- endpoints --------------------------------------------------------------------------------


async def test_an_endpoint_shows_its_secret_once(api: Stack) -> None:
    created = await add_endpoint(
        api, "https://hooks.example.com/recovery", events=["recovery.recovered"], description="x"
    )
    assert created["id"].startswith("we_") and created["secret"].startswith("whsec_")
    assert created["events"] == ["recovery.recovered"] and created["description"] == "x"
    Webhook(created["secret"])  # a secret the standard's own library takes
    listed = (await api.http.get(ENDPOINTS, headers=api.auth())).json()["data"]
    assert [e["id"] for e in listed] == [created["id"]]
    assert "secret" not in listed[0] and listed[0]["url"] == "https://hooks.example.com/recovery"
    at_rest = await api.store.pool.fetchrow(
        "SELECT secret_sealed FROM webhook_endpoints WHERE id = $1", created["id"]
    )
    assert created["secret"].removeprefix("whsec_").encode() not in at_rest["secret_sealed"]
    r = await api.http.delete(f"{ENDPOINTS}/{created['id']}", headers=api.auth())
    assert r.status_code == 200 and r.json() == {"id": created["id"], "deleted": True}
    assert (await api.http.get(ENDPOINTS, headers=api.auth())).json()["data"] == []
    r = await api.http.delete(f"{ENDPOINTS}/{created['id']}", headers=api.auth())
    assert r.status_code == 404, r.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "https://hooks.example.com", "events": ["recovery.unknown"]}, "events.0"),
        ({"url": "https://hooks.example.com", "events": []}, "events"),
        ({"url": "https://hooks.example.com", "secret": "whsec_mine"}, "secret"),
        ({"events": ["recovery.started"]}, "url"),
        ({"url": "ftp://hooks.example.com/x"}, "url"),
        ({"url": "https://user:pw@hooks.example.com/x"}, "url"),
        ({"url": "not a url"}, "url"),
    ],
)
async def test_a_bad_endpoint_is_a_422_naming_its_field(
    api: Stack, body: dict[str, Any], field: str
) -> None:
    r = await api.http.post(ENDPOINTS, json=body, headers=api.auth())
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field, r.text
    assert (await api.http.get(ENDPOINTS, headers=api.auth())).json()["data"] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/hooks",  # not https
        "https://127.0.0.1/hooks",
        "https://127.0.0.1:8443/hooks",
        "https://10.1.2.3/hooks",
        "https://172.16.0.1/hooks",
        "https://192.168.1.1/hooks",
        "https://100.64.0.1/hooks",  # shared address space (carrier NAT)
        "https://169.254.169.254/latest/meta-data",  # cloud metadata
        "https://0.0.0.0/hooks",
        "https://224.0.0.1/hooks",
        "https://[::1]/hooks",
        "https://[::ffff:127.0.0.1]/hooks",  # IPv4-mapped loopback
        "https://[::ffff:a9fe:a9fe]/hooks",  # IPv4-mapped 169.254.169.254
        "https://[64:ff9b::a00:1]/hooks",  # NAT64 of 10.0.0.1
        "https://[fe80::1]/hooks",
        "https://[fd00::1]/hooks",
        "https://localhost/hooks",  # a name that resolves to loopback
        "https://2130706433/hooks",  # 127.0.0.1 written as a number
        "https://no-such-host.invalid/hooks",
    ],
)
async def test_outside_development_only_public_https_endpoints(prod_api: Stack, url: str) -> None:
    r = await prod_api.http.post(ENDPOINTS, json={"url": url}, headers=prod_api.auth())
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "url_not_allowed" and err["field"] == "url", err
    listed = await prod_api.http.get(ENDPOINTS, headers=prod_api.auth())
    assert listed.json()["data"] == []


async def test_outside_development_a_public_https_endpoint_is_taken(prod_api: Stack) -> None:
    """The control of the refusals above: an https URL on a public address is accepted."""
    created = await add_endpoint(prod_api, "https://93.184.216.34/hooks")
    assert created["url"] == "https://93.184.216.34/hooks"


async def test_a_merchant_never_sees_or_touches_another_merchants_endpoints(api: Stack) -> None:
    mine = await add_endpoint(api, "https://hooks.example.com/a")
    _, other_key = await add_merchant(api.store, "merchant")
    other = api.auth(other_key)
    assert (await api.http.get(ENDPOINTS, headers=other)).json()["data"] == []
    for method, path, body in [
        ("DELETE", f"{ENDPOINTS}/{mine['id']}", None),
        ("POST", f"{ENDPOINTS}/{mine['id']}/rotate_secret", {}),
        ("POST", f"{ENDPOINTS}/{mine['id']}/redeliver", {"event_id": "evt_x"}),
    ]:
        r = await api.http.request(method, path, json=body, headers=other)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"] == "not_found"
    r = await api.http.get(
        "/v1/webhook_deliveries", params={"endpoint_id": mine["id"]}, headers=other
    )
    assert r.status_code == 200 and r.json()["data"] == []
    # ... and it is still there for its merchant
    listed = (await api.http.get(ENDPOINTS, headers=api.auth())).json()["data"]
    assert [e["id"] for e in listed] == [mine["id"]]


# ---- deliveries -------------------------------------------------------------------------------


async def test_a_recovery_told_start_to_end_signed_and_retried(api: Stack) -> None:
    """started -> attempt_failed -> recovered (the simulator succeeds on attempt 2). The
    receiver fails the first delivery: the retry comes within 10 s, same webhook-id."""
    with webhook_receiver(answers=[500]) as receiver:
        endpoint = await add_endpoint(api, receiver.url)
        ref = await ingest_body(api, failure_body(pm="pm_sim_succeed_on_2"))
        first, retry = await arrived(receiver, 2)
        assert first.headers["webhook-id"] == retry.headers["webhook-id"]
        assert first.body == retry.body and retry.at - first.at < 10
        assert event(first)["type"] == "recovery.started"
        await expedite(api, ref)
        (failed,) = await of_type(receiver, "recovery.attempt_failed")
        await expedite(api, ref)
        (recovered,) = await of_type(receiver, "recovery.recovered")
        final = await recovery(api, ref)
    for got in receiver.received:
        told = verified(got, endpoint["secret"])
        assert set(told) == {"id", "type", "created_at", "data"}
        assert told["id"] == got.headers["webhook-id"] and told["id"].startswith("evt_")
        assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
        assert got.headers["content-type"] == "application/json"
    assert [event(r)["type"] for r in receiver.received] == [
        "recovery.started",
        "recovery.started",
        "recovery.attempt_failed",
        "recovery.recovered",
    ]
    data = event(failed)["data"]
    assert data["will_retry"] is True and data["attempts_left"] == 3
    assert data["next_attempt_at"] == data["recovery"]["next_attempt_at"] is not None
    assert data["rule"] == data["recovery"]["rule"] and data["rule"]
    assert data["reason"] == data["recovery"]["next_attempt_reason"]
    assert "attempt 2 of 4" in data["reason"]
    assert data["attempt"]["number"] == 1 and data["attempt"]["outcome"] == "failed"
    assert data["attempt"]["failure"]["decline_code"] == "insufficient_funds"
    # data.recovery is the recovery as GET /v1/recoveries/by_ref/{ref} shows it
    assert event(recovered)["data"]["recovery"] == final
    assert final["status"] == "recovered"
    log = await deliveries(api, endpoint_id=endpoint["id"])
    assert [(d["attempt"], d["status_code"]) for d in reversed(log)] == [
        (1, 500),
        (2, 200),
        (1, 200),
        (1, 200),
    ]
    assert set(log[-1]) >= {
        "id",
        "endpoint_id",
        "event_id",
        "type",
        "status_code",
        "attempted_at",
        "next_retry_at",
        "error",
    }
    failed_try = log[-1]
    assert failed_try["error"] == "HTTP 500" and failed_try["type"] == "recovery.started"
    retry_at = datetime.fromisoformat(failed_try["next_retry_at"])
    tried_at = datetime.fromisoformat(failed_try["attempted_at"])
    assert timedelta(seconds=4) < retry_at - tried_at < timedelta(seconds=10)
    assert all(d["next_retry_at"] is None for d in log[:-1])
    assert await deliveries(api, event_id=failed_try["event_id"]) == log[-2:]


async def test_an_endpoint_that_times_out_is_retried(api: Stack) -> None:
    with webhook_receiver(answers=[Late(3)]) as receiver:
        endpoint = await add_endpoint(api, receiver.url, events=["recovery.started"])
        await ingest_body(api, failure_body())
        first, retry = await arrived(receiver, 2)
        assert first.headers["webhook-id"] == retry.headers["webhook-id"]
        verified(retry, endpoint["secret"])

        async def logged() -> list[dict[str, Any]] | None:
            log = await deliveries(api, endpoint_id=endpoint["id"])
            return log if len(log) == 2 else None

        second, timed_out = await eventually(logged)
    assert timed_out["status_code"] is None and "no answer within 1 s" in timed_out["error"]
    assert timed_out["duration_ms"] < 2500 and timed_out["next_retry_at"] is not None
    assert second["status_code"] == 200 and second["attempt"] == 2


async def test_a_deleted_endpoint_gets_nothing_more(api: Stack) -> None:
    with webhook_receiver(default=503) as receiver:
        endpoint = await add_endpoint(api, receiver.url)
        kept = await add_endpoint(api, receiver.url.replace("/hooks", "/kept"))
        ref = await ingest_body(api, failure_body())
        await arrived(receiver, 2)  # the first try to each
        r = await api.http.delete(f"{ENDPOINTS}/{endpoint['id']}", headers=api.auth())
        assert r.status_code == 200, r.text
        # its queue went with it: the retry due 5 s later is not made
        queued = "SELECT count(*) FROM webhook_queue WHERE endpoint_id = $1"
        assert await api.store.pool.fetchval(queued, endpoint["id"]) == 0
        await asyncio.sleep(6)
        # a new event goes to the endpoint that is left only
        r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/link", headers=api.auth())
        assert r.status_code == 201, r.text
        await of_type(receiver, "link.issued")
    paths = [(r.path, event(r)["type"]) for r in receiver.received]
    assert ("/hooks", "link.issued") not in paths and ("/kept", "link.issued") in paths
    assert sum(1 for p, _ in paths if p == "/hooks") == 1, paths
    assert {d["endpoint_id"] for d in await deliveries(api)} <= {endpoint["id"], kept["id"]}


async def test_a_rotated_secret_signs_alongside_the_new_one_until_it_expires(api: Stack) -> None:
    with webhook_receiver() as receiver:
        created = await add_endpoint(api, receiver.url, events=["link.issued"])
        old = created["secret"]
        ref = await ingest_body(api, failure_body())
        await in_cooldown(api, ref)
        path = f"{ENDPOINTS}/{created['id']}/rotate_secret"
        r = await api.http.post(path, headers=api.auth())
        assert r.status_code == 200, r.text
        rotated = r.json()
        new = rotated["secret"]
        assert new != old and new.startswith("whsec_")
        expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
        assert abs(expires - (datetime.now(UTC) + timedelta(hours=24))) < timedelta(minutes=1)
        link = await api.http.post(f"/v1/recoveries/by_ref/{ref}/link", headers=api.auth())
        (during,) = await of_type(receiver, "link.issued")
        assert len(during.headers["webhook-signature"].split(" ")) == 2
        assert signed_by(during, new) and signed_by(during, old)
        told = verified(during, new)["data"]["link"]
        assert told["link_id"] == link.json()["link_id"]
        page = await api.http.get(urlsplit(told["url"]).path)  # the link it carries opens
        assert page.status_code == 200, page.text
        # rotated again, the replaced secret expiring at once (a leaked secret): only the
        # newest signs, and neither earlier one
        r = await api.http.post(path, json={"expire_previous_in_seconds": 0}, headers=api.auth())
        assert r.status_code == 200 and r.json()["previous_secret_expires_at"] is None, r.text
        newest = r.json()["secret"]
        await api.http.post(f"/v1/recoveries/by_ref/{ref}/link", headers=api.auth())
        _, after = await of_type(receiver, "link.issued", count=2)
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert signed_by(after, newest)
    assert not signed_by(after, new) and not signed_by(after, old)


async def test_a_replaced_secret_stops_signing_when_its_overlap_ends(api: Stack) -> None:
    with webhook_receiver() as receiver:
        created = await add_endpoint(api, receiver.url, events=["link.issued"])
        ref = await ingest_body(api, failure_body())
        await in_cooldown(api, ref)
        r = await api.http.post(
            f"{ENDPOINTS}/{created['id']}/rotate_secret",
            json={"expire_previous_in_seconds": 2},
            headers=api.auth(),
        )
        new = r.json()["secret"]
        await api.http.post(f"/v1/recoveries/by_ref/{ref}/link", headers=api.auth())
        (during,) = await of_type(receiver, "link.issued")
        assert signed_by(during, created["secret"]) and signed_by(during, new)
        expires = datetime.fromisoformat(r.json()["previous_secret_expires_at"])
        await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)
        listed = (await api.http.get(ENDPOINTS, headers=api.auth())).json()["data"]
        assert listed[0]["previous_secret_expires_at"] is None
        await api.http.post(f"/v1/recoveries/by_ref/{ref}/link", headers=api.auth())
        _, after = await of_type(receiver, "link.issued", count=2)
    assert signed_by(after, new) and not signed_by(after, created["secret"])


async def test_redelivery_sends_the_event_again_with_the_same_id(api: Stack) -> None:
    with webhook_receiver() as receiver:
        endpoint = await add_endpoint(api, receiver.url, events=["recovery.started"])
        await ingest_body(api, failure_body())
        (first,) = await arrived(receiver, 1)
        event_id = event(first)["id"]
        r = await api.http.post(
            f"{ENDPOINTS}/{endpoint['id']}/redeliver",
            json={"event_id": event_id},
            headers=api.auth(),
        )
        assert r.status_code == 202, r.text
        assert r.json()["workflow_id"] == names.webhook_endpoint_workflow_id(endpoint["id"])
        _, again = await arrived(receiver, 2)
        r = await api.http.post(
            f"{ENDPOINTS}/{endpoint['id']}/redeliver",
            json={"event_id": "evt_unknown"},
            headers=api.auth(),
        )
        assert r.status_code == 404 and r.json()["error"]["field"] == "event_id", r.text
    assert again.headers["webhook-id"] == event_id and again.body == first.body
    verified(again, endpoint["secret"])
    log = await deliveries(api, event_id=event_id)
    assert [(d["manual"], d["status_code"]) for d in log] == [(True, 200), (False, 200)]
    audit = (await api.http.get("/v1/audit", headers=api.auth())).json()["data"]
    assert {"webhook_endpoint.create", "webhook_endpoint.redeliver"} <= {a["action"] for a in audit}


async def test_an_endpoint_gets_only_the_types_it_asked_for(api: Stack) -> None:
    with webhook_receiver() as everything, webhook_receiver() as some:
        await add_endpoint(api, everything.url)
        await add_endpoint(api, some.url, events=["recovery.cancelled", "recovery.paused"])
        ref = await ingest_body(api, failure_body())
        await in_cooldown(api, ref)
        r = await api.http.post(
            f"/v1/recoveries/by_ref/{ref}/cancel", json={"reason": "ops"}, headers=api.auth()
        )
        assert r.status_code == 200, r.text
        await of_type(everything, "recovery.cancelled")
        await of_type(some, "recovery.cancelled")
    assert sorted(event(r)["type"] for r in everything.received) == [
        "recovery.cancelled",
        "recovery.started",
    ]
    assert [event(r)["type"] for r in some.received] == ["recovery.cancelled"]


# ---- every event type -------------------------------------------------------------------------


async def test_paused_resumed_and_cancelled(api: Stack) -> None:
    with webhook_receiver() as receiver:
        endpoint = await add_endpoint(api, receiver.url)
        ref = await ingest_body(api, failure_body())
        await in_cooldown(api, ref)
        base = f"/v1/recoveries/by_ref/{ref}"
        r = await api.http.post(f"{base}/pause", json={"reason": "dispute"}, headers=api.auth())
        assert r.status_code == 200 and r.json()["paused"] is True, r.text
        r = await api.http.post(f"{base}/resume", headers=api.auth())
        assert r.status_code == 200 and r.json()["paused"] is False, r.text
        await in_cooldown(api, ref)
        r = await api.http.post(f"{base}/cancel", json={"reason": "ops"}, headers=api.auth())
        assert r.status_code == 200, r.text
        (cancelled,) = await of_type(receiver, "recovery.cancelled")
    types = [verified(r, endpoint["secret"])["type"] for r in receiver.received]
    assert sorted(types) == sorted(
        ["recovery.started", "recovery.paused", "recovery.resumed", "recovery.cancelled"]
    )
    paused = event(next(r for r in receiver.received if event(r)["type"] == "recovery.paused"))
    shown = paused["data"]["recovery"]
    assert shown["paused"] is True and shown["next_attempt_at"] is None
    assert "dispute" in shown["next_attempt_reason"]
    data = event(cancelled)["data"]["recovery"]
    assert data["status"] == "cancelled" and "ops" in data["ended_reason"]


async def test_awaiting_customer_and_links_issued(api: Stack) -> None:
    with webhook_receiver() as receiver:
        await add_endpoint(api, receiver.url)
        ref = await ingest_body(api, failure_body(decline_code="stolen_card"))
        (awaiting,) = await of_type(receiver, "recovery.awaiting_customer")
        (issued,) = await of_type(receiver, "link.issued")
    rec = event(awaiting)["data"]["recovery"]
    assert rec["status"] == "awaiting_customer" and rec["payment_ref"] == ref
    link = event(issued)["data"]["link"]
    assert link["issued_by"] == "workflow" and link["url"].startswith(
        f"{api.settings.public_base_url}/pay/retry/"
    )
    assert [x["link_id"] for x in event(issued)["data"]["recovery"]["links"]] == [link["link_id"]]


async def test_attempt_failed_at_the_end_and_exhausted(api: Stack) -> None:
    await put_policy(api, max_attempts=1)
    with webhook_receiver() as receiver:
        await add_endpoint(
            api, receiver.url, events=["recovery.attempt_failed", "recovery.exhausted"]
        )
        ref = await ingest_body(api, failure_body(pm="pm_sim_decline_insufficient_funds"))
        await expedite(api, ref)
        (exhausted,) = await of_type(receiver, "recovery.exhausted")
        (failed,) = await of_type(receiver, "recovery.attempt_failed")
    data = event(failed)["data"]
    assert data["will_retry"] is False and data["next_attempt_at"] is None
    assert data["attempts_left"] == 0 and data["rule"]
    assert data["reason"] == data["recovery"]["ended_reason"] and "max attempts" in data["reason"]
    assert event(exhausted)["data"]["recovery"]["status"] == "exhausted"


async def test_payment_received_after_the_end(api: Stack) -> None:
    with webhook_receiver() as receiver:
        await add_endpoint(api, receiver.url, events=["payment.received_after_end"])
        ref = await ingest_body(api, failure_body())
        await in_cooldown(api, ref)
        r = await api.http.post(
            f"/v1/recoveries/by_ref/{ref}/cancel", json={"reason": "ops"}, headers=api.auth()
        )
        assert r.json()["status"] == "cancelled", r.text
        await api.store.record_webhook(
            WebhookEvent(
                psp="simulator",
                event_id=f"evt_{uuid.uuid4().hex}",
                kind="payment_succeeded",
                psp_type="test",
                merchant_id=api.merchant_id,
                payment_ref=ref,
                psp_payment_id="sim_paid_late",
                amount=4999,
                currency="usd",
            ),
            {},
        )
        (got,) = await of_type(receiver, "payment.received_after_end")
    data = event(got)["data"]
    assert data["payment"]["psp_payment_id"] == "sim_paid_late"
    assert data["payment"]["disposition"] == "paid_after_end"
    assert data["recovery"]["status"] == "cancelled" and data["recovery"]["paid"] is True


async def test_a_second_payment_refunded_as_a_duplicate(api: Stack) -> None:
    with webhook_receiver() as receiver:
        await add_endpoint(api, receiver.url, events=["payment.refunded_duplicate"])
        ref = await ingest_body(api, failure_body())
        rec = await in_cooldown(api, ref)
        charges = []
        for n in (1, 2):  # the customer paid twice at the PSP
            req = ChargeRequest(
                merchant_id=api.merchant_id,
                recovery_id=rec["recovery_id"],
                payment_ref=ref,
                attempt=n,
                idempotency_key=f"{ref}-paid-{n}",
                psp="simulator",
                amount=4999,
                currency="usd",
                original_failure=Failure(code="card_declined"),
            )
            charges.append((await api.store.simulator_charge(req, "succeeded", None))[0])
        for n, psp_payment_id in enumerate(charges):
            await api.store.record_webhook(
                WebhookEvent(
                    psp="simulator",
                    event_id=f"evt_{ref}_{n}",
                    kind="payment_succeeded",
                    psp_type="test",
                    merchant_id=api.merchant_id,
                    payment_ref=ref,
                    psp_payment_id=psp_payment_id,
                ),
                {},
            )
        (got,) = await of_type(receiver, "payment.refunded_duplicate")
    data = event(got)["data"]
    assert data["payment"]["psp_payment_id"] == charges[1]
    assert data["payment"]["disposition"] == "duplicate"
    assert data["payment"]["refund_status"] == "succeeded"
    # the recovery as it was then (its workflow may not have recorded its end yet): paid, and
    # the duplicate refunded
    shown = data["recovery"]
    assert shown["paid"] is True and shown["status"] in ("active", "recovered")
    assert [(p["disposition"], p["refund_status"]) for p in shown["payments"]] == [
        ("recovered", None),
        ("duplicate", "succeeded"),
    ]


# ---- the store: each event once ---------------------------------------------------------------


async def test_a_retried_state_write_tells_nothing_twice(store: Store, merchant: str) -> None:
    """An activity retried after its write committed (its answer lost) writes no event
    again; a new change still tells."""
    body = failure_body()
    res = await ingest(store, merchant, body)
    state = RecoveryState(
        merchant_id=merchant,
        payment_ref=body["payment_ref"],
        recovery_id=res.body["recovery_id"],
        category="funds",
        rule="funds.insufficient",
        next_attempt_at=datetime.now(UTC) + timedelta(days=1),
        next_attempt_reason="cooldown",
    )

    async def told() -> list[str]:
        rows = await store.pool.fetch(
            "SELECT type FROM merchant_events WHERE recovery_id = $1 ORDER BY created_at",
            state.recovery_id,
        )
        return [r["type"] for r in rows]

    await store.save_state(state)
    await store.save_state(state)
    assert await told() == ["recovery.started"]
    paused = state.model_copy(update={"paused": True, "next_attempt_at": None})
    await store.save_state(paused)
    await store.save_state(paused)
    assert await told() == ["recovery.started", "recovery.paused"]
    await store.save_state(state)
    await store.save_state(paused)
    assert await told() == [
        "recovery.started",
        "recovery.paused",
        "recovery.resumed",
        "recovery.paused",
    ]
    ended = paused.model_copy(update={"status": RecoveryStatus.CANCELLED, "ended_reason": "x"})
    for _ in range(2):
        assert (await store.finish(ended, [body["event_id"]])).finished
    await store.save_state(state)  # a late write to an ended recovery changes nothing
    assert (await told())[-1] == "recovery.cancelled" and len(await told()) == 5
    ids = await store.pool.fetch(
        "SELECT id, dedupe_key FROM merchant_events WHERE recovery_id = $1", state.recovery_id
    )
    assert len({r["id"] for r in ids}) == 5


async def test_old_events_are_pruned_once_their_recovery_ended(store: Store, merchant: str) -> None:
    """An open recovery keeps what it told (else it would tell `recovery.started` again)."""
    body = failure_body()
    res = await ingest(store, merchant, body)
    state = RecoveryState(
        merchant_id=merchant, payment_ref=body["payment_ref"], recovery_id=res.body["recovery_id"]
    )
    await store.save_state(state)
    month_old = "UPDATE merchant_events SET created_at = now() - interval '40 days'"
    month_old += " WHERE recovery_id = $1"
    await store.pool.execute(month_old, state.recovery_id)
    ttl = timedelta(days=30)

    async def kept() -> int:
        return int(
            await store.pool.fetchval(
                "SELECT count(*) FROM merchant_events WHERE recovery_id = $1", state.recovery_id
            )
        )

    await store.prune(
        idempotency_older_than=ttl,
        outbox_older_than=ttl,
        merchant_events_older_than=ttl,
        webhooks_stalled_after=ttl,
    )
    await store.save_state(state)
    assert await kept() == 1
    ended = state.model_copy(update={"status": RecoveryStatus.CANCELLED, "ended_reason": "x"})
    assert (await store.finish(ended, [body["event_id"]])).finished
    await store.pool.execute(month_old, state.recovery_id)
    pruned = await store.prune(
        idempotency_older_than=ttl,
        outbox_older_than=ttl,
        merchant_events_older_than=ttl,
        webhooks_stalled_after=ttl,
    )
    assert pruned["merchant_events"] >= 2 and await kept() == 0


async def test_an_endpoint_with_overdue_deliveries_is_woken_by_maintenance(
    store: Store, merchant: str
) -> None:
    """A delivery queued but long overdue (its endpoint's workflow gone: terminated by hand)
    gets its endpoint's workflow woken again through the outbox; one on time does not."""
    settings = Settings(environment="development", credentials_key=TEST_CREDENTIALS_KEY)
    late, _, _ = await endpoint_with_event(store, merchant, "http://127.0.0.1:9/", settings)
    on_time, _, _ = await endpoint_with_event(store, merchant, "http://127.0.0.1:9/", settings)
    await store.pool.execute(
        "UPDATE webhook_queue SET next_try_at = now() - interval '1 hour' WHERE endpoint_id = $1",
        late,
    )
    await store.pool.execute("UPDATE outbox SET delivered_at = now()")  # as the relay did
    ttl = timedelta(days=30)
    pruned = await store.prune(
        idempotency_older_than=ttl,
        outbox_older_than=ttl,
        merchant_events_older_than=ttl,
        webhooks_stalled_after=timedelta(minutes=15),
    )
    assert pruned["webhook_endpoints_woken"] >= 1
    woken = await store.pool.fetch(
        "SELECT workflow_id, signal, payload FROM outbox WHERE delivered_at IS NULL"
        " AND workflow_id = ANY($1::text[])",
        [names.webhook_endpoint_workflow_id(e) for e in (late, on_time)],
    )
    assert [(w["workflow_id"], w["signal"]) for w in woken] == [
        (names.webhook_endpoint_workflow_id(late), names.OUTBOX_WAKE_WEBHOOKS)
    ]
    assert woken[0]["payload"] == {"merchant_id": merchant, "endpoint_id": late}
    await store.pool.execute("UPDATE outbox SET delivered_at = now()")


async def test_a_delivery_to_a_private_address_fails_without_connecting(
    store: Store, pg_dsn: str, merchant: str
) -> None:
    """At every try, outside development: an endpoint taken in development is refused before
    any connection (the address rules at each try: tests/unit/test_merchant_webhooks.py)."""
    settings = stack_settings(pg_dsn, "unused:7233", "unused")
    assert settings.environment == "test"
    with webhook_receiver() as receiver:
        endpoint_id, event_id, _ = await endpoint_with_event(
            store, merchant, receiver.url, settings
        )
        req = WebhookPassRequest(
            merchant_id=merchant, endpoint_id=endpoint_id, now=datetime.now(UTC)
        )
        passed = await ActivityEnvironment().run(
            WebhookActivities(store, settings).deliver_queued_webhooks, req
        )
        assert passed.tried == 1 and passed.delivered == 0 and passed.next_try_at is not None
        assert receiver.received == []
        # the same delivery's next try, in development, reaches it (the control)
        dev = stack_settings(pg_dsn, "unused:7233", "unused", environment="development")
        done = await ActivityEnvironment().run(
            WebhookActivities(store, dev).deliver_queued_webhooks,
            req.model_copy(update={"now": passed.next_try_at}),
        )
        assert done.delivered == 1 and len(receiver.received) == 1
    log = await store.pool.fetch(
        "SELECT status_code, error FROM webhook_deliveries WHERE event_id = $1"
        " ORDER BY attempted_at",
        event_id,
    )
    assert log[0]["status_code"] is None and log[0]["error"].startswith("not sent: the URL")
    assert log[1]["status_code"] == 200
