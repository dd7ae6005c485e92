"""A merchant's recoveries, and the support actions on them.

Every support action (cancel, expedite, pause, resume, retry, apply_policy) is recorded in
the audit log with its actor and result, and reaches the workflow as a signal that carries
the actor, so it is in the workflow history too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from temporalio.client import (
    WorkflowContinuedAsNewError,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import ClientDep, RelayDep, ScopeDep, SettingsDep, StoreDep
from api.relay import OutboxRelay
from recovery import constants as names
from recovery.errors import NothingToExpedite, RecoveryError, RecoveryFinished, Unavailable
from recovery.models import (
    CancelRequest,
    Category,
    ExpediteRequest,
    PauseRequest,
    PaymentMethod,
    PaymentMethodUpdate,
    RecoveryStatus,
    ResumeRequest,
)
from recovery.retry_links import issue_link
from recovery.store import RecoveryRecord
from recovery.views import RecoveryOut, recovery_out

router = APIRouter(prefix="/v1/recoveries", tags=["recoveries"])

_RPC_TIMEOUT = timedelta(seconds=5)
# An update waits for a worker to run the workflow: after a worker restart that includes
# Temporal's sticky-queue timeout (5 s) and the replay.
_UPDATE_TIMEOUT = timedelta(seconds=15)
_SETTLE_WITHIN = 5.0  # seconds a pause or resume waits to be shown in Postgres
_START_WITHIN = 5.0  # seconds an action waits for a run the relay is just starting
_START_POLL = 0.05
T = TypeVar("T")
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
    link = await issue_link(store, settings, scope.merchant_id, ref, scope.principal.actor)
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


class _Action:
    """One support action: role check, audit row (accepted or why not), then the work."""

    def __init__(
        self,
        action: str,
        ref: str,
        scope: ScopeDep,
        store: StoreDep,
        reason: str | None = None,
        *,
        relay: OutboxRelay | None = None,
    ) -> None:
        self.action, self.ref, self.scope, self.store, self.reason = (
            action,
            ref,
            scope,
            store,
            reason,
        )
        self.relay = relay
        self.recovery_id: str | None = None

    async def __aenter__(self) -> _Action:
        try:
            self.scope.principal.require("support")
        except RecoveryError as e:
            await self._record(f"rejected: {e.code}")
            raise
        return self

    async def __aexit__(self, exc_type: type | None, exc: BaseException | None, _tb: Any) -> None:
        if exc is None:
            await self._record("accepted")
        elif isinstance(exc, RecoveryError) and not isinstance(exc, Unavailable):
            await self._record(f"rejected: {exc.code}")

    async def _record(self, result: str) -> None:
        await self.store.audit(
            merchant_id=self.scope.merchant_id,
            actor_key_id=self.scope.principal.key_id,
            actor_role=self.scope.principal.role,
            action=self.action,
            payment_ref=self.ref,
            recovery_id=self.recovery_id,
            reason=self.reason,
            result=result,
        )

    async def signal(
        self, client: ClientDep, signal: str, arg: Any
    ) -> tuple[RecoveryRecord, WorkflowHandle]:
        """Signal the payment's open recovery; 409 when it already ended."""
        self.recovery_id, handle = await open_recovery(client, self.store, self.scope, self.ref)
        await reach(
            self.store,
            self.scope,
            self.ref,
            lambda: handle.signal(signal, arg, rpc_timeout=_RPC_TIMEOUT),
            relay=self.relay,
        )
        return await self.store.get_recovery(self.scope.merchant_id, self.ref), handle


async def open_recovery(
    client: ClientDep, store: StoreDep, scope: ScopeDep, ref: str
) -> tuple[str, WorkflowHandle]:
    """The id and workflow of the payment's open recovery; 409 when it already ended."""
    rec = await store.get_recovery(scope.merchant_id, ref)
    if RecoveryStatus(rec.status).ended:
        raise RecoveryFinished(f"the recovery of {ref!r} already ended {rec.status}")
    return rec.id, client.get_workflow_handle(rec.workflow_id)


async def reach(
    store: StoreDep,
    scope: ScopeDep,
    ref: str,
    call: Callable[[], Awaitable[T]],
    *,
    relay: OutboxRelay | None = None,
) -> T:
    """Deliver a signal or update to the recovery's workflow, with Temporal's errors said as
    ours: ended (409), unreachable (503). A recovery whose run the outbox relay has not
    started yet (an action right after ingest) is started now from its outbox row by `relay`
    (`OutboxRelay.start_now`), or waited for while a relay is starting it, up to
    `_START_WITHIN`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _START_WITHIN
    while True:
        try:
            return await call()
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:
                raise Unavailable("the workflow service is unavailable; retry shortly") from e
            # Either the run already completed, or the relay has not started it yet.
            latest = await store.get_recovery(scope.merchant_id, ref)
            if RecoveryStatus(latest.status).ended:
                raise RecoveryFinished(f"the recovery of {ref!r} already ended") from e
            if relay is not None and await relay.start_now(latest.workflow_id):
                continue  # started by us just now: the call reaches it
            if loop.time() >= deadline:
                raise Unavailable("the recovery is still starting; retry shortly") from e
        except WorkflowUpdateRPCTimeoutOrCancelledError as e:
            raise Unavailable("the recovery did not answer in time; retry shortly") from e
        await asyncio.sleep(_START_POLL)


async def first_step_shown(
    store: StoreDep, scope: ScopeDep, ref: str, relay: OutboxRelay | None = None
) -> None:
    """Return once the recovery's run has shown its first step (a category: it has decided
    what comes first), started now by `relay` if no relay has yet. Until then a run refuses
    every expedite, having nothing yet to act on: a run that shows nothing within
    `_UPDATE_TIMEOUT` (the time an expedite may wait for a worker anyway) is still starting
    (503), never a `409` it would not answer a moment later."""
    rec = await store.get_recovery(scope.merchant_id, ref)
    if rec.category is not None or rec.ended_at is not None:
        return
    if relay is not None:
        await relay.start_now(rec.workflow_id)
    rec = await settled(
        store,
        scope,
        ref,
        lambda r: r.category is not None or r.ended_at is not None,
        within=_UPDATE_TIMEOUT.total_seconds(),
    )
    if rec.category is None and rec.ended_at is None:
        raise Unavailable("the recovery is still starting; retry shortly")


async def settled(
    store: StoreDep,
    scope: ScopeDep,
    ref: str,
    done: Callable[[RecoveryRecord], bool],
    within: float = _SETTLE_WITHIN,
) -> RecoveryRecord:
    """The recovery as Postgres shows it once the workflow has written what it was told
    (it does within milliseconds), or as it is after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not done(rec := await store.get_recovery(scope.merchant_id, ref)):
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    return rec


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
    async with _Action("cancel", ref, scope, store, body.reason, relay=relay) as act:
        _, handle = await act.signal(
            client,
            names.SIGNAL_CANCEL,
            CancelRequest(reason=body.reason, actor=scope.principal.actor),
        )
    # Usually the workflow records the end within milliseconds: answer with it if so.
    try:
        await asyncio.wait_for(handle.result(follow_runs=False), timeout=5)
    except (TimeoutError, WorkflowFailureError, WorkflowContinuedAsNewError, RPCError):
        pass  # still finishing, continued as the next recovery, or Temporal slow: see below
    return _out(await store.get_recovery(scope.merchant_id, ref))


@router.post("/by_ref/{ref}/expedite", response_model=RecoveryOut)
async def expedite(
    ref: RefPath, scope: ScopeDep, store: StoreDep, client: ClientDep, relay: RelayDep
) -> RecoveryOut:
    """Attempt now instead of after the cooldown. 409 `nothing_to_expedite` when no attempt
    waits on one (awaiting the customer, a pending payment, paused, or one in flight): the
    recovery refuses it, and nothing is kept for later. Right after ingest it is asked once
    the recovery has shown its first step (`first_step_shown`)."""
    async with _Action("expedite", ref, scope, store, relay=relay) as act:
        act.recovery_id, handle = await open_recovery(client, store, scope, ref)
        await first_step_shown(store, scope, ref, relay)  # right after ingest
        try:
            await reach(
                store,
                scope,
                ref,
                lambda: handle.execute_update(
                    names.UPDATE_EXPEDITE,
                    ExpediteRequest(actor=scope.principal.actor),
                    rpc_timeout=_UPDATE_TIMEOUT,
                ),
                relay=relay,
            )
        except WorkflowUpdateFailedError as e:
            cause = e.cause
            if isinstance(cause, ApplicationError) and cause.type == names.NOTHING_TO_EXPEDITE:
                raise NothingToExpedite(f"nothing to expedite: {cause.message}") from e
            raise
    return _out(await store.get_recovery(scope.merchant_id, ref))


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
    async with _Action("pause", ref, scope, store, reason, relay=relay) as act:
        await act.signal(
            client, names.SIGNAL_PAUSE, PauseRequest(reason=reason, actor=scope.principal.actor)
        )
    return _out(await settled(store, scope, ref, lambda r: r.paused or r.ended_at is not None))


@router.post("/by_ref/{ref}/resume", response_model=RecoveryOut)
async def resume(
    ref: RefPath, scope: ScopeDep, store: StoreDep, client: ClientDep, relay: RelayDep
) -> RecoveryOut:
    """Undo a pause; an attempt held by it happens now."""
    async with _Action("resume", ref, scope, store, relay=relay) as act:
        await act.signal(client, names.SIGNAL_RESUME, ResumeRequest(actor=scope.principal.actor))
    return _out(await settled(store, scope, ref, lambda r: not r.paused))


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
    recovery_id, handle = await open_recovery(client, store, scope, ref)
    update = PaymentMethodUpdate(payment_method=body.payment_method, actor=scope.principal.actor)
    await reach(
        store,
        scope,
        ref,
        lambda: handle.signal(
            names.SIGNAL_PAYMENT_METHOD_UPDATED, update, rpc_timeout=_RPC_TIMEOUT
        ),
        relay=relay,
    )
    await store.audit(
        merchant_id=scope.merchant_id,
        actor_key_id=scope.principal.key_id,
        actor_role=scope.principal.role,
        action="payment_method_updated",
        payment_ref=ref,
        recovery_id=recovery_id,
        reason=f"{body.payment_method.type} {body.payment_method.id}",
        result="accepted",
    )
    return _out(await store.get_recovery(scope.merchant_id, ref))


@router.post("/by_ref/{ref}/retry", response_model=RecoveryOut)
async def retry(ref: RefPath, scope: ScopeDep, store: StoreDep) -> RecoveryOut:
    """Re-drive an exhausted recovery as a new run with a fresh attempt budget."""
    async with _Action("retry", ref, scope, store) as act:
        act.recovery_id = await store.redrive(scope.merchant_id, ref)
    return _out(await store.get_recovery(scope.merchant_id, ref))


@router.post("/by_ref/{ref}/apply_policy", response_model=RecoveryOut)
async def apply_policy(
    ref: RefPath, scope: ScopeDep, store: StoreDep, client: ClientDep, relay: RelayDep
) -> RecoveryOut:
    """Move a running recovery to the merchant's current policy version; its next attempt
    is scheduled again under it."""
    async with _Action("apply_policy", ref, scope, store, relay=relay) as act:
        policy = await store.current_policy(scope.merchant_id)
        act.reason = f"policy v{policy.version}"
        rec, _ = await act.signal(client, names.SIGNAL_UPDATE_POLICY, policy)
    return _out(rec)
