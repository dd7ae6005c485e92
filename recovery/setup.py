"""One-shot setup for a deployment: `python -m recovery.setup`.

Applies the SQL migrations and registers our custom search attributes in the Temporal
namespace. Safe to run again: both steps skip what is already there.
"""

from __future__ import annotations

import asyncio
import logging

from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client

from recovery.constants import SEARCH_ATTRIBUTES
from recovery.dbsetup import open_store
from recovery.logs import setup_logging
from recovery.settings import Settings, get_settings
from recovery.temporal import connect_client

log = logging.getLogger("recovery.setup")


async def register_search_attributes(client: Client) -> list[str]:
    """Add the search attributes the namespace lacks; returns the names added."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    known = set(existing.custom_attributes) | set(existing.system_attributes)
    missing = {k.name: k.indexed_value_type for k in SEARCH_ATTRIBUTES if k.name not in known}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    return sorted(missing)


async def setup(settings: Settings) -> None:
    store = await open_store(settings.database_url)
    await store.close()
    log.info("database migrations applied")
    added = await register_search_attributes(await connect_client(settings))
    log.info("search attributes registered: %s", ", ".join(added) or "all present")


def main() -> None:
    settings = get_settings()
    setup_logging(settings.log_level)
    asyncio.run(setup(settings))


if __name__ == "__main__":
    main()
