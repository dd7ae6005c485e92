"""One-shot setup for a deployment: `python -m recovery.setup`.

Applies the SQL migrations and registers our custom search attributes in the Temporal
namespace. Safe to run again: both steps skip what is already there.
"""

from __future__ import annotations

import asyncio
import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from recovery.constants import SEARCH_ATTRIBUTES
from recovery.dbsetup import open_store
from recovery.logs import setup_logging
from recovery.settings import Settings, settings_or_exit
from recovery.temporal import connect_client

log = logging.getLogger("recovery.setup")


class SearchAttributeConflict(RuntimeError):
    """A search attribute of ours exists in the namespace with another type."""


async def register_search_attributes(client: Client) -> list[str]:
    """Register the search attributes the namespace lacks; returns the names added.

    Checks the types of those already there: the dev server accepts a re-registration with
    another type silently and keeps the old one, so listing and comparing is the only check.
    """
    wanted = {key.name: key.indexed_value_type for key in SEARCH_ATTRIBUTES}
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    existing = dict(listed.custom_attributes)
    conflicts = [
        f"{name} is {IndexedValueType.Name(existing[name])}, we need {kind.name}"
        for name, kind in wanted.items()
        if name in existing and existing[name] != kind.value
    ]
    if conflicts:
        raise SearchAttributeConflict(
            f"search attributes in namespace {client.namespace!r} have the wrong type: "
            + "; ".join(conflicts)
        )
    missing = {
        name: IndexedValueType.ValueType(kind.value)
        for name, kind in wanted.items()
        if name not in existing
    }
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
            )
        except RPCError as e:
            if e.status != RPCStatusCode.ALREADY_EXISTS:  # another process was first
                raise
    return sorted(missing)


async def setup(settings: Settings) -> None:
    store = await open_store(settings.database_url)
    await store.close()
    log.info("database migrations applied")
    added = await register_search_attributes(await connect_client(settings))
    log.info("search attributes registered: %s", ", ".join(added) or "all present")


def main() -> None:
    settings = settings_or_exit()
    setup_logging(settings.log_level, settings.log_format)
    asyncio.run(setup(settings))


if __name__ == "__main__":
    main()
