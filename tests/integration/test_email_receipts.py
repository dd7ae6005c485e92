"""Receipts: a merchant whose policy sends them has the customer who paid through their
e-mailed link (the simulator's checkout) receive a receipt once the recovery ended
`recovered`, sent after the end by a workflow of its own; no receipt for a payment our own
charge took, nor when the policy does not ask for one (the default). Through the real
workflow, the API's pay page and checkout, and a real SMTP server (the dev sink)."""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

from recovery.constants import receipt_workflow_id
from recovery.store import Store
from scripts.mail_sink import MailSink
from tests.helpers import INGEST, Stack, add_merchant, eventually, failure_body
from workflows.receipts import CustomerReceiptWorkflow

LINK = re.compile(r"/pay/retry/[A-Za-z0-9._~-]+")


async def messages_to(sink: MailSink, address: str, n: int) -> list[EmailMessage]:
    async def arrived() -> list[EmailMessage]:
        mine = [m for m in sink.messages() if m["To"] == address]
        assert len(mine) >= n, [m["Subject"] for m in mine]
        return mine

    return await eventually(arrived, within=30, what=f"{n} messages to {address}")


async def notes(stack: Stack, ref: str, key: str | None = None) -> list[dict[str, Any]]:
    r = await stack.http.get("/v1/notifications", params={"ref": ref}, headers=stack.auth(key))
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


async def pay_through_the_emailed_link(stack: Stack, email: EmailMessage) -> None:
    body = email.get_body(("plain",))
    assert body is not None
    found = LINK.search(body.get_content())
    assert found, body.get_content()
    r = await stack.http.post(found.group(0))
    assert r.status_code == 303, r.text
    checkout = urlsplit(r.headers["location"]).path
    r = await stack.http.post(checkout)
    assert r.status_code == 303 and "/pay/done/" in r.headers["location"], r.text


async def recovered(stack: Stack, ref: str, key: str | None = None) -> dict[str, Any]:
    async def ended() -> dict[str, Any]:
        r = await stack.http.get(f"/v1/recoveries/by_ref/{ref}", headers=stack.auth(key))
        assert r.status_code == 200 and r.json()["status"] == "recovered", r.text
        return dict(r.json())

    return await eventually(ended, within=30, what=f"{ref} recovered")


async def test_the_customer_who_paid_through_the_link_gets_a_receipt_after_the_end(
    mailing: Stack, sink: MailSink
) -> None:
    r = await mailing.http.put("/v1/policy", json={"email_receipts": True}, headers=mailing.auth())
    assert r.status_code == 200 and r.json()["email_receipts"] is True, r.text
    body = failure_body(decline_code="expired_card", amount=123456)
    body["customer"] = {"id": "cus_r", "email": "rita@example.com"}
    ref = body["payment_ref"]
    assert (await mailing.http.post(INGEST, json=body, headers=mailing.auth())).status_code == 202
    [link_mail] = await messages_to(sink, "rita@example.com", 1)

    await pay_through_the_emailed_link(mailing, link_mail)
    rec = await recovered(mailing, ref)

    first, receipt = await messages_to(sink, "rita@example.com", 2)
    assert first["Message-ID"] == link_mail["Message-ID"]
    assert receipt["Subject"] == "Receipt: your payment of 1,234.56 USD to Test Merchant"
    text = receipt.get_body(("plain",))
    assert text is not None and "/pay/retry/" not in text.get_content()

    async def receipt_sent() -> dict[str, Any]:
        [note] = [n for n in await notes(mailing, ref) if n["kind"] == "receipt"]
        assert note["status"] == "sent", note
        return note

    note = await eventually(receipt_sent, what="the receipt recorded sent")
    assert (note["recipient"], note["link_id"]) == ("r***@example.com", None)
    # sent by a workflow of its own, after the recovery's run had ended
    handle = mailing.temporal.get_workflow_handle_for(
        CustomerReceiptWorkflow.run, receipt_workflow_id(rec["recovery_id"])
    )
    result = await handle.result()
    assert (result.status, result.error) == ("sent", None)
    assert len([m for m in sink.messages() if m["To"] == "rita@example.com"]) == 2


async def test_no_receipt_for_our_own_charge_nor_when_the_policy_sends_none(
    mailing: Stack, sink: MailSink, store: Store
) -> None:
    r = await mailing.http.put("/v1/policy", json={"email_receipts": True}, headers=mailing.auth())
    assert r.status_code == 200, r.text
    # recovered by our own charge: the simulator takes the first attempt, expedited
    ours = failure_body(code="processing_error", decline_code=None, pm="pm_sim_succeed_on_1")
    ours["customer"] = {"id": "cus_o", "email": "otto@example.com"}
    assert (await mailing.http.post(INGEST, json=ours, headers=mailing.auth())).status_code == 202

    async def expedited() -> bool:
        e = await mailing.http.post(
            f"/v1/recoveries/by_ref/{ours['payment_ref']}/expedite", headers=mailing.auth()
        )
        assert e.status_code == 200, e.text
        return True

    await eventually(expedited, within=30)
    await recovered(mailing, ours["payment_ref"])

    # paid through the link, at a merchant with the default policy (no receipts)
    _, plain_key = await add_merchant(store)
    theirs = failure_body(decline_code="expired_card")
    theirs["customer"] = {"id": "cus_p", "email": "pia@example.com"}
    r = await mailing.http.post(INGEST, json=theirs, headers=mailing.auth(plain_key))
    assert r.status_code == 202
    [link_mail] = await messages_to(sink, "pia@example.com", 1)
    await pay_through_the_emailed_link(mailing, link_mail)
    await recovered(mailing, theirs["payment_ref"], plain_key)

    # the relay has handed over everything the ends queued: no receipt was queued at all
    async def relayed() -> bool:
        return not await mailing.store.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE delivered_at IS NULL"
        )

    await eventually(relayed)
    assert await notes(mailing, ours["payment_ref"]) == []
    assert [n["kind"] for n in await notes(mailing, theirs["payment_ref"], plain_key)] == [
        "retry_link"
    ]
    assert [m["To"] for m in sink.messages()] == ["pia@example.com"]
