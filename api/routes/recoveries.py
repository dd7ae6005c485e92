"""Read a merchant's recoveries; support actions (cancel, expedite)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from api.deps import ClientDep, PrincipalDep, StoreDep
from recovery import constants as names
from recovery.errors import RecoveryFinished, Unavailable
from recovery.models import CancelRequest as CancelSignal
from recovery.models import Category, RecoveryStatus
from recovery.models import ExpediteRequest as ExpediteSignal
from recovery.store import RecoveryRecord

router = APIRouter(prefix="/v1/recoveries", tags=["recoveries"])

_RPC_TIMEOUT = timedelta(seconds=5)
RefPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")]


class AttemptOut(BaseModel):
    number: int
    at: datetime
    outcome: str
    code: str | None


class RecoveryOut(BaseModel):
    recovery_id: str
    payment_ref: str
    workflow_id: str
    status: RecoveryStatus
    category: Category | None
    rule: str | None
    attempts: list[AttemptOut]
    next_attempt_at: datetime | None
    next_attempt_reason: str | None
    amount: int
    currency: str
    psp: str
    started_at: datetime
    ended_at: datetime | None
    ended_reason: str | None
    policy_version: int | None
    links: list[dict[str, Any]] = Field(default_factory=list)


class RecoveryList(BaseModel):
    data: list[RecoveryOut]
    next_cursor: str | None


class CancelIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


def _out(r: RecoveryRecord) -> RecoveryOut:
    return RecoveryOut(
        recovery_id=r.id,
        payment_ref=r.payment_ref,
        workflow_id=r.workflow_id,
        status=RecoveryStatus(r.status),
        category=Category(r.category) if r.category else None,
        rule=r.rule,
        attempts=[
            AttemptOut(number=a.number, at=a.at, outcome=a.outcome, code=a.code) for a in r.attempts
        ],
        next_attempt_at=r.next_attempt_at,
        next_attempt_reason=r.next_attempt_reason,
        amount=r.amount,
        currency=r.currency,
        psp=r.psp,
        started_at=r.started_at,
        ended_at=r.ended_at,
        ended_reason=r.ended_reason,
        policy_version=r.policy_version,
    )


@router.get("/by_ref/{ref}", response_model=RecoveryOut)
async def get_recovery(ref: RefPath, principal: PrincipalDep, store: StoreDep) -> RecoveryOut:
    return _out(await store.get_recovery(principal.merchant_id, ref))


@router.get("", response_model=RecoveryList)
async def list_recoveries(
    principal: PrincipalDep,
    store: StoreDep,
    status: RecoveryStatus | None = None,
    category: Category | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> RecoveryList:
    items, next_cursor = await store.list_recoveries(
        principal.merchant_id,
        status=status.value if status else None,
        category=category.value if category else None,
        limit=limit,
        cursor=cursor,
    )
    return RecoveryList(data=[_out(r) for r in items], next_cursor=next_cursor)


async def _signal_open_recovery(
    ref: str, principal: PrincipalDep, store: StoreDep, client: ClientDep, signal: str, arg: Any
) -> tuple[RecoveryRecord, WorkflowHandle]:
    principal.require("support")
    rec = await store.get_recovery(principal.merchant_id, ref)
    if RecoveryStatus(rec.status).ended:
        raise RecoveryFinished(f"the recovery of {ref!r} already ended {rec.status}")
    handle = client.get_workflow_handle(rec.workflow_id)
    try:
        await handle.signal(signal, arg, rpc_timeout=_RPC_TIMEOUT)
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            # Either the run already completed, or the relay has not started it yet.
            latest = await store.get_recovery(principal.merchant_id, ref)
            if RecoveryStatus(latest.status).ended:
                raise RecoveryFinished(f"the recovery of {ref!r} already ended") from e
            raise Unavailable("the recovery is still starting; retry shortly") from e
        raise Unavailable("the workflow service is unavailable; retry shortly") from e
    return rec, handle


@router.post("/by_ref/{ref}/cancel", response_model=RecoveryOut)
async def cancel(
    ref: RefPath, body: CancelIn, principal: PrincipalDep, store: StoreDep, client: ClientDep
) -> RecoveryOut:
    """Cancel a recovery. An attempt in flight finishes first; no attempt starts after."""
    _, handle = await _signal_open_recovery(
        ref,
        principal,
        store,
        client,
        names.SIGNAL_CANCEL,
        CancelSignal(reason=body.reason, actor=principal.actor),
    )
    # Usually the workflow records the end within milliseconds: answer with it if so.
    try:
        await asyncio.wait_for(handle.result(), timeout=5)
    except Exception:  # still finishing, or Temporal slow: the state read below says so
        pass
    return _out(await store.get_recovery(principal.merchant_id, ref))


@router.post("/by_ref/{ref}/expedite", response_model=RecoveryOut)
async def expedite(
    ref: RefPath, principal: PrincipalDep, store: StoreDep, client: ClientDep
) -> RecoveryOut:
    """Attempt now instead of after the cooldown."""
    rec, _ = await _signal_open_recovery(
        ref, principal, store, client, names.SIGNAL_EXPEDITE, ExpediteSignal(actor=principal.actor)
    )
    return _out(rec)


@router.post("/by_ref/{ref}/apply_policy", response_model=RecoveryOut)
async def apply_policy(
    ref: RefPath, principal: PrincipalDep, store: StoreDep, client: ClientDep
) -> RecoveryOut:
    """Move a running recovery to the merchant's current policy version; its next attempt
    is scheduled again under it."""
    policy = await store.current_policy(principal.merchant_id)
    rec, _ = await _signal_open_recovery(
        ref, principal, store, client, names.SIGNAL_UPDATE_POLICY, policy
    )
    return _out(rec)
