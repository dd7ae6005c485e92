"""Versioned SQL migrations, applied by the app under an advisory lock."""

from __future__ import annotations

import re
from importlib import resources

import asyncpg

_LOCK_ID = 0x5EC0_7E41


def migration_files() -> list[tuple[int, str, str]]:
    out = []
    for entry in resources.files("recovery.migrations").iterdir():
        if m := re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name):
            out.append((int(m.group(1)), m.group(2), entry.read_text()))
    return sorted(out)


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply every migration not yet applied; safe to run from several processes at once."""
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied_now.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now
