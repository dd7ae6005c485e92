"""The console over HTTP (in-process): sign-in and its cookie, sessions kept hashed, CSRF,
roles enforced on the server, expiry, sign-out, the pages and their errors (pages, never a
500). The browser tests (`tests/browser/test_console.py`) drive the same in Chromium."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.webhooks import WebhookActivities
from recovery.auth import generate_key, register_key
from recovery.models import WebhookPassRequest
from recovery.store import Store
from tests.helpers import Stack, add_merchant, running_stack, scheduled_recovery
from tests.helpers.stack import stack_settings
from tests.helpers.webhooks import endpoint_with_event, webhook_receiver

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
async def api(store: Store, pg_dsn: str, dev_env: WorkflowEnvironment) -> AsyncIterator[Stack]:
    address = dev_env.client.service_client.config.target_host
    async with running_stack(
        store, pg_dsn, address, temporal_ui_url="http://127.0.0.1:8233"
    ) as stack:
        yield stack


class Browser:
    """A client that keeps the console's cookies itself: they are Secure (outside
    development), which httpx's jar would not send to this plain-HTTP test app."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.cookies: dict[str, str] = {}

    def _keep(self, r: httpx.Response) -> None:
        for header in r.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if value in ("", '""') or "Max-Age=0" in header:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return {**({"Cookie": cookie} if cookie else {}), **(extra or {})}

    async def get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        r = await self.http.get(path, params=params, headers=self._headers())
        self._keep(r)
        return r

    async def post(
        self, path: str, data: dict[str, str], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        r = await self.http.post(path, data=data, headers=self._headers(headers))
        self._keep(r)
        return r

    async def csrf(self, path: str) -> str:
        r = await self.get(path)
        assert r.status_code == 200, r.text
        m = CSRF.search(r.text)
        assert m, r.text
        return m.group(1)

    async def sign_in(self, key: str) -> httpx.Response:
        token = await self.csrf("/console/login")
        return await self.post("/console/login", {"api_key": key, "csrf_token": token})


async def signed_in(api: Stack, role: str = "support") -> tuple[Browser, str]:
    key = api.key
    if role != "support":
        key = generate_key()
        await register_key(api.store, api.merchant_id, role, key)
    b = Browser(api.http)
    r = await b.sign_in(key)
    assert r.status_code == 303 and r.headers["location"] == "/console", r.text
    return b, key


async def test_sign_in_gives_a_hashed_session_in_a_strict_cookie(api: Stack) -> None:
    b = Browser(api.http)
    r = await b.get("/console")
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
    r = await b.get("/console/login")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "http" not in csp
    assert r.headers["x-frame-options"] == "DENY"

    r = await b.sign_in(api.key)
    assert r.status_code == 303
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("__Host-console="))
    for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert attribute.lower() in cookie.lower(), cookie
    session_id = b.cookies["__Host-console"]
    assert api.key not in cookie and session_id != api.key
    rows = await api.store.pool.fetch("SELECT id_hash, csrf_token FROM console_sessions")
    assert hashlib.sha256(session_id.encode()).digest() in [row["id_hash"] for row in rows]
    assert all(session_id.encode() not in bytes(row["id_hash"]) for row in rows)

    r = await b.get("/console")
    assert r.status_code == 200, r.text
    assert "Overview" in r.text and api.merchant_id in r.text


async def test_bad_key_and_missing_login_token_are_refused(api: Stack) -> None:
    b = Browser(api.http)
    r = await b.sign_in("rk_test_not-a-key")
    assert r.status_code == 401 and "not valid" in r.text
    assert "__Host-console" not in b.cookies
    # no CSRF token, or another than the cookie's
    await b.get("/console/login")
    r = await b.post("/console/login", {"api_key": api.key})
    assert r.status_code == 403 and "__Host-console" not in b.cookies
    r = await b.post("/console/login", {"api_key": api.key, "csrf_token": "forged"})
    assert r.status_code == 403 and "__Host-console" not in b.cookies


async def test_every_post_needs_the_session_csrf_token(api: Stack) -> None:
    ref = await scheduled_recovery(api)
    b, _ = await signed_in(api)
    for data in ({"reason": "x"}, {"reason": "x", "csrf_token": "wrong"}):
        r = await b.post(f"/console/recoveries/{ref}/cancel", data)
        assert r.status_code == 403, r.text
    token = await b.csrf(f"/console/recoveries/{ref}")
    r = await b.post(
        f"/console/recoveries/{ref}/cancel",
        {"reason": "x", "csrf_token": token},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert r.status_code == 403
    rec = await api.store.get_recovery(api.merchant_id, ref)
    assert rec.status == "active"


async def test_merchant_role_sees_no_support_action_and_a_forged_one_is_refused(
    api: Stack,
) -> None:
    ref = await scheduled_recovery(api)
    b, _ = await signed_in(api, "merchant")
    r = await b.get(f"/console/recoveries/{ref}")
    assert r.status_code == 200
    assert "Issue a link" in r.text
    for action in ("cancel", "expedite", "pause", "apply_policy"):
        assert f"/console/recoveries/{ref}/{action}" not in r.text
    token = CSRF.search(r.text).group(1)  # type: ignore[union-attr]
    r = await b.post(f"/console/recoveries/{ref}/cancel", {"reason": "forged", "csrf_token": token})
    assert r.status_code == 403 and "support role" in r.text
    assert (await api.store.get_recovery(api.merchant_id, ref)).status == "active"
    audit = await api.store.audit_entries(api.merchant_id, ref, 10)
    assert [(e.action, e.actor_role, e.result) for e in audit] == [
        ("cancel", "merchant", "rejected: forbidden")
    ]


async def test_cancel_through_the_console_is_audited_like_the_api(api: Stack) -> None:
    ref = await scheduled_recovery(api)
    b, _ = await signed_in(api)
    token = await b.csrf(f"/console/recoveries/{ref}")
    r = await b.post(f"/console/recoveries/{ref}/cancel", {"csrf_token": token, "reason": ""})
    assert r.status_code == 303  # a reason is required: said on the page, nothing done
    r = await b.get(f"/console/recoveries/{ref}")
    assert "a reason is required" in r.text
    r = await b.post(
        f"/console/recoveries/{ref}/cancel", {"csrf_token": token, "reason": "paid by wire"}
    )
    assert r.status_code == 303 and r.headers["location"] == f"/console/recoveries/{ref}"
    assert (await api.store.get_recovery(api.merchant_id, ref)).status == "cancelled"
    audit = await api.store.audit_entries(api.merchant_id, ref, 10)
    assert [(e.action, e.actor_role, e.reason, e.result) for e in audit] == [
        ("cancel", "support", "paid by wire", "accepted")
    ]
    page = (await b.get(f"/console/recoveries/{ref}")).text
    assert "Cancelled: no attempt starts after this." in page
    assert "paid by wire" in page
    assert "/namespaces/default/workflows/recovery%2F" in page  # the Temporal UI link
    # the second cancel: the recovery ended; said on the page, not a 500
    r = await b.post(f"/console/recoveries/{ref}/cancel", {"csrf_token": token, "reason": "again"})
    assert r.status_code == 303
    assert "Not done" in (await b.get(f"/console/recoveries/{ref}")).text


async def test_expired_session_and_sign_out(api: Stack) -> None:
    b, _ = await signed_in(api)
    await api.store.pool.execute(
        "UPDATE console_sessions SET expires_at = now() - interval '1 second' WHERE id_hash = $1",
        hashlib.sha256(b.cookies["__Host-console"].encode()).digest(),
    )
    r = await b.get("/console")
    assert r.status_code == 303 and r.headers["location"] == "/console/login?why=expired"

    b, _ = await signed_in(api)
    token = await b.csrf("/console")
    old_id = b.cookies["__Host-console"]
    session_hash = hashlib.sha256(old_id.encode()).digest()
    r = await b.post("/console/logout", {"csrf_token": token})
    assert r.status_code == 303
    assert not await api.store.pool.fetchval(
        "SELECT count(*) FROM console_sessions WHERE id_hash = $1", session_hash
    )
    assert "__Host-console" not in b.cookies
    # the old cookie opens nothing
    r = await api.http.get("/console", headers={"Cookie": f"__Host-console={old_id}"})
    assert r.status_code == 303


async def test_revoked_key_ends_its_sessions(api: Stack) -> None:
    key = generate_key()
    key_id = await register_key(api.store, api.merchant_id, "support", key)
    b = Browser(api.http)
    assert (await b.sign_in(key)).status_code == 303
    assert (await b.get("/console")).status_code == 200
    await api.store.revoke_api_key(key_id)
    assert (await b.get("/console")).status_code == 303


async def test_pages_list_search_and_errors(api: Stack) -> None:
    ref = await scheduled_recovery(api)
    b, _ = await signed_in(api)
    r = await b.get("/console/recoveries", params={"q": ref[:6], "status": "", "psp": ""})
    assert r.status_code == 200 and ref in r.text
    r = await b.get("/console/recoveries", params={"status": "recovered"})
    assert r.status_code == 200 and ref not in r.text
    r = await b.get("/console/recoveries", params={"q": "c@example.com"})  # not this customer
    assert r.status_code == 200
    page = (await b.get(f"/console/recoveries/{ref}")).text
    assert "insufficient_funds" in page and "Classified as" in page
    assert "<script" not in page and " style=" not in page
    for path, params, status in [
        ("/console/recoveries/no-such-ref", {}, 404),
        ("/console/recoveries", {"status": "bogus"}, 422),
        ("/console/recoveries", {"from": "2026-02-30"}, 422),
        ("/console/recoveries", {"cursor": "garbage"}, 400),
        ("/console", {"days": "3"}, 422),
        (f"/console/recoveries/{ref}/nonsense", {}, 405),
    ]:
        r = await b.get(path, params=params)
        assert r.status_code == status, (path, params, r.text)
        if status != 405:
            assert "text/html" in r.headers["content-type"], r.text
    # another merchant's recovery is not found
    _, other_key = await add_merchant(api.store, "support")
    c = Browser(api.http)
    await c.sign_in(other_key)
    assert (await c.get(f"/console/recoveries/{ref}")).status_code == 404


async def test_policy_form_shows_validation_messages_and_publishes(api: Stack) -> None:
    b, _ = await signed_in(api, "merchant")
    token = await b.csrf("/console/policy")
    form = {
        "csrf_token": token,
        "max_attempts": "99",
        "max_unknown_attempts": "2",
        "window_days": "10",
        "cooldown_multiplier": "1",
        "jitter": "0.2",
        "payday_snap_days": "3",
        "card_attempts_per_30_days": "",
        "card_attempts_per_day": "",
        "email_customers": "on",
        "reminder_days": "3, 12",
    }
    r = await b.post("/console/policy", form)
    assert r.status_code == 422
    assert 'data-testid="error-max_attempts"' in r.text
    assert 'data-testid="error-reminder_days"' in r.text
    assert 'value="99"' in r.text  # what was entered is kept
    r = await b.post("/console/policy", {**form, "max_attempts": "6", "reminder_days": "3, 7"})
    assert r.status_code == 303
    policy = await api.store.current_policy(api.merchant_id)
    assert (policy.max_attempts, policy.window_days, policy.reminder_days) == (6, 10, (3, 7))
    assert "Published policy v" in (await b.get("/console/policy")).text


async def test_admin_switches_merchant(api: Stack) -> None:
    ref = await scheduled_recovery(api)
    admin_merchant, admin_key = await add_merchant(api.store, "admin")
    b = Browser(api.http)
    await b.sign_in(admin_key)
    assert (await b.get(f"/console/recoveries/{ref}")).status_code == 404  # its own first
    token = await b.csrf("/console")
    r = await b.post("/console/merchant", {"csrf_token": token, "merchant_id": api.merchant_id})
    assert r.status_code == 303
    assert (await b.get(f"/console/recoveries/{ref}")).status_code == 200
    # a support key cannot switch
    s, _ = await signed_in(api)
    token = await s.csrf("/console")
    r = await s.post("/console/merchant", {"csrf_token": token, "merchant_id": admin_merchant})
    assert r.status_code == 403


async def test_webhook_endpoints_page_creates_rotates_and_deletes(api: Stack) -> None:
    b, _ = await signed_in(api, "merchant")
    token = await b.csrf("/console/webhooks")
    r = await b.post("/console/webhooks", {"csrf_token": token, "url": "http://127.0.0.1/x"})
    assert r.status_code == 422 and 'data-testid="webhook-error"' in r.text
    r = await b.post(
        "/console/webhooks",
        {
            "csrf_token": token,
            "url": "https://93.184.216.34/hooks",
            "description": "orders",
            "events": "recovery.recovered",
        },
    )
    assert r.status_code == 201, r.text
    secret = re.search(r'id="new-secret" type="text" readonly value="(whsec_[^"]+)"', r.text)
    assert secret, r.text
    endpoints = await api.store.list_webhook_endpoints(api.merchant_id)
    assert [(e.url, e.events) for e in endpoints] == [
        ("https://93.184.216.34/hooks", ["recovery.recovered"])
    ]
    # shown once: not on the next page, and never kept in the session
    assert secret.group(1) not in (await b.get("/console/webhooks")).text
    flashes = await api.store.pool.fetch("SELECT flash_message FROM console_sessions")
    assert all(secret.group(1) not in (f["flash_message"] or "") for f in flashes)

    endpoint_id = endpoints[0].id
    r = await b.post(f"/console/webhooks/{endpoint_id}/rotate", {"csrf_token": token})
    assert r.status_code == 200
    rotated = re.search(r'readonly value="(whsec_[^"]+)"', r.text)
    assert rotated and rotated.group(1) != secret.group(1)
    r = await b.post(f"/console/webhooks/{endpoint_id}/delete", {"csrf_token": token})
    assert r.status_code == 303
    assert await api.store.list_webhook_endpoints(api.merchant_id) == []
    actions = [e.action for e in await api.store.audit_entries(api.merchant_id, None, 10)]
    assert actions == [
        "webhook_endpoint.delete",
        "webhook_endpoint.rotate_secret",
        "webhook_endpoint.create",
    ]
    # another merchant's endpoint: not found
    r = await b.post("/console/webhooks/we_nope/delete", {"csrf_token": token})
    assert r.status_code == 404


async def test_recovery_page_lists_its_merchant_events_and_their_deliveries(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment
) -> None:
    """Each event the merchant was told of about this run, with every delivery try (here by
    the delivery activity itself against a local endpoint: a 500, then a 200); no other run's
    events, and no other merchant's."""
    address = dev_env.client.service_client.config.target_host
    with webhook_receiver([500]) as receiver:
        async with running_stack(store, pg_dsn, address, worker=False) as api:
            endpoint_id, event_id, _ = await endpoint_with_event(
                store, api.merchant_id, receiver.url, api.settings
            )
            req = WebhookPassRequest(
                merchant_id=api.merchant_id, endpoint_id=endpoint_id, now=datetime.now(UTC)
            )
            dev = stack_settings(pg_dsn, address, "unused", environment="development")
            deliver = WebhookActivities(store, dev).deliver_queued_webhooks
            first = await ActivityEnvironment().run(deliver, req)  # the 500: queued again
            assert first.tried == 1 and first.delivered == 0 and first.next_try_at
            again = req.model_copy(update={"now": first.next_try_at})
            assert (await ActivityEnvironment().run(deliver, again)).delivered == 1
            _, other_run_event, _ = await endpoint_with_event(
                store, api.merchant_id, receiver.url, api.settings
            )
            event = await store.pool.fetchrow(
                "SELECT payment_ref, recovery_id FROM merchant_events WHERE id = $1", event_id
            )

            b, _ = await signed_in(api, "merchant")
            page = (await b.get(f"/console/recoveries/{event['payment_ref']}")).text
    section = page[page.index('id="webhooks-title"') : page.index('id="audit-title"')]
    assert "<code>recovery.started</code>" in section and event_id in section
    tries = re.findall(
        rf"<code>{endpoint_id}</code> try (\d+), [^<]+ UTC:\s*<strong>(\d+|no answer)</strong>",
        section,
    )
    assert tries == [("1", "500"), ("2", "200")]
    assert other_run_event not in section
    # the store answers a merchant about its own recoveries only
    other_merchant, _ = await add_merchant(store)
    assert await store.recovery_webhook_events(other_merchant, event["recovery_id"]) == []
    ours = await store.recovery_webhook_events(api.merchant_id, event["recovery_id"])
    assert [(e.id, [d.status_code for d in e.deliveries]) for e in ours] == [(event_id, [500, 200])]
