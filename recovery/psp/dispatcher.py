"""Pick the adapter for a payment: by its PSP, with the merchant's credentials when it has
its own, else the environment's. Adapters are built once per set of credentials."""

from __future__ import annotations

from recovery.psp.base import PSPAdapter, PSPStore
from recovery.psp.credentials import (
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

__all__ = ["PSPDisabled", "PSPDispatcher", "PSPNotConfigured"]


def _secret(value: object) -> str | None:
    return value.get_secret_value() if value is not None else None  # type: ignore[attr-defined]


def build_adapter(creds: Credentials) -> PSPAdapter:
    match creds:
        case StripeCredentials():
            from recovery.psp.stripe import StripeAdapter

            return StripeAdapter(
                creds.api_key.get_secret_value(), _secret(creds.webhook_secret), creds.api_base
            )
        case RazorpayCredentials():
            from recovery.psp.razorpay import RazorpayAdapter

            return RazorpayAdapter(
                creds.key_id,
                creds.key_secret.get_secret_value(),
                _secret(creds.webhook_secret),
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

    def for_webhooks(self, psp: str) -> PSPAdapter:
        """The adapter whose webhook secret verifies `psp`'s webhooks (the environment's)."""
        self._served(psp)
        creds = default_credentials(self._settings, psp) if psp != "simulator" else None
        if creds is None or creds.webhook_secret is None:
            raise PSPNotConfigured(f"webhooks from {psp!r} are not configured here")
        if creds not in self._cache:
            self._cache[creds] = build_adapter(creds)
        return self._cache[creds]
