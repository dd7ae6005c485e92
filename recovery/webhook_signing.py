"""Signing merchant webhooks (Standard Webhooks, https://www.standardwebhooks.com/), and the
endpoints' signing secrets sealed at rest.

A secret is `whsec_` and the base64 of 32 random bytes; the HMAC key is those bytes. Each try
is signed over `{webhook-id}.{webhook-timestamp}.{body}` with HMAC-SHA256, sent as
`v1,<base64>`; while a rotated-out secret still signs, the header carries both signatures,
space-separated, the current one first (the spec's way to rotate without losing a delivery).

Secrets are sealed like merchants' PSP credentials (`recovery.psp.sealing`: AES-256-GCM under
`CREDENTIALS_KEY`), bound to their merchant and endpoint, so a sealed secret copied to another
row does not open.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recovery.psp.sealing import CredentialsCipher, CredentialsUnreadable
from recovery.store.records import SealedSecret

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `webhook-signature` entry: `v1,` and the base64 HMAC-SHA256 of
    `{msg_id}.{timestamp}.{body}`, keyed with the base64-decoded secret after `whsec_`."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(signing: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: one signature per secret that signs now."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in signing)


@dataclass(frozen=True)
class _Stored:
    """A sealed secret in the shape `CredentialsCipher.open` reads."""

    merchant_id: str
    psp: str
    key_id: str | None
    sealed: bytes | None
    values: dict[str, Any] | None = None


def _binding(endpoint_id: str) -> str:
    """What the sealed blob is bound to besides the merchant (the cipher's `psp` slot)."""
    return f"webhook_endpoint/{endpoint_id}"


class SecretSealer:
    """Seals endpoints' secrets with the current credentials key, opens them with any."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._cipher = CredentialsCipher(keys)

    def seal(self, merchant_id: str, endpoint_id: str, secret: str) -> SealedSecret:
        try:
            sealed = self._cipher.seal(merchant_id, _binding(endpoint_id), {"secret": secret})
        except CredentialsUnreadable:
            raise CredentialsUnreadable(
                "CREDENTIALS_KEY is not set: it is needed to keep webhook signing secrets"
            ) from None
        return SealedSecret(sealed.key_id, sealed.blob)

    def open(self, merchant_id: str, endpoint_id: str, stored: SealedSecret) -> str:
        values = self._cipher.open(
            _Stored(merchant_id, _binding(endpoint_id), stored.key_id, stored.sealed)
        )
        secret = values.get("secret")
        if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
            raise CredentialsUnreadable(f"the signing secret of {endpoint_id} is not a secret")
        return secret
