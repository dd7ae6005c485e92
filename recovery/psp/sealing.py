"""Merchants' PSP credentials sealed at rest: AES-256-GCM under `CREDENTIALS_KEY`.

A sealed row is `key_id` (which key sealed it) and `nonce || ciphertext`; the associated data
binds the blob to its row (merchant id and PSP), so a blob copied to another merchant or PSP
does not open. The key id is derived from the key (a hash prefix, never the key), so an
operator names no ids. Rotation: set the new key as `CREDENTIALS_KEY` and the previous one in
`CREDENTIALS_KEYS_OLD`; every write seals with the current key, old ones still open what they
sealed, and `recovery psp reseal` seals every row with the current key (after which the old key
can go). Rows from before sealing (plaintext `credentials`) are read as they are and sealed on
their next write or by `reseal`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recovery.errors import RecoveryError
from recovery.psp.base import StoredCredentials

NONCE_BYTES = 12


class CredentialsUnreadable(RecoveryError):
    """Stored credentials this process cannot open: a key is missing or wrong (an operator's
    problem, so a 503 for a client, and an activity retries until it is fixed)."""

    status = 503
    code = "credentials_unreadable"


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"recovery psp credentials key id\0" + key).hexdigest()[:16]


def _associated_data(kid: str, merchant_id: str, psp: str) -> bytes:
    return json.dumps(["merchant_psp_credentials", kid, merchant_id, psp]).encode()


@dataclass(frozen=True)
class Sealed:
    key_id: str
    blob: bytes
    """nonce || ciphertext (with its tag)"""


class CredentialsCipher:
    """Seals with the first key, opens with any of them."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._keys = {key_id(k): AESGCM(k) for k in keys}
        self._current = key_id(keys[0]) if keys else None

    @property
    def current_key_id(self) -> str | None:
        return self._current

    def seal(self, merchant_id: str, psp: str, values: dict[str, Any]) -> Sealed:
        if self._current is None:
            raise CredentialsUnreadable(
                "CREDENTIALS_KEY is not set: it is needed to store PSP credentials"
            )
        nonce = os.urandom(NONCE_BYTES)
        plaintext = json.dumps(values, sort_keys=True).encode()
        aad = _associated_data(self._current, merchant_id, psp)
        return Sealed(
            self._current, nonce + self._keys[self._current].encrypt(nonce, plaintext, aad)
        )

    def open(self, stored: StoredCredentials) -> dict[str, Any]:
        """The credentials' values (a plaintext row from before sealing, as it is)."""
        if stored.sealed is None or stored.key_id is None:
            return dict(stored.values or {})
        where = f"the {stored.psp} credentials of merchant {stored.merchant_id}"
        aead = self._keys.get(stored.key_id)
        if aead is None:
            raise CredentialsUnreadable(
                f"{where} are sealed with key id {stored.key_id}, which is neither "
                "CREDENTIALS_KEY nor in CREDENTIALS_KEYS_OLD"
            )
        nonce, ciphertext = stored.sealed[:NONCE_BYTES], stored.sealed[NONCE_BYTES:]
        aad = _associated_data(stored.key_id, stored.merchant_id, stored.psp)
        try:
            values = json.loads(aead.decrypt(nonce, ciphertext, aad))
        except InvalidTag:
            raise CredentialsUnreadable(
                f"{where} do not open with key id {stored.key_id}: the key is wrong or the row "
                "was altered"
            ) from None
        if not isinstance(values, dict):
            raise CredentialsUnreadable(f"{where} are not a JSON object once opened")
        return values

    def needs_resealing(self, stored: StoredCredentials) -> bool:
        return stored.sealed is None or stored.key_id != self._current
