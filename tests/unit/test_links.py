"""Retry-link tokens: every way a token must be refused, with hand-crafted bad tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from recovery.link_tokens import (
    AUDIENCE,
    ISSUER,
    ExpiredLink,
    InvalidLink,
    decode_token,
    issue_token,
    link_url,
)

SECRET = "unit-test-link-secret-0123456789abcdef"
NOW = datetime.now(UTC)


def good_claims(**over: object) -> dict:
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "order_42",
        "mid": "mer_1",
        "jti": "lnk_1",
        "iat": int(NOW.timestamp()),
        "exp": int((NOW + timedelta(minutes=15)).timestamp()),
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict, claims: dict, key: bytes = SECRET.encode()) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(sig)}"


def test_round_trip() -> None:
    token, expires = issue_token(
        SECRET,
        link_id="lnk_9",
        merchant_id="mer_1",
        payment_ref="order_42",
        now=NOW,
        ttl=timedelta(seconds=900),
    )
    claims = decode_token(SECRET, token)
    assert (claims.link_id, claims.merchant_id, claims.payment_ref) == (
        "lnk_9",
        "mer_1",
        "order_42",
    )
    assert claims.expires_at == expires == claims.issued_at + timedelta(seconds=900)
    assert link_url("https://pay.example.com/", token) == (
        f"https://pay.example.com/pay/retry/{token}"
    )


def test_expired_is_its_own_error() -> None:
    token = jwt.encode(
        good_claims(exp=int((NOW - timedelta(seconds=5)).timestamp())), SECRET, algorithm="HS256"
    )
    with pytest.raises(ExpiredLink):
        decode_token(SECRET, token)


@pytest.mark.parametrize(
    "token",
    [
        # alg none, unsigned
        f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}."
        f"{b64(json.dumps(good_claims()).encode())}.",
        # another HMAC algorithm, correctly signed with our secret
        jwt.encode(good_claims(), SECRET, algorithm="HS512"),
        # header claims HS256 but signature made with another key
        jwt.encode(good_claims(), "some-other-secret-0123456789abcdef", algorithm="HS256"),
        # wrong audience, wrong issuer
        jwt.encode(good_claims(aud="someone-else"), SECRET, algorithm="HS256"),
        jwt.encode(good_claims(iss="evil"), SECRET, algorithm="HS256"),
        # each required claim missing
        *[
            jwt.encode(good_claims(**{c: None}), SECRET, algorithm="HS256")
            for c in ("exp", "iat", "jti", "aud", "iss", "sub")
        ],
        # our merchant claim missing or not a string
        jwt.encode(good_claims(mid=None), SECRET, algorithm="HS256"),
        jwt.encode(good_claims(mid=42), SECRET, algorithm="HS256"),
        # RS256 header with an HMAC signature (algorithm confusion)
        hand_made({"alg": "RS256", "typ": "JWT"}, good_claims()),
        # garbage
        "",
        "not.a.token",
        "a.b",
        "x" * 3000,
    ],
)
def test_refused(token: str) -> None:
    with pytest.raises(InvalidLink) as info:
        decode_token(SECRET, token)
    assert not isinstance(info.value, ExpiredLink)


def test_tampered_payload_is_refused() -> None:
    token = jwt.encode(good_claims(), SECRET, algorithm="HS256")
    head, _, sig = token.split(".")
    forged = b64(json.dumps(good_claims(sub="order_999")).encode())
    with pytest.raises(InvalidLink):
        decode_token(SECRET, f"{head}.{forged}.{sig}")
    assert hand_made({"alg": "HS256", "typ": "JWT"}, good_claims())  # the maker itself works
    assert decode_token(SECRET, hand_made({"alg": "HS256", "typ": "JWT"}, good_claims()))
