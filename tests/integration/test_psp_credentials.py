"""Merchants' PSP credentials sealed at rest (AES-GCM under CREDENTIALS_KEY): the stored row
holds no secret, rotation keeps old rows readable until `recovery psp reseal`, plaintext rows
from before sealing are sealed by it, and a wrong key is a clear error, never a 500."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from recovery.psp.credentials import RazorpayCredentials
from recovery.psp.dispatcher import PSPDispatcher
from recovery.psp.sealing import CredentialsCipher, CredentialsUnreadable, key_id
from recovery.settings import Settings
from recovery.store import Store
from tests.helpers import INGEST, Stack, add_merchant, assert_envelope, cli, failure_body


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def keys(current: str, *old: str) -> Settings:
    return Settings(
        environment="development",
        credentials_key=SecretStr(current),
        credentials_keys_old=SecretStr(",".join(old)) if old else None,
    )


def set_razorpay(dsn: str, merchant_id: str, secret: str, key: str) -> dict[str, Any]:
    done = cli(
        dsn,
        "psp",
        "set",
        "--merchant",
        merchant_id,
        "--psp",
        "razorpay",
        "--key-id",
        "rzp_test_sealed",
        "--key-secret",
        secret,
        "--json",
        env={"CREDENTIALS_KEY": key},
    )
    assert done.returncode == 0, done.stderr
    assert secret not in done.stdout + done.stderr
    return json.loads(done.stdout)


async def row(store: Store, merchant_id: str) -> dict[str, Any]:
    found = await store.pool.fetchrow(
        "SELECT credentials::text AS plaintext, key_id, sealed FROM merchant_psp_credentials"
        " WHERE merchant_id = $1 AND psp = 'razorpay'",
        merchant_id,
    )
    assert found is not None
    return dict(found)


async def opened(store: Store, settings: Settings, merchant_id: str) -> RazorpayCredentials:
    creds = await PSPDispatcher(store, settings).credentials(merchant_id, "razorpay")
    assert isinstance(creds, RazorpayCredentials)
    return creds


async def test_the_stored_row_holds_no_secret(store: Store, pg_dsn: str) -> None:
    merchant_id, _ = await add_merchant(store)
    secret, key = f"no-prefix-{uuid.uuid4().hex}", new_key()
    shown = set_razorpay(pg_dsn, merchant_id, secret, key)
    stored = await row(store, merchant_id)
    assert stored["plaintext"] is None and stored["key_id"] == shown["key_id"] == key_id(
        base64.b64decode(key)
    )
    dump = await store.pool.fetchval(
        "SELECT row_to_json(c)::text FROM merchant_psp_credentials c WHERE merchant_id = $1",
        merchant_id,
    )
    for needle in (secret, "rzp_test_sealed", base64.b64encode(secret.encode()).decode()):
        assert needle not in dump and needle.encode() not in stored["sealed"]
    creds = await opened(store, keys(key), merchant_id)
    assert creds.key_secret.get_secret_value() == secret and creds.key_id == "rzp_test_sealed"


async def test_rotation_round_trip_and_reseal(store: Store, pg_dsn: str) -> None:
    merchant_id, _ = await add_merchant(store)
    secret, old, current = f"rotating-{uuid.uuid4().hex}", new_key(), new_key()
    set_razorpay(pg_dsn, merchant_id, secret, old)
    # a legacy row from before sealing (plaintext jsonb), as migration 0012 leaves them
    legacy, _ = await add_merchant(store)
    await store.pool.execute(
        "INSERT INTO merchant_psp_credentials (merchant_id, psp, credentials)"
        " VALUES ($1, 'razorpay', $2)",
        legacy,
        {"key_id": "rzp_test_legacy", "key_secret": "legacy-plaintext-secret"},
    )
    rotated = keys(current, old)
    assert (await opened(store, rotated, merchant_id)).key_secret.get_secret_value() == secret
    assert (await opened(store, rotated, legacy)).key_id == "rzp_test_legacy"

    env = {"CREDENTIALS_KEY": current, "CREDENTIALS_KEYS_OLD": old}
    only = ("--merchant", merchant_id, "--merchant", legacy)  # other tests' rows have other keys
    done = cli(pg_dsn, "psp", "reseal", *only, "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["resealed"] == 2 and report["failed"] == []
    current_id = key_id(base64.b64decode(current))
    for mid in (merchant_id, legacy):
        stored = await row(store, mid)
        assert stored["key_id"] == current_id and stored["plaintext"] is None
    # the old key can go now
    assert (await opened(store, keys(current), merchant_id)).key_secret.get_secret_value() == (
        secret
    )
    again = json.loads(cli(pg_dsn, "psp", "reseal", *only, "--json", env=env).stdout)
    assert again["resealed"] == 0 and again["current"] == 2


async def test_a_wrong_key_is_a_clear_error(store: Store, pg_dsn: str) -> None:
    merchant_id, _ = await add_merchant(store)
    key = new_key()
    set_razorpay(pg_dsn, merchant_id, "wrong-key-secret-0123", key)
    with pytest.raises(CredentialsUnreadable, match="neither CREDENTIALS_KEY nor in"):
        await opened(store, keys(new_key()), merchant_id)
    # a blob moved to another merchant does not open (the merchant id is authenticated)
    other, _ = await add_merchant(store)
    await store.pool.execute(
        "INSERT INTO merchant_psp_credentials (merchant_id, psp, key_id, sealed)"
        " SELECT $2, psp, key_id, sealed FROM merchant_psp_credentials WHERE merchant_id = $1",
        merchant_id,
        other,
    )
    with pytest.raises(CredentialsUnreadable, match="key is wrong or the row was altered"):
        await opened(store, keys(key), other)
    bad = cli(
        pg_dsn, "psp", "reseal", "--merchant", merchant_id, env={"CREDENTIALS_KEY": new_key()}
    )
    assert bad.returncode == 1 and merchant_id in bad.stderr and "Traceback" not in bad.stderr


async def test_unreadable_credentials_are_a_503_at_ingest(api: Stack) -> None:
    sealed = CredentialsCipher([secrets.token_bytes(32)]).seal(
        api.merchant_id, "razorpay", {"key_id": "rzp_test_x", "key_secret": "unreadable-1234"}
    )
    await api.store.set_psp_credentials(api.merchant_id, "razorpay", sealed.key_id, sealed.blob)
    r = await api.http.post(INGEST, json=failure_body(psp="razorpay"), headers=api.auth())
    err = assert_envelope(r, 503, "credentials_unreadable")
    assert "CREDENTIALS_KEYS_OLD" in err["message"]


def test_credentials_key_is_required_outside_development_and_must_be_32_bytes() -> None:
    secret = SecretStr("x" * 32)
    with pytest.raises(ValidationError, match="CREDENTIALS_KEY must be set"):
        Settings(environment="production", link_signing_secret=secret)
    with pytest.raises(ValidationError, match="32 random bytes in base64"):
        Settings(
            environment="production",
            link_signing_secret=secret,
            credentials_key=SecretStr(base64.b64encode(b"short").decode()),
        )
    Settings(environment="production", link_signing_secret=secret, credentials_key=new_key())
