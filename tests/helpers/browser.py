"""Browser tests' helpers: Debian's Chromium (headless, driven by Playwright), the API served
on a real port (`Live`), screenshots of a failed step."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from playwright.async_api import Page

from recovery.settings import Settings
from recovery.store import Store

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_PRESENT = Path(CHROMIUM).exists()
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Live:
    base: str
    http: httpx.AsyncClient
    store: Store
    settings: Settings
    merchant_id: str
    key: str

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@contextlib.asynccontextmanager
async def screenshot_on_failure(page: Page, tmp_path: Path, name: str) -> AsyncIterator[None]:
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            await page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
        raise
