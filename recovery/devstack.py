"""Where a running `make dev` stack says how to reach it, so that tools find it by themselves.

The dev launcher (`scripts/dev.py`) writes `<data dir>/dev-stack.json` (mode 0600) once the
stack is up and removes it when it stops; the operator CLI reads it when `DATABASE_URL` is
not set. The data dir is `RECOVERY_DATA_DIR`, else the first `.data/` holding that file in the
current directory or one above it (the checkout, wherever in it the CLI is run).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_FILE = "dev-stack.json"
CREDENTIALS_KEY_FILE = "credentials-key"
"""the dev stack's CREDENTIALS_KEY (mode 0600), which the CLI beside it uses too"""
DATA_DIR_NAME = ".data"


@dataclass(frozen=True)
class DevStackState:
    database_url: str
    temporal_address: str
    api_url: str
    pid: int
    """the launcher's process id: a file whose launcher is gone is stale"""


def write_state(data_dir: Path, state: DevStackState) -> None:
    path = data_dir / STATE_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(state), f)
    path.chmod(0o600)


def clear_state(data_dir: Path) -> None:
    (data_dir / STATE_FILE).unlink(missing_ok=True)


def find_data_dir(start: Path) -> Path | None:
    """The `.data/` with a state file in `start` or the nearest directory above it."""
    for directory in (start, *start.parents):
        if (directory / DATA_DIR_NAME / STATE_FILE).is_file():
            return directory / DATA_DIR_NAME
    return None


def read_state(data_dir: Path) -> DevStackState | None:
    """The state of the stack running on `data_dir`; None when none runs there."""
    try:
        raw = json.loads((data_dir / STATE_FILE).read_text())
        state = DevStackState(**raw)
    except (OSError, ValueError, TypeError):
        return None
    return state if _alive(state.pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
