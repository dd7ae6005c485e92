"""The console in a real browser (Debian's Chromium, headless, driven by Playwright): a
support agent signs in, finds a recovery, reads its story and cancels it with a reason; a
merchant-role key sees no support action and its forged post is refused; a form without its
CSRF token is refused; sign-out and expiry end the session. No page needs JavaScript, and
none runs any (the CSP forbids it).

Screenshots of the overview and a recovery page (phone and desktop) are saved for a person to
look at: under `$CONSOLE_SCREENSHOTS` when set, else under the test's temp dir (artifacts,
never committed).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Page

from recovery.auth import generate_key, register_key
from tests.helpers import INGEST, eventually, failure_body
from tests.helpers.browser import Live, screenshot_on_failure

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


async def scheduled(live: Live, **kw: object) -> str:
    """A recovery whose first attempt waits on its cooldown; its payment ref."""
    body = failure_body(**kw)  # type: ignore[arg-type]
    r = await live.http.post(INGEST, json=body, headers=live.auth())
    assert r.status_code == 202, r.text
    ref: str = body["payment_ref"]

    async def has_next() -> bool:
        rec = await live.store.get_recovery(live.merchant_id, ref)
        return rec.next_attempt_at is not None

    await eventually(has_next, within=20)
    return ref


async def session_cookie(context: BrowserContext) -> str | None:
    for cookie in await context.cookies():
        if cookie["name"] == "__Host-console":
            return cookie["value"]
    return None


async def sign_in(
    browser: Browser, live: Live, key: str, viewport: dict
) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport=viewport, java_script_enabled=False)
    page = await context.new_page()
    await page.goto(f"{live.base}/console")
    await page.get_by_role("heading", name="Sign in to the recovery console").wait_for()
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("heading", name="Overview").wait_for()
    return context, page


async def test_support_agent_finds_reads_and_cancels_a_recovery(
    live: Live, browser: Browser, tmp_path: Path
) -> None:
    ref = await scheduled(live, decline_code="insufficient_funds", amount=4999)
    other = await scheduled(live, decline_code="insufficient_funds")
    out = shots(tmp_path)
    context, page = await sign_in(browser, live, live.key, DESKTOP)
    async with screenshot_on_failure(page, tmp_path, "console"):
        # the key itself is nowhere in the browser: only a session cookie
        cookies = await context.cookies()
        assert [c["name"] for c in cookies] == ["__Host-console"]
        assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
        assert live.key not in cookies[0]["value"]
        await page.get_by_role("heading", name="Open recoveries by category").wait_for()
        await page.screenshot(path=str(out / "overview-desktop.png"), full_page=True)

        await page.get_by_role("link", name="Recoveries", exact=True).click()
        await page.get_by_label("Payment ref, customer id or e-mail").fill(ref)
        await page.get_by_role("button", name="Search").click()
        table = page.get_by_test_id("recoveries")
        await table.wait_for()
        assert ref in await table.inner_text()
        assert other not in await table.inner_text()
        await page.get_by_role("link", name=ref).click()

        # the story: the failure, its classification and rule, the next attempt and why
        await page.get_by_role("heading", name=ref).wait_for()
        assert "funds" in await page.get_by_test_id("classification").inner_text()
        assert await page.get_by_test_id("rule").inner_text()
        assert "49.99 USD" in await page.content()
        await page.screenshot(path=str(out / "recovery-desktop.png"), full_page=True)

        await page.get_by_label("Reason", exact=True).fill("customer paid by bank transfer")
        await page.get_by_role("button", name="Cancel recovery").click()
        await page.get_by_test_id("flash").wait_for()
        assert "Cancelled" in await page.get_by_test_id("flash").inner_text()
        assert "cancelled" in await page.get_by_test_id("status").inner_text()
        audit = await page.get_by_test_id("audit").inner_text()
        assert "customer paid by bank transfer" in audit and "accepted" in audit
        assert "support:" in audit
        # ended: no action left to take
        assert await page.get_by_role("button", name="Cancel recovery").count() == 0
    rec = await live.store.get_recovery(live.merchant_id, ref)
    assert rec.status == "cancelled"
    assert (await live.store.get_recovery(live.merchant_id, other)).status == "active"

    # the same pages on a phone, for a person to look at
    phone = await context.new_page()
    await phone.set_viewport_size(PHONE)
    await phone.goto(f"{live.base}/console")
    await phone.screenshot(path=str(out / "overview-phone.png"), full_page=True)
    await phone.goto(f"{live.base}/console/recoveries/{ref}")
    await phone.screenshot(path=str(out / "recovery-phone.png"), full_page=True)
    # nothing wider than the phone's screen but the tables, which scroll in their frame
    assert await phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await context.close()
    for name in ("overview-desktop", "recovery-desktop", "overview-phone", "recovery-phone"):
        assert (out / f"{name}.png").stat().st_size > 10_000


async def test_merchant_role_sees_no_support_action_and_its_forged_post_is_refused(
    live: Live, browser: Browser, tmp_path: Path
) -> None:
    ref = await scheduled(live)
    key = generate_key()
    await register_key(live.store, live.merchant_id, "merchant", key)
    context, page = await sign_in(browser, live, key, PHONE)
    async with screenshot_on_failure(page, tmp_path, "merchant"):
        await page.goto(f"{live.base}/console/recoveries/{ref}")
        await page.get_by_role("heading", name=ref).wait_for()
        assert (await page.get_by_test_id("role").inner_text()).lower() == "merchant"
        for button in ("Cancel recovery", "Expedite", "Pause", "Apply current policy"):
            assert await page.get_by_role("button", name=button).count() == 0, button
        assert await page.get_by_role("button", name="Issue a link").count() == 1
        assert (
            "can look and issue links, not act"
            in await page.get_by_test_id("no-actions").inner_text()
        )

        # a forged form (the session's own CSRF token, the cancel action) is refused
        token = await page.locator('input[name="csrf_token"]').first.get_attribute("value")
        r = await context.request.post(
            f"{live.base}/console/recoveries/{ref}/cancel",
            form={"csrf_token": token or "", "reason": "forged"},
            max_redirects=0,
        )
        assert r.status == 403
        assert "support role" in await r.text()
    assert (await live.store.get_recovery(live.merchant_id, ref)).status == "active"
    audit = await live.store.audit_entries(live.merchant_id, ref, 10)
    assert [(e.action, e.actor_role, e.result) for e in audit] == [
        ("cancel", "merchant", "rejected: forbidden")
    ]
    await context.close()


async def test_a_form_without_its_csrf_token_is_refused(
    live: Live, browser: Browser, tmp_path: Path
) -> None:
    ref = await scheduled(live)
    context, page = await sign_in(browser, live, live.key, DESKTOP)
    async with screenshot_on_failure(page, tmp_path, "csrf"):
        await page.goto(f"{live.base}/console/recoveries/{ref}")
        await page.get_by_role("button", name="Cancel recovery").wait_for()
        # the cancel form posted with the session's cookie but without its token
        r = await context.request.post(
            f"{live.base}/console/recoveries/{ref}/cancel",
            form={"reason": "no token"},
            max_redirects=0,
        )
        assert r.status == 403
        assert "expired or did not come from this console" in await r.text()
    assert (await live.store.get_recovery(live.merchant_id, ref)).status == "active"
    await context.close()


async def test_sign_out_and_expiry_end_the_session(
    live: Live, browser: Browser, tmp_path: Path
) -> None:
    context, page = await sign_in(browser, live, live.key, DESKTOP)
    async with screenshot_on_failure(page, tmp_path, "signout"):
        session_id = await session_cookie(context)
        await page.get_by_role("button", name="Sign out").click()
        await page.get_by_text("You are signed out.").wait_for()
        assert await session_cookie(context) is None
        assert not await live.store.pool.fetchval(
            "SELECT count(*) FROM console_sessions WHERE id_hash = $1",
            hashlib.sha256(session_id.encode()).digest(),
        )
        # the old session id, sent again, opens nothing
        await context.add_cookies(
            [
                {
                    "name": "__Host-console",
                    "value": session_id,
                    "domain": "127.0.0.1",
                    "path": "/",
                    "secure": True,
                    "httpOnly": True,
                    "sameSite": "Strict",
                }
            ]
        )
        await page.goto(f"{live.base}/console")
        await page.get_by_role("heading", name="Sign in to the recovery console").wait_for()

        # an expired session is refused
        await page.get_by_label("API key").fill(live.key)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("heading", name="Overview").wait_for()
        session_id = await session_cookie(context)
        assert session_id is not None
        await live.store.pool.execute(
            "UPDATE console_sessions SET expires_at = now() - interval '1 second'"
            " WHERE id_hash = $1",
            hashlib.sha256(session_id.encode()).digest(),
        )
        await page.goto(f"{live.base}/console/recoveries")
        await page.get_by_text("Your session has ended. Sign in again.").wait_for()
    await context.close()
