"""Periodic housekeeping, run by a Temporal Schedule (no cron, no beat process)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from recovery import constants as names


@workflow.defn(name=names.MAINTENANCE_WORKFLOW)
class MaintenanceWorkflow:
    @workflow.run
    async def run(self) -> dict[str, int]:
        return await workflow.execute_activity(
            "prune_expired_records",
            result_type=dict[str, int],
            start_to_close_timeout=timedelta(minutes=5),
        )
