"""The operator CLI never guesses a database: `DATABASE_URL`, `--database-url`, or the
`make dev` stack running in this checkout (found through `.data/dev-stack.json`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from recovery import cli, devstack


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cwd and HOME with no dev stack, no database settings, and no way to connect."""
    for name in ("DATABASE_URL", "RECOVERY_DATA_DIR", "PGHOST", "PGPORT", "PGDATABASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the CLI tried to connect to a database: {args} {kwargs}")

    monkeypatch.setattr(asyncpg, "connect", refuse)
    monkeypatch.setattr(asyncpg, "create_pool", refuse)
    monkeypatch.setattr(cli, "open_store", refuse)
    return tmp_path


def test_without_database_url_or_dev_stack_it_stops_naming_database_url(
    nowhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["merchants", "create", "Acme Inc", "--json"])
    assert code != 0
    err = capsys.readouterr().err
    assert "DATABASE_URL" in err and "make dev" in err, err


def test_a_stale_dev_stack_file_is_not_used(
    nowhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = nowhere / ".data"
    data.mkdir()
    exited = subprocess.Popen(["true"])
    dead = exited.pid
    exited.wait()
    devstack.write_state(
        data, devstack.DevStackState("postgresql://x@127.0.0.1:1/x", "127.0.0.1:1", "", dead)
    )
    assert cli.main(["merchants", "list"]) != 0
    assert "DATABASE_URL" in capsys.readouterr().err


def test_a_running_dev_stack_is_found_from_anywhere_in_the_checkout(
    nowhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = nowhere / ".data"
    data.mkdir()
    dsn = "postgresql://postgres@127.0.0.1:1/dev"
    devstack.write_state(data, devstack.DevStackState(dsn, "127.0.0.1:1", "", os.getpid()))
    assert (data / devstack.STATE_FILE).stat().st_mode & 0o777 == 0o600
    sub = nowhere / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    seen: list[str] = []

    async def fake_open_store(url: str, **_: Any) -> Any:
        seen.append(url)
        raise ConnectionRefusedError("not really")

    monkeypatch.setattr(cli, "open_store", fake_open_store)
    assert cli.main(["merchants", "list"]) == 1
    assert seen == [dsn]
