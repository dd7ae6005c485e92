"""Browser tests: the API served on a real port (`live`) and headless Chromium (`browser`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, async_playwright
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from recovery.store import Store
from tests.helpers import add_merchant, eventually, free_port
from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS, CHROMIUM_PRESENT, Live
from tests.helpers.stack import stack_settings
from worker.main import build_worker


@pytest.fixture
def live_settings() -> dict[str, Any]:
    """More settings for `live` (a module that needs some overrides this fixture)."""
    return {}


@pytest.fixture
async def live(
    store: Store, pg_dsn: str, dev_env: WorkflowEnvironment, live_settings: dict[str, Any]
) -> AsyncIterator[Live]:
    """The API served by uvicorn on a real port, with a worker and the relay."""
    port = free_port()
    task_queue = f"tq-{uuid.uuid4()}"
    settings = stack_settings(
        pg_dsn,
        dev_env.client.service_client.config.target_host,
        task_queue,
        public_base_url=f"http://127.0.0.1:{port}",
        **live_settings,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    serving = asyncio.create_task(server.serve())
    merchant_id, key = await add_merchant(store)
    try:

        async def started() -> bool:
            return server.started

        await eventually(started)
        async with (
            build_worker(dev_env.client, store, task_queue, settings=settings),
            httpx.AsyncClient(base_url=settings.public_base_url) as http,
        ):
            yield Live(settings.public_base_url, http, store, settings, merchant_id, key)
    finally:
        server.should_exit = True
        await serving


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM_PRESENT:
        pytest.fail("Chromium is not installed: apt-get install chromium (.ci/run does)")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()
