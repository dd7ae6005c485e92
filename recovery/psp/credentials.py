"""PSP credentials: the environment's are the defaults, a merchant may carry its own.

Parsed once into typed values (secrets as `SecretStr`, so they never print), and checked at
ingest: an event naming a PSP we hold no credentials for is a clear 422, never a crash in a
worker.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, SecretStr, StringConstraints, ValidationError

from recovery.errors import RecoveryError
from recovery.logs import mask_secrets_in
from recovery.settings import Settings

Url = Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=500)]


class PSPNotConfigured(RecoveryError):
    status = 422
    code = "psp_not_configured"


class PSPDisabled(PSPNotConfigured):
    """A PSP this deployment does not allow (the simulator outside development and tests)."""

    code = "psp_disabled"


class StripeCredentials(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    api_key: SecretStr
    webhook_secret: SecretStr | None = None
    api_base: Url | None = None


class RazorpayCredentials(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    key_id: str
    key_secret: SecretStr
    webhook_secret: SecretStr | None = None
    api_base: Url | None = None


Credentials = StripeCredentials | RazorpayCredentials
CREDENTIAL_TYPES: dict[str, type[StripeCredentials] | type[RazorpayCredentials]] = {
    "stripe": StripeCredentials,
    "razorpay": RazorpayCredentials,
}


def default_credentials(settings: Settings, psp: str) -> Credentials | None:
    """The environment's credentials for `psp`, or None when they are not set."""
    if psp == "stripe" and settings.stripe_api_key:
        return StripeCredentials(
            api_key=settings.stripe_api_key,
            webhook_secret=settings.stripe_webhook_secret or None,
            api_base=settings.stripe_api_base or None,
        )
    if psp == "razorpay" and settings.razorpay_key_id and settings.razorpay_key_secret:
        return RazorpayCredentials(
            key_id=settings.razorpay_key_id,
            key_secret=settings.razorpay_key_secret,
            webhook_secret=settings.razorpay_webhook_secret or None,
            api_base=settings.razorpay_api_base or None,
        )
    return None


def parse_credentials(psp: str, raw: dict[str, Any]) -> Credentials:
    """Typed credentials; from now on their secrets are masked in every log line."""
    try:
        creds = CREDENTIAL_TYPES[psp].model_validate(raw)
    except KeyError:
        raise PSPNotConfigured(f"PSP {psp!r} takes no credentials", field="psp") from None
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise PSPNotConfigured(f"invalid {psp} credentials: {field}: {first['msg']}") from e
    mask_secrets_in(creds)
    return creds


def credentials_to_store(creds: Credentials) -> dict[str, Any]:
    return {
        k: v.get_secret_value() if isinstance(v, SecretStr) else v
        for k, v in creds.model_dump().items()
        if v is not None
    }
