"""The worker writes its workflow modules' bytecode at start, even where Python would not.

Temporal's sandbox imports a workflow's module afresh for every run it starts; without
bytecode beside the source each of those imports compiles it from source again."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import pytest

from worker.main import compile_workflow_modules


def _module(where: Path) -> Path:
    where.mkdir()
    source = where / "steps.py"
    source.write_text("WAIT = 3\n")
    return source


def test_bytecode_is_written_even_when_python_would_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # PYTHONDONTWRITEBYTECODE=1
    source = _module(tmp_path / "flows")

    assert compile_workflow_modules(source.parent)

    cached = Path(importlib.util.cache_from_source(str(source)))
    assert cached.exists() and cached.stat().st_size > 0


def test_a_directory_it_cannot_write_is_a_warning_not_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = _module(tmp_path / "flows")
    (source.parent / "__pycache__").write_text("a file where the cache directory would go")

    with caplog.at_level(logging.WARNING, logger="recovery.worker"):
        assert not compile_workflow_modules(source.parent)

    assert "could not write the bytecode" in caplog.text


def test_the_real_workflow_modules_compile() -> None:
    assert compile_workflow_modules()
