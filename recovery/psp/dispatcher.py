"""Pick the adapter for a payment: by its PSP, with the merchant's credentials when it has
its own, else the environment's. Adapters are built once per set of credentials."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from pydantic import SecretStr

from recovery.models import WebhookEvent
from recovery.psp.base import PSPAdapter, PSPStore
from recovery.psp.credentials import (
    CREDENTIAL_TYPES,
    Credentials,
    PSPDisabled,
    PSPNotConfigured,
    RazorpayCredentials,
    StripeCredentials,
    default_credentials,
    parse_credentials,
)
from recovery.psp.sealing import CredentialsCipher
from recovery.psp.simulator import SimulatorPSP
from recovery.settings import Settings

__all__ = ["PSPDisabled", "PSPDispatcher", "PSPNotConfigured", "WebhookVerifier"]

WebhookVerifier = Callable[[bytes, Mapping[str, str]], WebhookEvent]
"""Verify a webhook's signature over its raw body and normalise it (`InvalidWebhook` if not)."""


def build_adapter(creds: Credentials) -> PSPAdapter:
    match creds:
        case StripeCredentials():
            from recovery.psp.stripe import StripeAdapter

            return StripeAdapter(creds.api_key.get_secret_value(), creds.api_base)
        case RazorpayCredentials():
            from recovery.psp.razorpay import RazorpayAdapter

            return RazorpayAdapter(
                creds.key_id,
                creds.key_secret.get_secret_value(),
                creds.api_base,
            )


class PSPDispatcher:
    def __init__(
        self, store: PSPStore, settings: Settings, *, psps: frozenset[str] | None = None
    ) -> None:
        """`psps` limits the PSPs this dispatcher serves (tests use it); default: all."""
        self._store = store
        self._settings = settings
        self._psps = psps
        self._simulator = SimulatorPSP(store)
        self._cipher = CredentialsCipher(settings.credentials_keys())
        self._cache: dict[Credentials, PSPAdapter] = {}

    def _served(self, psp: str) -> None:
        if self._psps is not None and psp not in self._psps:
            raise PSPNotConfigured(f"PSP {psp!r} is not served here", field="psp")
        if psp == "simulator" and not self.simulator_allowed:
            raise PSPDisabled(
                "the simulator PSP moves no money and is turned off here "
                "(ALLOW_SIMULATOR=true turns it on, for development and tests)",
                field="psp",
            )

    @property
    def simulator_allowed(self) -> bool:
        return self._settings.allow_simulator

    async def credentials(self, merchant_id: str, psp: str) -> Credentials:
        own = await self._store.psp_credentials(merchant_id, psp)
        creds = (
            parse_credentials(psp, self._cipher.open(own))
            if own
            else default_credentials(self._settings, psp)
        )
        if creds is None:
            raise PSPNotConfigured(
                f"no credentials are configured for PSP {psp!r}: set them for the merchant or "
                f"in the environment",
                field="psp",
            )
        return creds

    async def for_merchant(self, merchant_id: str, psp: str) -> PSPAdapter:
        self._served(psp)
        if psp == "simulator":
            return self._simulator
        creds = await self.credentials(merchant_id, psp)
        if creds not in self._cache:
            self._cache[creds] = build_adapter(creds)
        return self._cache[creds]

    async def webhook_verifier(self, psp: str, merchant_id: str | None = None) -> WebhookVerifier:
        """What verifies `psp`'s webhooks: from the environment's account (`merchant_id` None)
        or from the merchant's own, each with its own webhook secret. The secret alone is
        enough (no API key needed). Unconfigured is the same answer whether or not the
        merchant exists."""
        self._served(psp)
        secret: SecretStr | None = None
        if merchant_id is None:
            secret = {
                "stripe": self._settings.stripe_webhook_secret,
                "razorpay": self._settings.razorpay_webhook_secret,
            }.get(psp)
        elif psp in CREDENTIAL_TYPES:
            own = await self._store.psp_credentials(merchant_id, psp)
            if own is not None:
                secret = parse_credentials(psp, self._cipher.open(own)).webhook_secret
        if secret is None or not secret.get_secret_value():
            whose = "this merchant's account" if merchant_id else "the environment's account"
            raise PSPNotConfigured(f"webhooks from {psp!r} for {whose} are not configured here")
        return functools.partial(_WEBHOOK_VERIFIERS[psp](), secret.get_secret_value())


def _stripe_verifier() -> Callable[[str, bytes, Mapping[str, str]], WebhookEvent]:
    from recovery.psp.stripe import verify_webhook

    return verify_webhook


def _razorpay_verifier() -> Callable[[str, bytes, Mapping[str, str]], WebhookEvent]:
    from recovery.psp.razorpay import verify_webhook

    return verify_webhook


_WEBHOOK_VERIFIERS = {"stripe": _stripe_verifier, "razorpay": _razorpay_verifier}
