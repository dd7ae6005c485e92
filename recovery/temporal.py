"""The Temporal client, built one way for the API, the worker and the tools."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.runtime import Runtime

from recovery import constants as names
from recovery.models import FailureEvent, RecoveryInput
from recovery.settings import Settings


async def connect_client(
    settings: Settings, *, lazy: bool = False, runtime: Runtime | None = None
) -> Client:
    """Connect to Temporal; `lazy` defers the connection to the first call (the API uses
    it so that it starts, and keeps taking events, while Temporal is down)."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        lazy=lazy,
        runtime=runtime,
    )


async def deliver_failure(
    client: Client,
    event: FailureEvent,
    *,
    task_queue: str,
    rpc_timeout: timedelta | None = None,
) -> None:
    """Signal-with-start the payment's recovery workflow with one failure event.

    Starts a run when none is open (also after an earlier run ended), else signals the open
    one; the workflow ignores an event id it has already seen, so redelivery is harmless.
    """
    await client.start_workflow(
        names.RECOVERY_WORKFLOW,
        RecoveryInput(merchant_id=event.merchant_id, payment_ref=event.payment_ref),
        id=names.workflow_id_for(event.merchant_id, event.payment_ref),
        task_queue=task_queue,
        start_signal=names.SIGNAL_PAYMENT_FAILED,
        start_signal_args=[event],
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(names.SA_MERCHANT_ID, event.merchant_id),
                SearchAttributePair(names.SA_PAYMENT_REF, event.payment_ref),
                SearchAttributePair(names.SA_PSP, event.psp),
                SearchAttributePair(names.SA_AMOUNT_MINOR, event.amount),
                SearchAttributePair(names.SA_RECOVERY_STATUS, "active"),
                SearchAttributePair(names.SA_ATTEMPT_COUNT, 0),
            ]
        ),
        memo={
            "amount": event.amount,
            "currency": event.currency,
            "customer": event.customer.id,
            "recovery_id": event.recovery_id,
        },
        rpc_timeout=rpc_timeout,
    )


async def start_once(
    client: Client,
    workflow_type: str,
    workflow_id: str,
    arg: BaseModel,
    *,
    task_queue: str,
    rpc_timeout: timedelta | None = None,
) -> None:
    """Start a workflow the outbox asks for (a duplicate payment's refund, a pending
    payment's watcher) once per id; one already started is as good (the relay may deliver
    the same row twice)."""
    try:
        await client.start_workflow(
            workflow_type,
            arg,
            id=workflow_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            rpc_timeout=rpc_timeout,
        )
    except WorkflowAlreadyStartedError:
        pass
