"""The outbox relay: hands committed failure events to their recovery workflows, and the
other rows of the outbox to theirs (refunds, watchers, receipts, signals for a running
recovery, and the wakes of merchant webhook endpoints: one per endpoint per batch).

Runs inside each API process. It wakes on LISTEN/NOTIFY right after an ingest commits, and
also sweeps every few seconds, so nothing waits on a lost notification. Rows are claimed
with FOR UPDATE SKIP LOCKED, so several API replicas relay side by side without delivering
a row twice at once; a row is marked delivered only after Temporal accepted the
signal-with-start, and is retried with backoff while Temporal is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta

import asyncpg
from pydantic import BaseModel
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from recovery.constants import (
    OUTBOX_START_RECEIPT,
    OUTBOX_START_REFUND,
    OUTBOX_START_WATCH,
    OUTBOX_START_WEBHOOK,
    OUTBOX_WAKE_WEBHOOKS,
    RECEIPT_WORKFLOW,
    REFUND_WORKFLOW,
    SIGNAL_PAYMENT_FAILED,
    SIGNAL_PAYMENT_METHOD_UPDATED,
    SIGNAL_PAYMENT_SUCCEEDED,
    SIGNAL_WEBHOOKS_QUEUED,
    WATCH_WORKFLOW,
    WEBHOOK_DELIVERY_WORKFLOW,
    WEBHOOK_ENDPOINT_WORKFLOW,
)
from recovery.errors import Unavailable
from recovery.models import (
    PaymentLookup,
    PaymentMethodUpdate,
    PaymentSucceeded,
    RefundRequest,
    SendNotification,
    WebhookDeliveryRequest,
    WebhookEndpointInput,
)
from recovery.store import OUTBOX_CHANNEL, OutboxRow, Store
from recovery.temporal import deliver_failure, start_once

log = logging.getLogger("recovery.relay")


STARTS: dict[str, tuple[str, type[BaseModel]]] = {
    OUTBOX_START_REFUND: (REFUND_WORKFLOW, RefundRequest),
    OUTBOX_START_WATCH: (WATCH_WORKFLOW, PaymentLookup),
    OUTBOX_START_WEBHOOK: (WEBHOOK_DELIVERY_WORKFLOW, WebhookDeliveryRequest),
    OUTBOX_START_RECEIPT: (RECEIPT_WORKFLOW, SendNotification),
}
"""Outbox rows that start a workflow of their own: (workflow type, its argument's model)."""

RUNNING_SIGNALS: dict[str, type[BaseModel]] = {
    SIGNAL_PAYMENT_SUCCEEDED: PaymentSucceeded,
    SIGNAL_PAYMENT_METHOD_UPDATED: PaymentMethodUpdate,
}
"""Outbox signals for a running recovery, by name, with their payload's type."""


class OutboxRelay:
    def __init__(
        self,
        store: Store,
        client: Client,
        *,
        dsn: str,
        task_queue: str,
        sweep_seconds: float = 2.0,
        batch_size: int = 100,
        rpc_timeout: timedelta = timedelta(seconds=5),
    ) -> None:
        self._store = store
        self._client = client
        self._dsn = dsn
        self._task_queue = task_queue
        self._sweep = sweep_seconds
        self._batch = batch_size
        self._rpc_timeout = rpc_timeout
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def _deliver(self, rows: Sequence[OutboxRow]) -> dict[int, str | None]:
        # one wake per endpoint in a batch, however many of its deliveries were queued
        wakes: dict[str, asyncio.Future[None]] = {}

        async def one(row: OutboxRow) -> str | None:
            try:
                if row.signal == OUTBOX_WAKE_WEBHOOKS:
                    if row.workflow_id not in wakes:
                        wakes[row.workflow_id] = asyncio.ensure_future(self._wake_endpoint(row))
                    await wakes[row.workflow_id]
                elif row.signal == SIGNAL_PAYMENT_FAILED:
                    await deliver_failure(
                        self._client,
                        row.event,
                        task_queue=self._task_queue,
                        rpc_timeout=self._rpc_timeout,
                    )
                elif row.signal in STARTS:
                    workflow_type, arg = STARTS[row.signal]
                    await start_once(
                        self._client,
                        workflow_type,
                        row.workflow_id,
                        arg.model_validate(row.payload),
                        task_queue=self._task_queue,
                        rpc_timeout=self._rpc_timeout,
                    )
                else:
                    await self._signal_running(row)
                return None
            except Exception as e:  # any failure: keep the row, retry later
                return f"{type(e).__name__}: {e}"

        results = await asyncio.gather(*(one(r) for r in rows))
        return {row.id: err for row, err in zip(rows, results, strict=True)}

    async def _wake_endpoint(self, row: OutboxRow) -> None:
        """Signal-with-start the endpoint's delivery workflow: its queue has work."""
        await self._client.start_workflow(
            WEBHOOK_ENDPOINT_WORKFLOW,
            WebhookEndpointInput.model_validate(row.payload),
            id=row.workflow_id,
            task_queue=self._task_queue,
            start_signal=SIGNAL_WEBHOOKS_QUEUED,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            rpc_timeout=self._rpc_timeout,
        )

    async def _signal_running(self, row: OutboxRow) -> None:
        """Signal the running recovery; none running (it ended) means nothing to do."""
        handle = self._client.get_workflow_handle(row.workflow_id)
        try:
            await handle.signal(
                row.signal,
                RUNNING_SIGNALS[row.signal].model_validate(row.payload),
                rpc_timeout=self._rpc_timeout,
            )
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:
                raise
            if await self._store.has_open_recovery(row.workflow_id):
                raise  # its run is not started yet: try again after the failure's row
            log.info("outbox: %s for %s: recovery already ended", row.signal, row.workflow_id)

    async def start_now(self, workflow_id: str) -> bool:
        """Start `workflow_id`'s run now, from its oldest pending failure (a support action
        right after ingest), as a pass of the relay would: claimed FOR UPDATE SKIP LOCKED, so
        a relay delivering it at this moment is not doubled (then it is not ours: False).
        True when this call delivered it; False when there was none to deliver or Temporal
        did not take it (the row is retried as any other)."""
        delivered, _ = await self._store.relay_outbox(
            1, self._deliver, first_failure_of=workflow_id
        )
        return delivered > 0

    async def relay_once(self) -> tuple[int, int]:
        """Relay pending rows until none is due; returns (delivered, failed)."""
        delivered = failed = 0
        while True:
            ok, bad = await self._store.relay_outbox(self._batch, self._deliver)
            delivered, failed = delivered + ok, failed + bad
            if bad:
                log.warning("outbox: %d events not yet accepted by Temporal; will retry", bad)
            if ok + bad < self._batch or bad:
                return delivered, failed

    async def _listen(self) -> None:
        """Keep a LISTEN connection open; reconnect when Postgres comes back."""
        while not self._stopping:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(OUTBOX_CHANNEL, lambda *_: self._wake.set())
                self._wake.set()  # catch up on anything committed while we were away
                while not self._stopping:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(10 * self._sweep):
                            await lost.wait()
                    if lost.is_set():
                        break
                    await conn.fetchval("SELECT 1")  # a dead socket raises here
            except Exception as e:  # Postgres away or the socket broke: reconnect soon
                log.info("outbox listener reconnecting: %s", type(e).__name__)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(self._sweep)

    async def _run(self) -> None:
        listener = asyncio.create_task(self._listen())
        try:
            while not self._stopping:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._sweep):
                        await self._wake.wait()
                self._wake.clear()
                try:
                    await self.relay_once()
                except Unavailable:
                    log.warning("outbox: database unavailable; will retry")
                except Exception:
                    log.exception("outbox relay pass failed; will retry")
        finally:
            listener.cancel()
            await _ended(listener, "outbox listener")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop relaying. Bounded: the loops also stop on `_stopping`, in case a cancel is
        lost (Python 3.11's `wait_for`, inside asyncpg's pool, may swallow one), and a task
        that still does not end in time is left behind with a warning, never waited for."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await _ended(self._task, "outbox relay")


async def _ended(task: asyncio.Task[None], what: str, within: float = 10.0) -> None:
    """Wait (at most `within` seconds) for a cancelled task to end; its outcome is dropped."""
    done, _ = await asyncio.wait({task}, timeout=within)
    if not done:
        log.warning("%s did not stop within %.0f s of its cancel: left behind", what, within)
        return
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
