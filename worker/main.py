"""The Temporal worker process: `python -m worker`."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
)
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.notifications import NotificationActivities
from activities.recovery import MaintenanceActivities, RecoveryActivities
from activities.webhooks import WebhookActivities
from recovery import constants as names
from recovery.dbsetup import open_store
from recovery.logs import mask_secrets_in, setup_logging
from recovery.psp.dispatcher import PSPDispatcher
from recovery.settings import Settings, settings_or_exit
from recovery.store import Store
from recovery.temporal import connect_client
from workflows.maintenance import MaintenanceWorkflow
from workflows.pending import WatchPendingPaymentWorkflow
from workflows.receipts import CustomerReceiptWorkflow
from workflows.recovery import PaymentRecoveryWorkflow
from workflows.refunds import RefundDuplicatePaymentWorkflow
from workflows.webhooks import WebhookDeliveryWorkflow, WebhookEndpointWorkflow

log = logging.getLogger("recovery.worker")

MAINTENANCE_EVERY = timedelta(hours=1)

WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows")
)
"""Temporal's sandbox, with our workflow modules imported once per worker, not afresh for
every run: that re-import cost the worker a fifth of its CPU for each new recovery (12.0 vs
15.0 ms) and 86 MiB of memory on the bench (`bench/RESULTS.md`). The price is the sandbox's
run-time checks in those modules (it checks nothing in a passed-through module), which were
already off in the step and core modules they import: `tests/unit/
test_workflow_determinism.py` checks all of them statically instead, every code path, not
only those a run happens to execute. They keep no state between runs (constants and classes;
a run's state is its instance's). The replay tests run the same runner."""


def build_worker(
    client: Client,
    store: Store,
    task_queue: str,
    psps: PSPDispatcher | None = None,
    settings: Settings | None = None,
) -> Worker:
    # without settings (tests): development defaults, the simulator included
    tuning = settings or Settings(environment="development", allow_simulator=True)
    mask_secrets_in(tuning)
    recovery = RecoveryActivities(store, psps or PSPDispatcher(store, tuning), tuning)
    maintenance = MaintenanceActivities(store)
    webhooks = WebhookActivities(store, tuning)
    notifications = NotificationActivities(store, tuning)
    return Worker(
        client,
        task_queue=task_queue,
        max_concurrent_activities=tuning.worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=tuning.worker_max_concurrent_workflow_tasks,
        max_cached_workflows=tuning.worker_max_cached_workflows,
        # On SIGTERM, activities in flight get this long to finish before they are cancelled.
        graceful_shutdown_timeout=timedelta(seconds=tuning.worker_graceful_shutdown_seconds),
        workflow_runner=WORKFLOW_RUNNER,
        workflows=[
            PaymentRecoveryWorkflow,
            RefundDuplicatePaymentWorkflow,
            WatchPendingPaymentWorkflow,
            WebhookEndpointWorkflow,
            WebhookDeliveryWorkflow,
            CustomerReceiptWorkflow,
            MaintenanceWorkflow,
        ],
        activities=[
            recovery.classify_failure,
            recovery.begin_recovery,
            recovery.recovery_is_open,
            recovery.load_retry_policy,
            recovery.count_card_attempts,
            recovery.reserve_card_attempt,
            notifications.issue_retry_link,
            notifications.send_customer_email,
            recovery.check_payment_status,
            recovery.revoke_retry_links,
            recovery.save_recovery_state,
            recovery.finish_recovery,
            recovery.charge_payment,
            recovery.find_attempt_charge,
            recovery.refund_duplicate_payment,
            recovery.check_refund,
            maintenance.prune_expired_records,
            webhooks.deliver_queued_webhooks,
            webhooks.deliver_webhook,
        ],
    )


async def ensure_maintenance_schedule(client: Client, task_queue: str) -> None:
    """Create the housekeeping schedule, or bring an existing one up to date (a deployment
    may have moved to another task queue or interval)."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            names.MAINTENANCE_WORKFLOW,
            id=f"{names.MAINTENANCE_SCHEDULE_ID}-run",
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=MAINTENANCE_EVERY)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(names.MAINTENANCE_SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(names.MAINTENANCE_SCHEDULE_ID)
        await handle.update(lambda _: ScheduleUpdate(schedule=schedule))


async def run_worker(settings: Settings) -> None:
    store = await open_store(settings.database_url, max_size=settings.database_pool_max)
    runtime = None
    if settings.worker_metrics_address:
        runtime = Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(bind_address=settings.worker_metrics_address)
            )
        )
    while True:
        try:
            client = await connect_client(settings, runtime=runtime)
            break
        except RuntimeError as e:  # the SDK's "failed client connect"
            log.warning("Temporal at %s not reachable (%s); retrying", settings.temporal_address, e)
            await asyncio.sleep(2)
    await ensure_maintenance_schedule(client, settings.temporal_task_queue)
    worker = build_worker(client, store, settings.temporal_task_queue, settings=settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %s", settings.temporal_task_queue)
    async with worker:
        await stop.wait()
    await store.close()


def main() -> None:
    settings = settings_or_exit()
    setup_logging(settings.log_level, settings.log_format)
    asyncio.run(run_worker(settings))


if __name__ == "__main__":
    main()
