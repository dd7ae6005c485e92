"""A merchant's recoveries, and the support actions on them.

Every support action (cancel, expedite, pause, resume, retry, apply_policy) is recorded in
the audit log with its actor and result, and reaches the workflow as a signal that carries
the actor, so it is in the workflow history too: the actions themselves are in
`api/actions.py`, shared with the console.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api import actions
from api.deps import ClientDep, RelayDep, ScopeDep, SettingsDep, StoreDep
from recovery.models import Category, PaymentMethod, RecoveryStatus
from recovery.store import RecoveryRecord
from recovery.views import RecoveryOut, recovery_out

router = APIRouter(prefix="/v1/recoveries", tags=["recoveries"])

RefPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")]


class RecoveryList(BaseModel):
    data: list[RecoveryOut]
    next_cursor: str | None


class CancelIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class PauseIn(BaseModel):
    reason: str = Field(default="", max_length=500)


class NewPaymentMethod(PaymentMethod):
    id: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class PaymentMethodIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_method: NewPaymentMethod


def _out(r: RecoveryRecord) -> RecoveryOut:
    """A recovery in a list or an action's answer (without its links and payments)."""
    return recovery_out(r)


class LinkOut(BaseModel):
    url: str
    expires_at: datetime
    link_id: str


@router.get("/by_ref/{ref}", response_model=RecoveryOut)
async def get_recovery(ref: RefPath, scope: ScopeDep, store: StoreDep) -> RecoveryOut:
    """The payment's latest recovery, with its attempts, links and payments (merchant
    webhooks carry it the same way, as `data.recovery`)."""
    return await store.recovery_view(scope.merchant_id, ref)


@router.post("/by_ref/{ref}/link", response_model=LinkOut, status_code=201)
async def create_link(
    ref: RefPath, scope: ScopeDep, store: StoreDep, settings: SettingsDep
) -> LinkOut:
    """A signed retry link for the customer, valid LINK_TTL_SECONDS (default 15 minutes)."""
    link = await actions.create_link(store, settings, scope, ref)
    return LinkOut(url=link.url, expires_at=link.expires_at, link_id=link.link_id)


@router.get("", response_model=RecoveryList)
async def list_recoveries(
    scope: ScopeDep,
    store: StoreDep,
    status: RecoveryStatus | None = None,
    category: Category | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> RecoveryList:
    items, next_cursor = await store.list_recoveries(
        scope.merchant_id,
        status=status.value if status else None,
        category=category.value if category else None,
        limit=limit,
        cursor=cursor,
    )
    return RecoveryList(data=[_out(r) for r in items], next_cursor=next_cursor)


@router.post("/by_ref/{ref}/cancel", response_model=RecoveryOut)
async def cancel(
    ref: RefPath,
    body: CancelIn,
    scope: ScopeDep,
    store: StoreDep,
    client: ClientDep,
    relay: RelayDep,
) -> RecoveryOut:
    """Cancel a recovery. An attempt in flight finishes first; no attempt starts after."""
    return _out(await actions.cancel(store, client, scope, ref, body.reason, relay=relay))


@router.post("/by_ref/{ref}/expedite", response_model=RecoveryOut)
async def expedite(
    ref: RefPath, scope: ScopeDep, store: StoreDep, client: ClientDep, relay: RelayDep
) -> RecoveryOut:
    """Attempt now instead of after the cooldown. 409 `nothing_to_expedite` when no attempt
    waits on one (awaiting the customer, a pending payment, paused, or one in flight): the
    recovery refuses it, and nothing is kept for later."""
    return _out(await actions.expedite(store, client, scope, ref, relay=relay))


@router.post("/by_ref/{ref}/pause", response_model=RecoveryOut)
async def pause(
    ref: RefPath,
    scope: ScopeDep,
    store: StoreDep,
    client: ClientDep,
    relay: RelayDep,
    body: PauseIn | None = None,
) -> RecoveryOut:
    """Hold all attempts until resumed; a cooldown that ends meanwhile waits."""
    reason = body.reason if body else ""
    return _out(await actions.pause(store, client, scope, ref, reason, relay=relay))


@router.post("/by_ref/{ref}/resume", response_model=RecoveryOut)
async def resume(
    ref: RefPath, scope: ScopeDep, store: StoreDep, client: ClientDep, relay: RelayDep
) -> RecoveryOut:
    """Undo a pause; an attempt held by it happens now."""
    return _out(await actions.resume(store, client, scope, ref, relay=relay))


@router.post("/by_ref/{ref}/payment_method_updated", response_model=RecoveryOut, status_code=202)
async def payment_method_updated(
    ref: RefPath,
    body: PaymentMethodIn,
    scope: ScopeDep,
    store: StoreDep,
    client: ClientDep,
    relay: RelayDep,
) -> RecoveryOut:
    """The customer has a new card or method: the recovery switches to it and attempts now
    (within the card-network limits), also while it awaits the customer. While a payment of
    ours may still complete, the new method waits for that payment's outcome."""
    return _out(
        await actions.payment_method_updated(
            store, client, scope, ref, body.payment_method, relay=relay
        )
    )


@router.post("/by_ref/{ref}/retry", response_model=RecoveryOut)
async def retry(ref: RefPath, scope: ScopeDep, store: StoreDep) -> RecoveryOut:
    """Re-drive an exhausted recovery as a new run with a fresh attempt budget."""
    return _out(await actions.retry(store, scope, ref))


@router.post("/by_ref/{ref}/apply_policy", response_model=RecoveryOut)
async def apply_policy(
    ref: RefPath, scope: ScopeDep, store: StoreDep, client: ClientDep, relay: RelayDep
) -> RecoveryOut:
    """Move a running recovery to the merchant's current policy version; its next attempt
    is scheduled again under it."""
    return _out(await actions.apply_policy(store, client, scope, ref, relay=relay))
