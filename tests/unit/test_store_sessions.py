"""Pooled connections go back to the pool without a reset query (`recovery.store.db`): no
SQL of ours may leave session state on one. Only the migrations (a connection of their own)
take a session-level lock."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("recovery", "api", "activities", "worker", "workflows")
ALLOWED = {ROOT / "recovery" / "migrate.py"}

# What outlives a transaction on a connection: session settings, session advisory locks,
# LISTEN, cursors WITH HOLD, temporary tables, prepared statements by SQL.
SESSION_STATE = re.compile(
    r"""["']\s*SET\s+(?!LOCAL\b|TRANSACTION\b|CONSTRAINTS\b)"""
    r"|pg_advisory_lock\(|pg_advisory_lock_shared\(|pg_try_advisory_lock\("
    r"""|["']\s*(LISTEN|PREPARE|DECLARE)\b|WITH\s+HOLD|CREATE\s+TEMP|set_config\(""",
)  # the SQL here is written in capitals, as these keywords are


def test_no_sql_leaves_session_state_on_a_pooled_connection() -> None:
    found = [
        f"{path.relative_to(ROOT)}: {m.group(0)!r}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path not in ALLOWED
        for m in SESSION_STATE.finditer(path.read_text())
    ]
    assert found == []


def test_the_check_finds_what_it_looks_for() -> None:
    for sql in (
        '"SET statement_timeout = 0"',
        "'SELECT pg_advisory_lock(1)'",
        '"LISTEN recovery_outbox"',
        '"DECLARE c CURSOR WITH HOLD FOR SELECT 1"',
        '"CREATE TEMP TABLE t (x int)"',
        "\"SELECT set_config('a.b', 'c', false)\"",
    ):
        assert SESSION_STATE.search(sql), sql
    for sql in (
        '"UPDATE t SET x = 1"',
        '"SET LOCAL lock_timeout = 1000"',
        '"SELECT pg_advisory_xact_lock(1)"',
    ):
        assert not SESSION_STATE.search(sql), sql
