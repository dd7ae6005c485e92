"""Retry links: issued by the API and by the workflow, the customer's page and its states,
one checkout per link, revocation when the recovery ends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import jwt

from recovery.link_tokens import AUDIENCE, ISSUER, decode_token
from recovery.retry_links import notification_url
from tests.helpers import (
    INGEST,
    Stack,
    add_merchant,
    assert_envelope,
    eventually,
    failure_body,
    recovery,
    scheduled_recovery,
)


async def new_link(api: Stack, ref: str) -> tuple[str, dict]:
    r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/link", headers=api.auth())
    assert r.status_code == 201, r.text
    out = r.json()
    return urlsplit(out["url"]).path, out


def assert_page_headers(r) -> None:
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src" not in csp and "unsafe-inline" not in csp
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"
    assert "no-store" in r.headers["cache-control"]


async def test_link_endpoint_contract(api: Stack) -> None:
    ref = await scheduled_recovery(api)
    path, out = await new_link(api, ref)
    assert out["url"] == f"{api.settings.public_base_url}{path}"
    assert path.startswith("/pay/retry/") and out["link_id"].startswith("lnk_")
    expires = datetime.fromisoformat(out["expires_at"])
    assert timedelta(seconds=895) < expires - datetime.now(UTC) <= timedelta(seconds=900)
    token = path.rsplit("/", 1)[1]
    claims = jwt.decode(
        token,
        api.settings.link_signing_secret.get_secret_value(),
        algorithms=["HS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
    )
    assert claims["sub"] == ref and claims["jti"] == out["link_id"]
    assert claims["mid"] == api.merchant_id and claims["exp"] - claims["iat"] == 900
    links = (await recovery(api, ref))["links"]
    assert [lk["link_id"] for lk in links] == [out["link_id"]]
    assert_envelope(
        await api.http.post("/v1/recoveries/by_ref/nope/link", headers=api.auth()), 404, "not_found"
    )
    _, other_key = await add_merchant(api.store)
    assert_envelope(
        await api.http.post(f"/v1/recoveries/by_ref/{ref}/link", headers=api.auth(other_key)), 404
    )
    await api.http.post(
        f"/v1/recoveries/by_ref/{ref}/cancel", json={"reason": "x"}, headers=api.auth()
    )
    assert_envelope(
        await api.http.post(f"/v1/recoveries/by_ref/{ref}/link", headers=api.auth()),
        409,
        "recovery_finished",
    )


async def test_page_shows_the_payment_and_never_the_token(api: Stack) -> None:
    ref = await scheduled_recovery(api, amount=4999)
    path, _ = await new_link(api, ref)
    r = await api.http.get(path)
    assert r.status_code == 200
    assert_page_headers(r)
    assert "49.99 USD" in r.text and "Test Merchant" in r.text and "<form" in r.text
    assert "<script" not in r.text and "style=" not in r.text
    token = path.rsplit("/", 1)[1]
    assert r.text.count(token) == 1  # only in the form's own action
    css = await api.http.get("/static/pay.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]


async def test_bad_tokens_get_friendly_pages(api: Stack) -> None:
    ref = await scheduled_recovery(api)
    path, _ = await new_link(api, ref)
    token = path.rsplit("/", 1)[1]
    expired = jwt.encode(
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": ref,
            "mid": api.merchant_id,
            "jti": "lnk_x",
            "iat": 1_700_000_000,
            "exp": 1_700_000_900,
        },
        api.settings.link_signing_secret.get_secret_value(),
        algorithm="HS256",
    )
    cases = [
        (token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB"), 400, "not valid"),
        ("garbage", 400, "not valid"),
        (expired, 410, "expired"),
    ]
    for bad, status, words in cases:
        for method in ("GET", "POST"):
            r = await api.http.request(method, f"/pay/retry/{bad}")
            assert r.status_code == status, (bad, r.text)
            assert words in r.text and "Traceback" not in r.text and bad not in r.text
            assert "<form" not in r.text
            assert_page_headers(r)


async def test_fifty_concurrent_redemptions_make_one_checkout(api: Stack) -> None:
    ref = await scheduled_recovery(api)
    path, out = await new_link(api, ref)
    replies = await asyncio.gather(*(api.http.post(path) for _ in range(50)))
    assert {r.status_code for r in replies} == {303}
    assert len({r.headers["location"] for r in replies}) == 1
    n = await api.store.pool.fetchval(
        "SELECT count(*) FROM simulator_checkouts WHERE link_id = $1", out["link_id"]
    )
    assert n == 1


async def test_paying_through_the_simulator_recovers_and_the_link_says_so(api: Stack) -> None:
    ref = await scheduled_recovery(api)
    path, _ = await new_link(api, ref)
    r = await api.http.post(path)
    checkout = urlsplit(r.headers["location"]).path
    page = await api.http.get(checkout)
    assert page.status_code == 200 and "Complete payment" in page.text
    r = await api.http.post(checkout)
    assert r.status_code == 303 and "/pay/done/" in r.headers["location"]

    async def recovered() -> dict:
        rec = await recovery(api, ref)
        assert rec["status"] == "recovered" and rec["attempts"] == [], rec
        # the links are revoked just after the end is written
        assert all(lk["revoked_at"] for lk in rec["links"]), rec
        return rec

    await eventually(recovered)
    again = await api.http.get(path)
    assert again.status_code == 410, again.text
    assert "Already paid" in again.text and "<form" not in again.text


async def test_cancel_revokes_links(api: Stack) -> None:
    ref = await scheduled_recovery(api)
    path, _ = await new_link(api, ref)
    r = await api.http.post(
        f"/v1/recoveries/by_ref/{ref}/cancel", json={"reason": "x"}, headers=api.auth()
    )
    assert r.json()["status"] == "cancelled"

    async def revoked() -> bool:
        page = await api.http.get(path)
        assert page.status_code == 410 and "no longer valid" in page.text, page.text
        return True

    await eventually(revoked)
    assert (await api.http.post(path)).status_code == 410


async def test_hard_decline_sends_a_link_instead_of_retrying(api: Stack) -> None:
    body = failure_body(decline_code="stolen_card")
    ref = body["payment_ref"]
    assert (await api.http.post(INGEST, json=body, headers=api.auth())).status_code == 202

    async def awaiting() -> dict:
        rec = await recovery(api, ref)
        assert rec["status"] == "awaiting_customer" and rec["links"], rec
        return rec

    rec = await eventually(awaiting)
    assert rec["attempts"] == [] and rec["next_attempt_at"] is None
    note = await api.store.pool.fetchrow(
        "SELECT * FROM customer_notifications WHERE payment_ref = $1", ref
    )
    assert note["channel"] == "email" and note["recipient"] == "a@example.com"
    # the row keeps the link id, never a URL or its token: it is built when the message is sent
    assert "url" not in dict(note) and not any("eyJ" in str(v) for v in dict(note).values())
    assert note["link_id"] == rec["links"][0]["link_id"]
    url = await notification_url(api.store, api.settings, note["link_id"])
    assert url is not None and url.startswith(f"{api.settings.public_base_url}/pay/retry/")
    claims = decode_token(api.settings.link_signing_secret.get_secret_value(), url.rsplit("/")[-1])
    assert claims.link_id == note["link_id"] and claims.payment_ref == ref
    link_expires = await api.store.pool.fetchval(
        "SELECT expires_at FROM recovery_links WHERE id = $1", note["link_id"]
    )
    assert claims.expires_at == link_expires  # the link's own expiry, not a new one
    page = await api.http.get(urlsplit(url).path)
    assert page.status_code == 200 and "Pay" in page.text
    assert await notification_url(api.store, api.settings, "lnk_unknown") is None
