"""Workflow code reads no clock, no randomness, no environment, no file and no network.

Temporal's sandbox enforces this at run time only in the modules it imports afresh for each
run, and the worker passes every module workflow code runs through it (`worker.main.
WORKFLOW_RUNNER`: the workflows, their step modules, and the core modules they import:
`recovery.policy`'s `decide`, the models, the constants), so nothing checks them at run time.
This test checks all of them, statically, with
ruff's banned-API rule (it resolves aliases and `from` imports): every module of ours that
`workflows` imports, directly or not (found by import-linter's graph library, so a new module
is covered the day a workflow imports it). import-linter's contract keeps the store, the PSP
adapters and the settings out of the same modules.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("workflows", "recovery", "activities")

BANNED = {
    "datetime.datetime.now": "the clock: use workflow.now()",
    "datetime.datetime.utcnow": "the clock: use workflow.now()",
    "datetime.datetime.today": "the clock: use workflow.now()",
    "datetime.date.today": "the clock: use workflow.now()",
    "time": "the clock: use workflow.now() / workflow.time()",
    "random": "randomness: use workflow.random()",
    "secrets": "randomness: use workflow.random()",
    "uuid.uuid1": "randomness: use workflow.uuid4()",
    "uuid.uuid4": "randomness: use workflow.uuid4()",
    "os": "the environment: settings reach a workflow through its input or an activity",
    "pathlib": "files: read them in an activity",
    "socket": "the network: call it from an activity",
    "threading": "threads: a workflow is one deterministic coroutine",
    "subprocess": "processes: run them from an activity",
}


def workflow_modules() -> list[Path]:
    """The source of every module of ours that workflow code runs."""
    graph = grimp.build_graph(*PACKAGES)
    found: set[str] = set()
    for module in graph.modules:
        if module == "workflows" or module.startswith("workflows."):
            found |= {module} | graph.find_upstream_modules(module)
    paths = []
    for module in sorted(found):
        base = ROOT.joinpath(*module.split("."))
        paths.append(base / "__init__.py" if base.is_dir() else base.with_suffix(".py"))
    return paths


def banned_uses(paths: list[Path], config_dir: Path) -> list[str]:
    """`path:line: message` for every use of a banned API in `paths`."""
    lines = ["[lint]", 'select = ["TID251"]', "[lint.flake8-tidy-imports.banned-api]"]
    lines += [f"{json.dumps(name)}.msg = {json.dumps(why)}" for name, why in BANNED.items()]
    config = config_dir / "determinism.toml"
    config.write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--config",
            str(config),
            "--no-cache",
            "--output-format",
            "json",
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: findings; anything else: ruff failed
    return [
        f"{f['filename']}:{f['location']['row']}: {f['message']}" for f in json.loads(done.stdout)
    ]


def test_the_modules_checked_include_the_passed_through_ones() -> None:
    checked = {p.relative_to(ROOT).as_posix() for p in workflow_modules()}
    assert {
        "workflows/recovery.py",
        "workflows/charging.py",
        "workflows/recovery_base.py",
        "recovery/policy.py",
        "recovery/models.py",
    } <= checked
    assert "recovery/store/__init__.py" not in checked  # import-linter keeps it out


def test_workflow_code_uses_no_clock_randomness_environment_or_io(tmp_path: Path) -> None:
    assert banned_uses(workflow_modules(), tmp_path) == []


@pytest.mark.parametrize(
    ("line", "banned"),
    [
        ("from datetime import datetime\nx = datetime.now()\n", "datetime.datetime.now"),
        ("import datetime as dt\nx = dt.date.today()\n", "datetime.date.today"),
        ("import time\nx = time.monotonic()\n", "time"),
        ("from random import random\nx = random()\n", "random"),
        ("from uuid import uuid4\nx = uuid4()\n", "uuid.uuid4"),
        ("import os\nx = os.environ.get('X')\n", "os"),
    ],
)
def test_the_check_finds_each_kind_of_use(tmp_path: Path, line: str, banned: str) -> None:
    module = tmp_path / "steps.py"
    module.write_text(line)
    found = banned_uses([module], tmp_path)
    assert len(found) == 1 and f"`{banned}` is banned" in found[0], found
