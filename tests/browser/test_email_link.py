"""The customer's e-mail, end to end in a real browser: a hard decline makes the recovery
e-mail a retry link (through a real SMTP server, the sink); the message's HTML, opened in
Chromium, loads nothing from anywhere; its button opens the pay page; paying through the
simulator ends the recovery `recovered`, and no reminder ever follows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Route

from scripts.mail_sink import MailSink
from tests.helpers import INGEST, eventually, failure_body
from tests.helpers.browser import Live, screenshot_on_failure


@pytest.fixture
def live_settings(sink: MailSink) -> dict[str, Any]:
    return {"smtp_url": sink.url, "mail_from": "Payments <payments@example.com>"}


async def test_the_emailed_link_pays_and_recovers_and_no_reminder_follows(
    live: Live, sink: MailSink, browser: Browser, tmp_path: Path
) -> None:
    body = failure_body(decline_code="stolen_card", amount=123456)
    body["customer"] = {"id": "cus_mail", "email": "carol@example.com"}
    ref = body["payment_ref"]
    assert (await live.http.post(INGEST, json=body, headers=live.auth())).status_code == 202

    async def one_message() -> Any:
        messages = sink.messages()
        return messages[0] if len(messages) == 1 else None

    message = await eventually(one_message, within=30, what="the retry-link e-mail")
    assert message["To"] == "carol@example.com"
    assert message["Subject"] == (
        "Action needed: your payment of 1,234.56 USD to Test Merchant did not go through"
    )
    html = message.get_body(("html",))
    assert html is not None
    mail_file = tmp_path / "message.html"
    mail_file.write_text(html.get_content())

    requested: list[str] = []
    page = await browser.new_page(viewport={"width": 390, "height": 844})  # a phone

    async def record(route: Route) -> None:
        requested.append(route.request.url)
        await route.continue_()

    await page.route("**/*", record)
    async with screenshot_on_failure(page, tmp_path, "email"):
        await page.goto(mail_file.as_uri())
        await page.get_by_role("heading", name="Your payment did not go through").wait_for()
        assert requested == [mail_file.as_uri()], "the e-mail loads nothing from anywhere"
        await page.get_by_role("link", name="Pay 1,234.56 USD").click()
        await page.get_by_role("heading", name="Complete your payment").wait_for()
        assert page.url.startswith(f"{live.base}/pay/retry/")
        await page.get_by_role("button", name="Pay 1,234.56 USD").click()
        await page.get_by_role("heading", name="Test checkout").wait_for()
        await page.get_by_role("button", name="Complete payment").click()
        await page.get_by_role("heading", name="Thank you").wait_for()

    async def recovered() -> dict[str, Any] | None:
        r = await live.http.get(f"/v1/recoveries/by_ref/{ref}", headers=live.auth())
        return r.json() if r.json()["status"] == "recovered" else None

    final = await eventually(recovered, within=30, what="the recovery recovered")
    assert final["ended_at"] is not None  # the workflow ended: no reminder timer is left
    r = await live.http.get("/v1/notifications", params={"ref": ref}, headers=live.auth())
    notes = r.json()["data"]
    assert [(n["kind"], n["status"], n["recipient"]) for n in notes] == [
        ("retry_link", "sent", "c***@example.com")
    ]
    assert notes[0]["link_id"] in {link["link_id"] for link in final["links"]}
    assert len(sink.messages()) == 1
    await page.close()
