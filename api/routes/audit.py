"""`GET /v1/audit`: the support actions taken on a merchant's recoveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import ScopeDep, StoreDep

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class AuditEntry(BaseModel):
    id: int
    actor_key_id: str
    actor_role: str
    action: str
    payment_ref: str | None
    recovery_id: str | None
    reason: str | None
    result: str
    created_at: datetime


class AuditList(BaseModel):
    data: list[AuditEntry]


@router.get("", response_model=AuditList)
async def list_audit(
    scope: ScopeDep,
    store: StoreDep,
    ref: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditList:
    scope.principal.require("support")
    rows = await store.audit_entries(scope.merchant_id, ref, limit)
    return AuditList(data=[AuditEntry.model_validate(r, from_attributes=True) for r in rows])
