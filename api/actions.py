"""The support actions on a recovery, one function each, shared by the JSON API
(`api/routes/recoveries.py`) and the console (`api/routes/console_recoveries.py`).

Each checks the role (support), records the action in the audit log with its actor, reason
and result (accepted, or `rejected: <code>` and why, so refused attempts are on record too),
and reaches the workflow as a signal (expedite: an update) that carries the actor, so it is
in the workflow history as well. Errors are the domain's (`recovery.errors`): 403 without
the role, 404 unknown ref, 409 ended or nothing to expedite, 503 Temporal unreachable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    WorkflowContinuedAsNewError,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import Scope
from api.relay import OutboxRelay
from recovery import constants as names
from recovery.errors import NothingToExpedite, RecoveryError, RecoveryFinished, Unavailable
from recovery.models import (
    CancelRequest,
    ExpediteRequest,
    PauseRequest,
    PaymentMethod,
    PaymentMethodUpdate,
    RecoveryStatus,
    ResumeRequest,
)
from recovery.retry_links import IssuedLink, issue_link
from recovery.settings import Settings
from recovery.store import RecoveryRecord, Store

_RPC_TIMEOUT = timedelta(seconds=5)
# An update waits for a worker to run the workflow: after a worker restart that includes
# Temporal's sticky-queue timeout (5 s) and the replay.
_UPDATE_TIMEOUT = timedelta(seconds=15)
_SETTLE_WITHIN = 5.0  # seconds a pause or resume waits to be shown in Postgres
_START_WITHIN = 5.0  # seconds an action waits for a run the relay is just starting
_START_POLL = 0.05
T = TypeVar("T")

SUPPORT_ACTIONS = ("cancel", "expedite", "pause", "resume", "retry", "apply_policy")


class _Action:
    """One support action: role check, audit row (accepted or why not), then the work."""

    def __init__(
        self,
        action: str,
        ref: str,
        scope: Scope,
        store: Store,
        reason: str | None = None,
        *,
        relay: OutboxRelay | None = None,
    ) -> None:
        self.action, self.ref, self.scope, self.store = action, ref, scope, store
        self.reason = reason
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
        self, client: Client, signal: str, arg: Any
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
    client: Client, store: Store, scope: Scope, ref: str
) -> tuple[str, WorkflowHandle]:
    """The id and workflow of the payment's open recovery; 409 when it already ended."""
    rec = await store.get_recovery(scope.merchant_id, ref)
    if RecoveryStatus(rec.status).ended:
        raise RecoveryFinished(f"the recovery of {ref!r} already ended {rec.status}")
    return rec.id, client.get_workflow_handle(rec.workflow_id)


async def reach(
    store: Store,
    scope: Scope,
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
    store: Store, scope: Scope, ref: str, relay: OutboxRelay | None = None
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
    store: Store,
    scope: Scope,
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


async def cancel(
    store: Store,
    client: Client,
    scope: Scope,
    ref: str,
    reason: str,
    *,
    relay: OutboxRelay | None = None,
) -> RecoveryRecord:
    """Cancel a recovery. An attempt in flight finishes first; no attempt starts after."""
    async with _Action("cancel", ref, scope, store, reason, relay=relay) as act:
        _, handle = await act.signal(
            client,
            names.SIGNAL_CANCEL,
            CancelRequest(reason=reason, actor=scope.principal.actor),
        )
    # Usually the workflow records the end within milliseconds: answer with it if so.
    try:
        await asyncio.wait_for(handle.result(follow_runs=False), timeout=5)
    except (TimeoutError, WorkflowFailureError, WorkflowContinuedAsNewError, RPCError):
        pass  # still finishing, continued as the next recovery, or Temporal slow: see below
    return await store.get_recovery(scope.merchant_id, ref)


async def expedite(
    store: Store,
    client: Client,
    scope: Scope,
    ref: str,
    reason: str | None = None,
    *,
    relay: OutboxRelay | None = None,
) -> RecoveryRecord:
    """Attempt now instead of after the cooldown. 409 `nothing_to_expedite` when no attempt
    waits on one (awaiting the customer, a pending payment, paused, or one in flight): the
    recovery refuses it, and nothing is kept for later. Right after ingest it is asked once
    the recovery has shown its first step (`first_step_shown`)."""
    async with _Action("expedite", ref, scope, store, reason, relay=relay) as act:
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
    return await store.get_recovery(scope.merchant_id, ref)


async def pause(
    store: Store,
    client: Client,
    scope: Scope,
    ref: str,
    reason: str,
    *,
    relay: OutboxRelay | None = None,
) -> RecoveryRecord:
    """Hold all attempts until resumed; a cooldown that ends meanwhile waits."""
    async with _Action("pause", ref, scope, store, reason, relay=relay) as act:
        await act.signal(
            client, names.SIGNAL_PAUSE, PauseRequest(reason=reason, actor=scope.principal.actor)
        )
    return await settled(store, scope, ref, lambda r: r.paused or r.ended_at is not None)


async def resume(
    store: Store,
    client: Client,
    scope: Scope,
    ref: str,
    reason: str | None = None,
    *,
    relay: OutboxRelay | None = None,
) -> RecoveryRecord:
    """Undo a pause; an attempt held by it happens now."""
    async with _Action("resume", ref, scope, store, reason, relay=relay) as act:
        await act.signal(client, names.SIGNAL_RESUME, ResumeRequest(actor=scope.principal.actor))
    return await settled(store, scope, ref, lambda r: not r.paused)


async def retry(store: Store, scope: Scope, ref: str, reason: str | None = None) -> RecoveryRecord:
    """Re-drive an exhausted recovery as a new run with a fresh attempt budget."""
    async with _Action("retry", ref, scope, store, reason) as act:
        act.recovery_id = await store.redrive(scope.merchant_id, ref)
    return await store.get_recovery(scope.merchant_id, ref)


async def apply_policy(
    store: Store,
    client: Client,
    scope: Scope,
    ref: str,
    reason: str | None = None,
    *,
    relay: OutboxRelay | None = None,
) -> RecoveryRecord:
    """Move a running recovery to the merchant's current policy version; its next attempt
    is scheduled again under it."""
    async with _Action("apply_policy", ref, scope, store, relay=relay) as act:
        policy = await store.current_policy(scope.merchant_id)
        act.reason = f"policy v{policy.version}" + (f": {reason}" if reason else "")
        rec, _ = await act.signal(client, names.SIGNAL_UPDATE_POLICY, policy)
    return rec


async def payment_method_updated(
    store: Store,
    client: Client,
    scope: Scope,
    ref: str,
    method: PaymentMethod,
    *,
    relay: OutboxRelay | None = None,
) -> RecoveryRecord:
    """The customer has a new card or method (any role of the merchant): the recovery
    switches to it and attempts now (within the card-network limits)."""
    recovery_id, handle = await open_recovery(client, store, scope, ref)
    update = PaymentMethodUpdate(payment_method=method, actor=scope.principal.actor)
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
        reason=f"{method.type} {method.id}",
        result="accepted",
    )
    return await store.get_recovery(scope.merchant_id, ref)


async def create_link(store: Store, settings: Settings, scope: Scope, ref: str) -> IssuedLink:
    """A signed retry link for the customer (any role of the merchant), valid
    LINK_TTL_SECONDS; the link row keeps who issued it. 404 unknown, 409 ended."""
    return await issue_link(store, settings, scope.merchant_id, ref, scope.principal.actor)
