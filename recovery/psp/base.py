"""The one interface every PSP adapter implements."""

from __future__ import annotations

from typing import Protocol

from recovery.models import ChargeRequest, ChargeResult


class TransientPSPError(Exception):
    """A timeout, 5xx or rate limit: the activity retries it with the same idempotency key."""


class PSPAdapter(Protocol):
    name: str

    async def charge(self, req: ChargeRequest) -> ChargeResult:
        """Charge the saved payment method off-session, once per `req.idempotency_key`.

        Declines come back as a `failed` result carrying the PSP's codes, never as exceptions.
        """
        ...
