"""API keys: random, prefixed, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TLRUCache

from recovery.errors import Forbidden, Unauthorized
from recovery.store import Store, new_id

ROLES = ("merchant", "support", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Principal:
    key_id: str
    merchant_id: str
    role: str

    def require(self, role: str) -> None:
        if ROLE_RANK[self.role] < ROLE_RANK[role]:
            raise Forbidden(f"this action needs the {role} role")

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.key_id}"


def generate_key(mode: str = "test") -> str:
    """A new key: `rk_<mode>_` and 43 characters from 32 random bytes."""
    return f"rk_{mode}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def register_key(store: Store, merchant_id: str, role: str, key: str) -> str:
    """Store a key's hash (idempotent for the same key); returns the key id."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    key_id = new_id("key")
    await store.add_api_key(key_id, merchant_id, role, hash_key(key), key[:12])
    return key_id


_BAD_KEY = "send a valid API key as 'Authorization: Bearer <key>'"


class VerifiedKeys:
    """Keys verified in Postgres, kept in this process for `ttl` seconds, so that a client
    sending many requests costs one key lookup per `ttl`, not one per request.

    A revocation (`recovery keys revoke`, or the row changed any other way) reaches every
    replica within `ttl`: an entry expires `ttl` after the lookup that verified it *began*,
    so a lookup that read the row just before the revocation keeps it no longer than that.
    Only successes are kept, by the key's SHA-256 (never the key itself): an unknown or
    revoked key, or a lookup that failed (Postgres away), is asked again next time.
    """

    def __init__(
        self, ttl: float, maxsize: int = 10_000, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.timer = timer
        self._cache: TLRUCache[bytes, tuple[Principal, float]] = TLRUCache(
            maxsize, ttu=lambda _digest, entry, _now: entry[1], timer=timer
        )

    def get(self, digest: bytes) -> Principal | None:
        entry = self._cache.get(digest)
        return entry[0] if entry is not None else None

    def put(self, digest: bytes, principal: Principal, looked_up_at: float) -> None:
        if self.ttl > 0:
            self._cache[digest] = (principal, looked_up_at + self.ttl)


async def authenticate(
    store: Store, authorization: str | None, verified: VerifiedKeys | None = None
) -> Principal:
    """Resolve `Authorization: Bearer <key>`; any problem is a 401 that says nothing more.
    With `verified`, a key verified less than its `ttl` ago is not looked up again."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or len(key) > 200:
        raise Unauthorized(_BAD_KEY)
    digest = hash_key(key)
    if verified is not None and (principal := verified.get(digest)) is not None:
        return principal
    started = verified.timer() if verified is not None else 0.0
    record = await store.api_key_by_hash(digest)
    if record is None or not hmac.compare_digest(record.key_hash, digest):
        raise Unauthorized(_BAD_KEY)
    principal = Principal(record.id, record.merchant_id, record.role)
    if verified is not None:
        verified.put(digest, principal, started)
    return principal
