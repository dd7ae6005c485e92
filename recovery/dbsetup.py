"""Open the store and bring its schema up to date."""

from __future__ import annotations

from recovery.migrate import migrate
from recovery.settings import DatabaseNotConfigured
from recovery.store import Store


async def open_store(dsn: str, *, min_size: int = 0, max_size: int = 10) -> Store:
    if not dsn:
        # An empty DSN would make the driver guess a server (localhost:5432): never that.
        raise DatabaseNotConfigured("DATABASE_URL is not set: set it to the service's database")
    store = await Store.connect(dsn, min_size=min_size, max_size=max_size)
    async with store.pool.acquire() as conn:
        await migrate(conn)
    return store
