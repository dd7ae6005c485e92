"""Fixtures and hooks of the reliability suite.

Every test runs against servers of its own (a Temporal dev server on a database file, and
for the Postgres outage an embedded PostgreSQL) that it may stop and start; everything
listens on 127.0.0.1. Before a test's Temporal server stops for good, the recovery workflow
histories it holds go to the bank that `test_replay_suite_histories.py` replays last.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.servers import TemporalDevServer
from tests.reliability import support
from tests.reliability.support import serving_temporal

REPLAY_MODULE = "test_replay_suite_histories.py"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "heavy: the largest reliability variants (CI runs them)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The replay of the suite's histories runs after every other test."""
    last = [i for i in items if i.path.name == REPLAY_MODULE]
    if last:
        items[:] = [i for i in items if i.path.name != REPLAY_MODULE] + last


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not support.FIGURES:
        return
    terminalreporter.section("reliability figures")
    for test in support.FIGURES:
        terminalreporter.write_line(support.summary_line(test))
    terminalreporter.write_line(f"figures as JSON: {support.figures_file()}")


@pytest.fixture
async def temporal_server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[TemporalDevServer]:
    async with serving_temporal(tmp_path, request.node.name) as server:
        yield server
