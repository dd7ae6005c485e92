"""PSP webhooks: `POST /v1/webhooks/stripe`, `POST /v1/webhooks/razorpay` for the
environment's PSP accounts, `POST /v1/webhooks/{psp}/{merchant_id}` for a merchant's own.

Authenticated by the PSP's signature over the raw body (the account's webhook secret alone
verifies it), not by an API key. A bad or stale signature is a 400 and nothing is stored. A
verified event is recorded once (by the event id the PSP signed, within its account) and,
when it concerns one of our payments, queued through the outbox as the signal it means for
the payment's recovery; then the PSP gets its 200. A merchant's own account acts on that
merchant's payments only.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from pydantic import ValidationError

from api.deps import PSPsDep, StoreDep
from recovery import jsonvalues
from recovery.logs import bind
from recovery.psp.base import InvalidWebhook

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
log = logging.getLogger("recovery.api.webhooks")

MAX_WEBHOOK_BYTES = 256 * 1024
WEBHOOK_MAX_DEPTH = 64  # PSP events nest about 8 deep


Psp = Literal["stripe", "razorpay"]


@router.post("/{psp}")
async def receive_webhook(
    psp: Psp, request: Request, store: StoreDep, psps: PSPsDep
) -> dict[str, object]:
    """A webhook from the environment's PSP account, verified with its webhook secret."""
    return await _receive(psp, None, request, store, psps)


@router.post("/{psp}/{merchant_id}")
async def receive_merchant_webhook(
    psp: Psp,
    merchant_id: Annotated[str, Path(max_length=255)],
    request: Request,
    store: StoreDep,
    psps: PSPsDep,
) -> dict[str, object]:
    """A webhook from the merchant's own PSP account, verified with that merchant's webhook
    secret; it acts on that merchant's payments only."""
    return await _receive(psp, merchant_id, request, store, psps)


async def _receive(
    psp: Psp, account: str | None, request: Request, store: StoreDep, psps: PSPsDep
) -> dict[str, object]:
    raw = await request.body()
    if len(raw) > MAX_WEBHOOK_BYTES:
        raise InvalidWebhook("webhook body too large")
    try:
        payload = jsonvalues.loads(raw, WEBHOOK_MAX_DEPTH)
    except ValueError as e:
        raise InvalidWebhook(f"webhook body is not JSON we can store: {e}") from None
    verify = await psps.webhook_verifier(psp, account)
    try:
        event = verify(raw, request.headers)
    except ValidationError as e:  # signed, but not an event we can hold (e.g. a 5 kB id)
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InvalidWebhook(f"webhook event {field}: {first['msg']}", field=field) from None
    bind(merchant_id=event.merchant_id, payment_ref=event.payment_ref)
    new, outcome = await store.record_webhook(event, payload, account=account)
    log.info(
        "webhook %s %s: %s",
        psp,
        event.psp_type,
        outcome,
        extra={"event_id": event.event_id, "account": account or "environment"},
    )
    return {"received": True, "duplicate": not new, "outcome": outcome}
