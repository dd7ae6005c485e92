"""Open the store and bring its schema up to date."""

from __future__ import annotations

import asyncpg

from recovery.migrate import migrate
from recovery.settings import DatabaseNotConfigured
from recovery.store import Store


async def open_store(dsn: str, *, min_size: int = 0, max_size: int = 10) -> Store:
    if not dsn:
        # An empty DSN would make the driver guess a server (localhost:5432): never that.
        raise DatabaseNotConfigured("DATABASE_URL is not set: set it to the service's database")
    store = await Store.connect(dsn, min_size=min_size, max_size=max_size)
    # a connection of its own: migrate() holds a session-level lock, and pooled connections
    # are not reset of session state on release (`recovery.store.db`)
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await migrate(conn)
        finally:
            await conn.close()
    except BaseException:
        await store.close()
        raise
    return store
