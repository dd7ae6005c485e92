"""The operator CLI (`python -m recovery.cli`) as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers.stack import TEST_CREDENTIALS_KEY


def cli(
    dsn: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The operator CLI on `dsn`, with the tests' CREDENTIALS_KEY unless `env` says otherwise."""
    return subprocess.run(
        [sys.executable, "-m", "recovery.cli", "--database-url", dsn, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CREDENTIALS_KEY": TEST_CREDENTIALS_KEY, **(env or {})},
    )
