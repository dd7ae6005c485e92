"""`POST /v1/events/payment_failed`: record a failure; the relay starts its recovery."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api.deps import PrincipalDep, PSPsDep, StoreDep
from api.errors import error_response, validation_response
from recovery import jsonvalues
from recovery.logs import bind
from recovery.models import PaymentFailedIn
from recovery.store import IngestOutcome

router = APIRouter(prefix="/v1/events", tags=["events"])
log = logging.getLogger("recovery.api.events")

MAX_BODY_BYTES = 64 * 1024

# A replay answers with the status of the answer it repeats.
_STATUS = {IngestOutcome.ACCEPTED: 202, IngestOutcome.DUPLICATE: 200}

_INGEST_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "Recorded; its recovery workflow will receive it."},
    200: {"description": "A duplicate event id: nothing new was started."},
    409: {"description": "Idempotency-Key reused with a different body."},
    422: {"description": "Invalid body, or no credentials for the PSP."},
    503: {"description": "Postgres unavailable; retry after Retry-After seconds."},
}


@router.post(
    "/payment_failed",
    status_code=202,
    responses=_INGEST_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PaymentFailedIn.model_json_schema()}},
        }
    },
)
async def payment_failed(
    request: Request,
    principal: PrincipalDep,
    store: StoreDep,
    psps: PSPsDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JSONResponse:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        return error_response(
            413, "payload_too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes"
        )
    try:
        parsed = jsonvalues.loads(raw)
    except ValueError as e:  # UnicodeDecodeError included
        return error_response(400, "invalid_json", f"the body must be a JSON object: {e}")
    if not isinstance(parsed, dict):
        return error_response(400, "invalid_json", "the body must be a JSON object")
    try:
        body = PaymentFailedIn.model_validate_json(raw)
    except ValidationError as e:
        return validation_response(e)
    await psps.for_merchant(principal.merchant_id, body.psp)  # 422 when not configured
    if idempotency_key is not None and not idempotency_key.strip():
        return error_response(422, "validation_error", "must not be blank", "Idempotency-Key")

    canonical = json.dumps(parsed, sort_keys=True, separators=(",", ":"))
    result = await store.ingest_failure(
        principal.merchant_id,
        body,
        idempotency_key=idempotency_key,
        request_hash=hashlib.sha256(canonical.encode()).hexdigest(),
    )
    outcome = result.outcome.value
    request.app.state.metrics.ingested.labels(outcome).inc()
    bind(
        merchant_id=principal.merchant_id,
        payment_ref=body.payment_ref,
        workflow_id=result.body.get("workflow_id"),
        recovery_id=result.body.get("recovery_id"),
    )
    log.info("payment_failed %s", outcome, extra={"event_id": body.event_id})
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JSONResponse(result.body, status_code=_STATUS[result.first], headers=headers)
