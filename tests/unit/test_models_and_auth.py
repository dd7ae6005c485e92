"""Input validation, cursors, API key handling and settings guards."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr, ValidationError

from recovery.auth import Principal, VerifiedKeys, generate_key, hash_key
from recovery.errors import RecoveryError
from recovery.models import PaymentFailedIn
from recovery.settings import Settings
from recovery.store import decode_cursor, encode_cursor
from tests.helpers import failure_body


def parse(body: dict) -> PaymentFailedIn:
    return PaymentFailedIn.model_validate_json(json.dumps(body))


def test_valid_body_parses_with_exact_amount_and_aware_time() -> None:
    m = parse(failure_body(amount=123456789012))
    assert m.amount == 123456789012 and m.occurred_at.tzinfo is not None


@pytest.mark.parametrize(
    "change",
    [
        {"currency": "xyz"},
        {"currency": "Usd"},
        {"amount": True},
        {"amount": 1.0},
        {"occurred_at": 1700000000},
        {"metadata": {str(i): i for i in range(51)}},
        {"customer": {"email": "not-an-email"}},
        {"payment_ref": "a/b"},
        {"failure": {"message": "   "}},
    ],
)
def test_invalid_fields_are_rejected(change: dict) -> None:
    with pytest.raises(ValidationError):
        parse({**failure_body(), **change})


def test_cursor_round_trip_and_garbage() -> None:
    at = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert decode_cursor(encode_cursor(at, "rec_1")) == (at, "rec_1")
    with pytest.raises(RecoveryError):
        decode_cursor("!!!")


def test_keys_are_random_prefixed_and_hashed() -> None:
    a, b = generate_key("live"), generate_key("live")
    assert a != b and a.startswith("rk_live_") and len(a) >= 8 + 43
    assert hash_key(a) != hash_key(b) and len(hash_key(a)) == 32


KEY = SecretStr(base64.b64encode(bytes(range(32))).decode())


def test_a_verified_key_is_kept_ttl_seconds_from_the_start_of_its_lookup() -> None:
    now = [100.0]
    keys = VerifiedKeys(ttl=2.0, timer=lambda: now[0])
    who = Principal("key_1", "mer_1", "support")
    digest = hash_key("rk_test_x")
    looked_up_at = now[0]
    now[0] += 1.5  # the lookup took 1.5 s: the entry has 0.5 s left, not 2
    keys.put(digest, who, looked_up_at)
    assert keys.get(digest) == who
    now[0] += 0.49
    assert keys.get(digest) == who
    now[0] += 0.02
    assert keys.get(digest) is None
    assert keys.get(hash_key("rk_test_other")) is None
    # 0 keeps nothing: every request asks Postgres
    never = VerifiedKeys(ttl=0, timer=lambda: now[0])
    never.put(digest, who, now[0])
    assert never.get(digest) is None


@pytest.mark.parametrize("seconds", [-1, 5.01, 60])
def test_api_keys_are_kept_at_most_5_seconds(seconds: float) -> None:
    with pytest.raises(ValidationError, match="api_key_cache_seconds"):
        Settings(environment="development", api_key_cache_seconds=seconds)


def test_placeholder_link_secret_refused_outside_development() -> None:
    with pytest.raises(ValidationError):
        Settings(environment="production", link_signing_secret="changeme")
    with pytest.raises(ValidationError):
        Settings(environment="production", link_signing_secret="")
    Settings(environment="development", link_signing_secret="")
    Settings(environment="production", link_signing_secret="x" * 32, credentials_key=KEY)


def test_ingest_takes_an_optional_psp_payment_id_within_bounds() -> None:
    body = failure_body()
    assert parse(body).psp_payment_id is None
    assert parse(body | {"psp_payment_id": "pi_123"}).psp_payment_id == "pi_123"
    for bad in ("", "x" * 256, 42):
        with pytest.raises(ValidationError):
            parse(body | {"psp_payment_id": bad})


@pytest.mark.parametrize("environment", ["production", "test"])
def test_link_secret_needs_32_bytes_outside_development(environment: str) -> None:
    short = secrets.token_hex(16)[:31]  # 31 random bytes' worth of characters: not enough
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(environment=environment, link_signing_secret=short)
    Settings(environment=environment, link_signing_secret=short + "x", credentials_key=KEY)
    Settings(environment="development", link_signing_secret=short)


def test_a_short_link_secret_refuses_to_start_with_a_clear_message() -> None:
    env = {**os.environ, "ENVIRONMENT": "production", "LINK_SIGNING_SECRET": "0123456789abcdef"}
    env.pop("DATABASE_URL", None)
    for module in ("api", "worker"):
        done = subprocess.run(
            [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, (module, done.stderr)
        assert "LINK_SIGNING_SECRET" in done.stderr and "32 bytes" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
