"""API keys: random, prefixed, shown once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

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


async def authenticate(store: Store, authorization: str | None) -> Principal:
    """Resolve `Authorization: Bearer <key>`; any problem is a 401 that says nothing more."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or len(key) > 200:
        raise Unauthorized("send a valid API key as 'Authorization: Bearer <key>'")
    digest = hash_key(key)
    record = await store.api_key_by_hash(digest)
    if record is None or not hmac.compare_digest(record.key_hash, digest):
        raise Unauthorized("send a valid API key as 'Authorization: Bearer <key>'")
    return Principal(record.id, record.merchant_id, record.role)
