"""The customer's retry page in a real browser (Debian's Chromium, headless, driven by
Playwright): a link sent by a real recovery, paid through the simulator's checkout, and the
expired and revoked pages. A screenshot of the page is saved under the test's temp dir when
a step fails."""

from __future__ import annotations

from pathlib import Path

import jwt
from playwright.async_api import Browser, Route

from recovery.link_tokens import AUDIENCE, ISSUER
from recovery.retry_links import notification_url
from tests.helpers import INGEST, eventually, failure_body
from tests.helpers.browser import Live, screenshot_on_failure


async def sent_link(live: Live, ref: str) -> str:
    """The link the workflow handed to the customer notification outbox."""

    async def note() -> str:
        link_id = await live.store.pool.fetchval(
            "SELECT link_id FROM customer_notifications WHERE payment_ref = $1", ref
        )
        assert link_id
        url = await notification_url(live.store, live.settings, link_id)
        assert url
        return url

    return await eventually(note, within=20)


async def status_of(live: Live, ref: str) -> str:
    r = await live.http.get(f"/v1/recoveries/by_ref/{ref}", headers=live.auth())
    return r.json()["status"]


async def test_customer_pays_through_the_link_and_the_recovery_ends_recovered(
    live: Live, browser: Browser, tmp_path: Path
) -> None:
    body = failure_body(decline_code="stolen_card", amount=123456)  # a hard decline
    ref = body["payment_ref"]
    assert (await live.http.post(INGEST, json=body, headers=live.auth())).status_code == 202
    url = await sent_link(live, ref)
    assert url.startswith(f"{live.base}/pay/retry/")

    page = await browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    async with screenshot_on_failure(page, tmp_path, "pay"):
        response = await page.goto(url)
        assert response is not None and response.status == 200
        await page.get_by_role("heading", name="Complete your payment").wait_for()
        assert await page.get_by_test_id("amount").inner_text() == "1,234.56 USD"
        await page.get_by_role("button", name="Pay 1,234.56 USD").click()
        await page.get_by_role("heading", name="Test checkout").wait_for()
        assert "/pay/simulator/" in page.url
        await page.get_by_role("button", name="Complete payment").click()
        await page.get_by_role("heading", name="Thank you").wait_for()

        async def recovered() -> bool:
            assert await status_of(live, ref) == "recovered"
            return True

        await eventually(recovered, within=20)
        again = await page.goto(url)
        assert again is not None and again.status == 410
        await page.get_by_role("heading", name="Already paid").wait_for()
        assert await page.locator("form").count() == 0
    await page.close()


async def test_expired_link_page(live: Live, browser: Browser, tmp_path: Path) -> None:
    token = jwt.encode(
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "order_1",
            "mid": live.merchant_id,
            "jti": "lnk_old",
            "iat": 1_700_000_000,
            "exp": 1_700_000_900,
        },
        live.settings.link_signing_secret.get_secret_value(),
        algorithm="HS256",
    )
    page = await browser.new_page()
    async with screenshot_on_failure(page, tmp_path, "expired"):
        response = await page.goto(f"{live.base}/pay/retry/{token}")
        assert response is not None and response.status == 410
        await page.get_by_role("heading", name="This link has expired").wait_for()
        assert await page.locator("form").count() == 0
        assert token not in await page.content()
    await page.close()


async def test_revoked_link_page_after_cancel(live: Live, browser: Browser, tmp_path: Path) -> None:
    body = failure_body()
    ref = body["payment_ref"]
    assert (await live.http.post(INGEST, json=body, headers=live.auth())).status_code == 202

    async def linked() -> str:
        r = await live.http.post(f"/v1/recoveries/by_ref/{ref}/link", headers=live.auth())
        assert r.status_code == 201, r.text
        return r.json()["url"]

    url = await eventually(linked)
    r = await live.http.post(
        f"/v1/recoveries/by_ref/{ref}/cancel", json={"reason": "test"}, headers=live.auth()
    )
    assert r.status_code == 200
    page = await browser.new_page()
    async with screenshot_on_failure(page, tmp_path, "revoked"):

        async def revoked() -> bool:
            response = await page.goto(url)
            assert response is not None and response.status == 410
            await page.get_by_role("heading", name="This link is no longer valid").wait_for(
                timeout=1000
            )
            return True

        await eventually(revoked, within=20)
        assert await page.locator("form").count() == 0
    await page.close()


async def test_api_docs_render_with_nothing_from_other_origins(
    live: Live, browser: Browser, tmp_path: Path
) -> None:
    """/docs is Swagger UI served by the app itself: it renders with no internet."""
    requested: list[str] = []
    page = await browser.new_page()

    async def only_our_origin(route: Route) -> None:
        requested.append(route.request.url)
        if route.request.url.startswith(f"{live.base}/"):
            await route.continue_()
        else:  # as on a machine without internet
            await route.abort()

    await page.route("**/*", only_our_origin)
    async with screenshot_on_failure(page, tmp_path, "docs"):
        response = await page.goto(f"{live.base}/docs")
        assert response is not None and response.status == 200
        await (
            page.locator(".swagger-ui .info .title")
            .filter(has_text="Payment recovery")
            .wait_for(timeout=15_000)
        )
        await page.locator(
            ".opblock-summary-path", has_text="/v1/events/payment_failed"
        ).first.wait_for()
    foreign = [url for url in requested if not url.startswith(f"{live.base}/")]
    assert not foreign, foreign
    assert any(url.endswith(".js") for url in requested), requested
