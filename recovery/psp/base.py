"""The one interface every PSP adapter implements, and the canonical vocabulary they share.

Each adapter maps its PSP's native statuses onto `PaymentStatus` with one exhaustive match,
returns declines as results carrying the PSP's codes (never as exceptions), raises
`TransientPSPError` for timeouts, 5xx and rate limits (the activity retries those with the
same idempotency key), and puts our identifiers in the metadata of every object it creates
(`merchant_id`, `payment_ref`, `recovery_id`, and `attempt` or `link_id`), which is how
webhooks find their recovery again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from recovery.errors import RecoveryError
from recovery.models import (
    CardIdentity,
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    Customer,
    Failure,
    PaymentMethod,
)


class PaymentStatus(StrEnum):
    SUCCEEDED = "succeeded"
    PROCESSING = "processing"
    REQUIRES_ACTION = "requires_action"
    FAILED = "failed"
    CANCELED = "canceled"
    REFUNDED = "refunded"


class TransientPSPError(Exception):
    """A timeout, 5xx or rate limit: the activity retries it with the same idempotency key."""


class PSPRequestRejected(Exception):
    """The PSP refused the request itself (not a decline) and will refuse it again: retrying
    cannot help. Each adapter's own rejections subclass it."""


class InvalidWebhook(RecoveryError):
    """Bad, missing or stale signature, or a body that is not the PSP's event JSON."""

    status = 400
    code = "invalid_webhook"


class CheckoutRequest(BaseModel):
    """A hosted payment page for the customer (Stripe Checkout Session, Razorpay Payment
    Link, the simulator's page), created once per retry link."""

    merchant_id: str
    recovery_id: str
    payment_ref: str
    link_id: str
    amount: int
    currency: str
    customer: Customer = Customer()
    description: str
    success_url: str
    cancel_url: str
    idempotency_key: str
    # the link's expiry: the checkout closes no later than this where the PSP allows it
    expires_at: datetime | None = None


class Checkout(BaseModel):
    psp_checkout_id: str
    url: str


RefundStatus = Literal["succeeded", "pending", "failed"]


class RefundResult(BaseModel):
    psp_refund_id: str
    status: RefundStatus
    amount: int


class StoredCredentials(Protocol):
    """A merchant's own credentials as the store keeps them (`recovery.psp.sealing`)."""

    @property
    def merchant_id(self) -> str: ...
    @property
    def psp(self) -> str: ...
    @property
    def values(self) -> dict[str, Any] | None:
        """plaintext, from before sealing"""
        ...

    @property
    def key_id(self) -> str | None: ...
    @property
    def sealed(self) -> bytes | None: ...


class PSPStore(Protocol):
    """What the PSP layer reads and writes in Postgres. `recovery.store.Store` implements it;
    the PSP layer never imports the store (nor the store the PSP layer)."""

    async def psp_credentials(self, merchant_id: str, psp: str) -> StoredCredentials | None:
        """The merchant's own credentials for `psp`, if it has any."""
        ...

    async def simulator_charge(
        self, req: ChargeRequest, status: ChargeStatus, decline_code: str | None
    ) -> tuple[str, ChargeStatus, str | None]:
        """The simulator's ledger: one charge per idempotency key."""
        ...

    async def simulator_payment(self, psp_payment_id: str) -> tuple[ChargeStatus, str | None]:
        """A simulated charge's status and decline code."""
        ...

    async def simulator_charge_by_key(
        self, idempotency_key: str
    ) -> tuple[str, ChargeStatus, str | None] | None:
        """The simulated charge made with this idempotency key, if any."""
        ...

    async def simulator_refund_amount(self, refund_id: str) -> int: ...

    async def simulator_refund(self, psp_payment_id: str, amount: int | None, key: str) -> str:
        """Refund a simulated payment once per idempotency key; the refund's id."""
        ...


class PSPAdapter(Protocol):
    name: str
    # How long the PSP keeps an idempotency key (None: for ever, or no keys: the adapter
    # looks its charges up itself). A try after that long would run as a new charge.
    idempotency_window: timedelta | None

    async def create_payment_intent(self, req: ChargeRequest) -> ChargeResult:
        """Charge the saved payment method off-session, once per `req.idempotency_key`."""
        ...

    async def retrieve_payment_intent(self, psp_payment_id: str) -> ChargeResult:
        """The payment's current status (for pending payments)."""
        ...

    async def find_charge(self, req: ChargeRequest) -> ChargeResult | None:
        """The charge this attempt made, found by what it was created with (its idempotency
        key, receipt or metadata), or None when the PSP has none: how an attempt whose
        answer never came is settled, instead of charging again blind. Raises
        `TransientPSPError` when the PSP cannot tell yet."""

    async def resolve_card(self, customer: Customer, payment_method: PaymentMethod) -> CardIdentity:
        """The card a charge of `payment_method` (none: the customer's default) would charge,
        identified the same under every payment-method id that names it (card-network limits
        count per card)."""
        ...

    async def create_checkout_session(self, req: CheckoutRequest) -> Checkout:
        """A hosted page where the customer pays; once per `req.idempotency_key`."""
        ...

    async def close_checkout(self, psp_checkout_id: str) -> None:
        """Close a hosted checkout so it takes no (more) money; closing a closed, expired or
        paid one is done."""
        ...

    async def refund_payment(
        self, psp_payment_id: str, *, amount: int | None, idempotency_key: str
    ) -> RefundResult: ...

    async def retrieve_refund(self, psp_refund_id: str) -> RefundResult:
        """A refund's current status (a `pending` one settles later: Razorpay's normal
        refunds take working days, Stripe's can too)."""
        ...


# ---- what every adapter does the same way ----------------------------------------------------

SHORT_TEXT = 200
"""`Failure`'s code fields and our ids hold this much (`recovery.models.ShortText`)."""
MESSAGE_TEXT = 1000
"""`Failure.message` holds this much."""


def clip(value: object, limit: int = SHORT_TEXT) -> str | None:
    """A PSP's value as text of at most `limit` characters; None or "" is None."""
    if value is None or value == "":
        return None
    return str(value)[:limit]


def psp_failure(
    code: object, decline_code: object, message: object, network_advice_code: object = None
) -> Failure:
    """What the classifier reads, from a PSP's error fields, each clipped to what it holds."""
    return Failure(
        code=clip(code),
        decline_code=clip(decline_code),
        message=clip(message, MESSAGE_TEXT),
        network_advice_code=clip(network_advice_code),
    )


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A request header by its name in any case (webhook routes pass a plain mapping)."""
    if (value := headers.get(name)) is not None:
        return value
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def charge_metadata(req: ChargeRequest) -> dict[str, str]:
    """Our ids on what a charge creates (Stripe metadata, Razorpay notes)."""
    return {**_our_ids(req), "attempt": str(req.attempt)}


def checkout_metadata(req: CheckoutRequest) -> dict[str, str]:
    """Our ids on a hosted checkout (and on the payment it makes, where the PSP allows)."""
    return {**_our_ids(req), "link_id": req.link_id}


def _our_ids(req: ChargeRequest | CheckoutRequest) -> dict[str, str]:
    return {
        "merchant_id": req.merchant_id,
        "payment_ref": req.payment_ref,
        "recovery_id": req.recovery_id,
    }
