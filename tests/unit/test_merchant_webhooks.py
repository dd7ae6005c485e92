"""Merchant webhooks without servers: signatures (checked with the `standardwebhooks`
package), where deliveries may go (SSRF), what a state write tells, the retry schedule."""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from temporalio.testing import ActivityEnvironment

from activities.webhooks import envelope, next_retry_at
from recovery import constants as names
from recovery import webhook_urls
from recovery.merchant_events import EventType, Shown, event_id_for, transitions, what_next
from recovery.store import DeliveryTarget
from recovery.webhook_signing import SecretSealer, new_secret, signature_header

# ---- signatures -------------------------------------------------------------------------------


def _headers(msg_id: str, signature: str, timestamp: int | None = None) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp or int(time.time())),
        "webhook-signature": signature,
    }


def test_our_signature_verifies_with_the_standard_library() -> None:
    secret, body, now = new_secret(), b'{"id":"evt_1","type":"recovery.started"}', int(time.time())
    signature = signature_header([secret], "evt_1", now, body)
    assert signature.startswith("v1,") and " " not in signature
    assert Webhook(secret).verify(body, _headers("evt_1", signature, now))["id"] == "evt_1"
    for tampered in (body + b" ", body.replace(b"started", b"stopped")):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(tampered, _headers("evt_1", signature, now))
    with pytest.raises(WebhookVerificationError):  # another message id
        Webhook(secret).verify(body, _headers("evt_2", signature, now))
    with pytest.raises(WebhookVerificationError):  # another secret
        Webhook(new_secret()).verify(body, _headers("evt_1", signature, now))


def test_during_a_rotation_both_secrets_sign() -> None:
    new, old, body, now = new_secret(), new_secret(), b"{}", int(time.time())
    signature = signature_header([new, old], "evt_1", now, body)
    assert len(signature.split(" ")) == 2
    for secret in (new, old):
        Webhook(secret).verify(body, _headers("evt_1", signature, now))
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, _headers("evt_1", signature, now))


def test_secrets_are_32_random_bytes_and_sealed_to_their_endpoint() -> None:
    import base64

    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert new_secret() != secret
    sealer = SecretSealer([b"k" * 32])
    sealed = sealer.seal("mer_a", "we_1", secret)
    assert secret.encode() not in sealed.sealed and secret[6:].encode() not in sealed.sealed
    assert sealer.open("mer_a", "we_1", sealed) == secret
    from recovery.psp.sealing import CredentialsUnreadable

    for merchant, endpoint in (("mer_b", "we_1"), ("mer_a", "we_2")):  # copied elsewhere
        with pytest.raises(CredentialsUnreadable):
            sealer.open(merchant, endpoint, sealed)
    with pytest.raises(CredentialsUnreadable, match="CREDENTIALS_KEY"):
        SecretSealer([]).seal("mer_a", "we_1", secret)


def test_the_body_is_the_envelope_and_the_same_on_every_try() -> None:
    target = DeliveryTarget(
        merchant_id="mer_a",
        endpoint_id="we_1",
        url="https://x",
        deleted=False,
        secrets=(),
        event_id="evt_1",
        event_type="recovery.started",
        event_created_at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
        payload={"recovery": {"status": "active"}},
    )
    body = envelope(target, target.payload)
    assert body == (
        b'{"id":"evt_1","type":"recovery.started","created_at":"2026-12-01T09:00:00Z",'
        b'"data":{"recovery":{"status":"active"}}}'
    )
    assert envelope(target, target.payload) == body


# ---- where deliveries may go ------------------------------------------------------------------

REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "172.31.255.255",
    "192.168.0.1",
    "100.64.0.1",
    "169.254.169.254",
    "0.0.0.0",
    "224.0.0.251",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2001:db8::1",  # documentation
]
ALLOWED = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", REFUSED)
def test_private_and_special_addresses_are_refused(address: str) -> None:
    assert not webhook_urls.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert webhook_urls.is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/x",
        "https://localhost/x",
        "https://LOCALHOST./x",
        "https://127.1/x",
        "https://0x7f000001/x",
        "https://[::1]:8443/x",
        "https://169.254.169.254/latest/meta-data/",
    ],
)
async def test_outside_development_a_url_that_reaches_inside_is_refused(url: str) -> None:
    with pytest.raises(webhook_urls.UrlNotAllowed) as refused:
        await webhook_urls.resolve(url, development=False)
    assert refused.value.field == "url" and refused.value.status == 422


async def test_the_address_checked_is_the_one_connected_to() -> None:
    dest = await webhook_urls.resolve("https://93.184.216.34:8443/a/b?c=d", development=False)
    assert dest.addresses == (ipaddress.ip_address("93.184.216.34"),)
    assert dest.url_for(dest.addresses[0]) == "https://93.184.216.34:8443/a/b?c=d"
    local = await webhook_urls.resolve("http://localhost:9/hooks?x=1", development=True)
    assert ipaddress.ip_address("127.0.0.1") in local.addresses
    assert local.url_for(ipaddress.ip_address("127.0.0.1")) == "http://127.0.0.1:9/hooks?x=1"
    assert local.url_for(ipaddress.ip_address("::1")) == "http://[::1]:9/hooks?x=1"
    assert local.host_header == "localhost:9" and local.host == "localhost"


@pytest.mark.parametrize(
    "url",
    ["ftp://x.example/", "https://", "https://u:p@x.example/", "https://x.example/#f", "x y"],
)
def test_a_url_that_is_no_endpoint_is_refused_even_in_development(url: str) -> None:
    with pytest.raises(webhook_urls.UrlNotAllowed):
        webhook_urls.parse(url, development=True)


async def test_in_development_local_http_endpoints_are_taken() -> None:
    await webhook_urls.check("http://127.0.0.1:8080/hooks", development=True)
    await webhook_urls.check("http://no-such-host.invalid/hooks", development=True)
    with pytest.raises(webhook_urls.UrlNotAllowed):
        await webhook_urls.check("http://127.0.0.1:8080/hooks", development=False)


# ---- what a state write tells -----------------------------------------------------------------

ACTIVE = Shown("active", paused=False, ended=False)


@pytest.mark.parametrize(
    ("before", "after", "told"),
    [
        (ACTIVE, ACTIVE, []),
        (ACTIVE, Shown("awaiting_customer", False, False), ["recovery.awaiting_customer"]),
        (Shown("awaiting_customer", False, False), Shown("awaiting_customer", False, False), []),
        (ACTIVE, Shown("active", True, False), ["recovery.paused"]),
        (Shown("active", True, False), ACTIVE, ["recovery.resumed"]),
        (
            ACTIVE,
            Shown("awaiting_customer", True, False),
            ["recovery.awaiting_customer", "recovery.paused"],
        ),
        (ACTIVE, Shown("recovered", False, True), ["recovery.recovered"]),
        (Shown("active", True, False), Shown("cancelled", False, True), ["recovery.cancelled"]),
        (
            Shown("awaiting_customer", False, False),
            Shown("exhausted", False, True),
            ["recovery.exhausted"],
        ),
        (Shown("exhausted", False, True), Shown("exhausted", False, True), []),
    ],
)
def test_transitions(before: Shown, after: Shown, told: list[str]) -> None:
    assert [t.value for t in transitions(before, after)] == told


def test_attempt_failed_says_what_comes_next() -> None:
    at = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    common = {"rule": "funds.insufficient", "attempts_made": 1, "attempt_cap": 4}
    retrying = what_next(
        status="active",
        ended=False,
        next_attempt_at=at,
        next_attempt_reason="cooldown",
        ended_reason=None,
        **common,
    )
    assert (retrying.will_retry, retrying.next_attempt_at, retrying.attempts_left) == (True, at, 3)
    assert retrying.reason == "cooldown"
    customer = what_next(
        status="awaiting_customer",
        ended=False,
        next_attempt_at=None,
        next_attempt_reason="needs the customer",
        ended_reason=None,
        **common,
    )
    assert customer.will_retry is False and customer.attempts_left == 3
    ended = what_next(
        status="exhausted",
        ended=True,
        next_attempt_at=at,
        next_attempt_reason="stale",
        ended_reason="max attempts reached",
        **common,
    )
    assert (ended.will_retry, ended.next_attempt_at, ended.attempts_left) == (False, None, 0)
    assert ended.reason == "max attempts reached"


def test_event_ids_come_from_what_happened() -> None:
    a = event_id_for("mer_a", "rec_1:started")
    assert a == event_id_for("mer_a", "rec_1:started") and a.startswith("evt_")
    assert a != event_id_for("mer_b", "rec_1:started") != event_id_for("mer_a", "rec_1:ended")
    assert len({t.value for t in EventType}) == 11


# ---- the retry schedule -----------------------------------------------------------------------


def test_first_retry_within_10_s_and_tries_for_at_least_24_h() -> None:
    assert names.WEBHOOK_RETRY_POLICY.initial_interval <= timedelta(seconds=10)
    assert names.WEBHOOK_RETRY_FOR >= timedelta(hours=24)
    assert names.WEBHOOK_TRY_TIMEOUT == timedelta(seconds=10)
    assert names.WEBHOOK_TRY_START_TO_CLOSE > names.WEBHOOK_TRY_TIMEOUT


def test_each_try_says_when_the_next_one_comes() -> None:
    first = datetime(2026, 12, 1, tzinfo=UTC)
    info = dataclasses.replace(
        ActivityEnvironment().info,
        retry_policy=names.WEBHOOK_RETRY_POLICY,
        scheduled_time=first,
        schedule_to_close_timeout=names.WEBHOOK_RETRY_FOR,
    )
    waits = []
    now = first
    for attempt in range(1, 200):
        this_try = dataclasses.replace(info, attempt=attempt, started_time=now)
        at = next_retry_at(this_try, now, timedelta(seconds=1))
        if at is None:
            break
        waits.append(at - now)
        now = at
    assert waits[:4] == [timedelta(seconds=s) for s in (5, 10, 20, 40)]
    assert max(waits) == timedelta(hours=1)
    assert timedelta(hours=70) < now - first <= timedelta(days=3)
    assert 75 < len(waits) + 1 < 90  # tries in all
    # a server that does not send the policy: ours
    assert next_retry_at(dataclasses.replace(info, retry_policy=None), first, timedelta()) == (
        first + timedelta(seconds=5)
    )
