"""PSP webhooks: `POST /v1/webhooks/stripe`, `POST /v1/webhooks/razorpay`.

Authenticated by the PSP's signature over the raw body, not by an API key. A bad or stale
signature is a 400 and nothing is stored. A verified event is recorded once (by PSP event
id) and, when it concerns one of our payments, queued through the outbox as the signal it
means for the payment's recovery; then the PSP gets its 200.
"""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import ValidationError

from api.deps import PSPsDep, StoreDep
from recovery import jsonvalues
from recovery.logs import bind
from recovery.psp.base import InvalidWebhook

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
log = logging.getLogger("recovery.api.webhooks")

MAX_WEBHOOK_BYTES = 256 * 1024
WEBHOOK_MAX_DEPTH = 64  # PSP events nest about 8 deep


@router.post("/{psp}")
async def receive_webhook(
    psp: Literal["stripe", "razorpay"], request: Request, store: StoreDep, psps: PSPsDep
) -> dict[str, object]:
    raw = await request.body()
    if len(raw) > MAX_WEBHOOK_BYTES:
        raise InvalidWebhook("webhook body too large")
    try:
        payload = jsonvalues.loads(raw, WEBHOOK_MAX_DEPTH)
    except ValueError as e:
        raise InvalidWebhook(f"webhook body is not JSON we can store: {e}") from None
    adapter = psps.for_webhooks(psp)
    try:
        event = adapter.verify_webhook(raw, request.headers)
    except ValidationError as e:  # signed, but not an event we can hold (e.g. a 5 kB id)
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InvalidWebhook(f"webhook event {field}: {first['msg']}", field=field) from None
    bind(merchant_id=event.merchant_id, payment_ref=event.payment_ref)
    new, outcome = await store.record_webhook(event, payload)
    log.info("webhook %s %s: %s", psp, event.psp_type, outcome, extra={"event_id": event.event_id})
    return {"received": True, "duplicate": not new, "outcome": outcome}
