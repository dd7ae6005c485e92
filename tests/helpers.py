"""Small builders shared by the tests."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client

from api.relay import OutboxRelay
from recovery.models import PaymentFailedIn
from recovery.store import IngestResult, Store


def failure_body(
    ref: str | None = None,
    *,
    pm: str = "pm_sim_succeed_on_3",
    decline_code: str | None = "insufficient_funds",
    code: str | None = "card_declined",
    message: str | None = "declined",
    event_id: str | None = None,
    amount: int = 4999,
    psp: str = "simulator",
) -> dict[str, Any]:
    """A valid ingest body (JSON-ready dict)."""
    return {
        "event_id": event_id or f"evt_{uuid.uuid4().hex[:12]}",
        "payment_ref": ref or f"order_{uuid.uuid4().hex[:10]}",
        "psp": psp,
        "amount": amount,
        "currency": "usd",
        "customer": {"id": "cus_1", "email": "a@example.com"},
        "payment_method": {"type": "card", "id": pm},
        "failure": {"code": code, "decline_code": decline_code, "message": message},
        "occurred_at": datetime.now(UTC).isoformat(),
        "metadata": {"plan": "pro"},
    }


async def ingest(
    store: Store, merchant_id: str, body: dict[str, Any], key: str | None = None
) -> IngestResult:
    model = PaymentFailedIn.model_validate_json(json.dumps(body))
    return await store.ingest_failure(
        merchant_id, model, idempotency_key=key, request_hash=uuid.uuid4().hex
    )


async def relay(store: Store, client: Client, task_queue: str) -> int:
    """Deliver every pending outbox row now, as the API's relay would."""
    r = OutboxRelay(store, client, dsn="unused", task_queue=task_queue)
    delivered, failed = await r.relay_once()
    assert failed == 0
    return delivered
