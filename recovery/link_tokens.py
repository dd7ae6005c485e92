"""Retry-link tokens: the signed, short-lived part of `${PUBLIC_BASE_URL}/pay/retry/<token>`.
(Issuing a link, with its row and its message, is `recovery.retry_links`.)

The token is a JWT, HS256 pinned: `iss`, `aud`, `sub` (the payment ref), `mid` (merchant),
`jti` (the link id, which is its row in Postgres), `iat`, `exp` = iat + LINK_TTL_SECONDS.
Decoding requires every one of them and accepts no other algorithm (no `none`, no RS/ES
confusion), no other audience or issuer, and no expired or tampered token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

ALGORITHM = "HS256"
ISSUER = "payment-recovery"
AUDIENCE = "retry-link"
REQUIRED_CLAIMS = ["exp", "iat", "jti", "aud", "iss", "sub"]


class InvalidLink(Exception):
    """Not a token we issued (bad signature, algorithm, audience, issuer, shape)."""


class ExpiredLink(InvalidLink):
    """A token we issued, past its expiry."""


@dataclass(frozen=True)
class LinkClaims:
    link_id: str
    merchant_id: str
    payment_ref: str
    issued_at: datetime
    expires_at: datetime


def issue_token(
    secret: str,
    *,
    link_id: str,
    merchant_id: str,
    payment_ref: str,
    now: datetime,
    ttl: timedelta,
) -> tuple[str, datetime]:
    issued = now.replace(microsecond=0)
    expires = issued + ttl
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": payment_ref,
        "mid": merchant_id,
        "jti": link_id,
        "iat": int(issued.timestamp()),
        "exp": int(expires.timestamp()),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM), expires


def decode_token(secret: str, token: str) -> LinkClaims:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError as e:
        raise ExpiredLink("the link has expired") from e
    except jwt.InvalidTokenError as e:
        raise InvalidLink("the link is not valid") from e
    merchant_id, link_id, ref = claims.get("mid"), claims["jti"], claims["sub"]
    if not (
        isinstance(merchant_id, str)
        and isinstance(link_id, str)
        and isinstance(ref, str)
        and merchant_id
        and link_id
        and ref
    ):
        raise InvalidLink("the link is not valid")
    return LinkClaims(
        link_id=link_id,
        merchant_id=merchant_id,
        payment_ref=ref,
        issued_at=datetime.fromtimestamp(claims["iat"], UTC),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
    )


def link_url(public_base_url: str, token: str) -> str:
    return f"{public_base_url.rstrip('/')}/pay/retry/{token}"
