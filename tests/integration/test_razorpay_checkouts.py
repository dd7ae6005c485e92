"""Razorpay Payment Links live no longer than their recovery (the local Razorpay fake, the
real `razorpay` SDK): a link paid after another recovered the payment, or after a cancel,
takes no money; the link is created to expire with ours. Razorpay's own Payment Link events,
as the fake emits them and through our webhook route: an expired or cancelled link is
recorded closed (and our link opens a new one); a part payment never counts as the payment;
a link paid during a cooldown recovers the payment once, the scheduled debit never made."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest

from tests.helpers import Stack, eventually, recovery
from tests.helpers.stack import razorpay_failure
from tests.psp.razorpay_server import FakeRazorpay

RECURRING = r"/v1/payments/create/recurring"


async def open_link(api: Stack, rzp: FakeRazorpay, ref: str) -> str:
    """Issue a retry link and open its checkout: the Razorpay Payment Link's id."""
    r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/link", headers=api.auth())
    assert r.status_code == 201, r.text
    return await pay_button(api, rzp, urlsplit(r.json()["url"]).path)


async def pay_button(api: Stack, rzp: FakeRazorpay, path: str) -> str:
    """The customer presses Pay on our link's page: the Payment Link it sends them to."""
    opened = await api.http.post(path)
    assert opened.status_code == 303, opened.text
    (link,) = [
        link
        for link in rzp.payment_links.values()
        if link["short_url"] == opened.headers["location"]
    ]
    return link["id"]


async def deliver(api: Stack, rzp: FakeRazorpay) -> list[tuple[str, str]]:
    """What Razorpay sent since, posted to our route as it signs it: (event, our outcome)."""
    answers = []
    for event, body, headers in rzp.take_webhooks():
        r = await api.http.post("/v1/webhooks/razorpay", content=body, headers=headers)
        assert r.status_code == 200, r.text
        answers.append((event, r.json()["outcome"]))
    return answers


async def our_link(api: Stack, ref: str) -> dict:
    [link] = (await recovery(api, ref))["links"]
    return link


async def paid_webhook(api: Stack, rzp: FakeRazorpay, link_id: str) -> None:
    body, headers = rzp.signed_webhook("payment_link.paid", payment_link_id=link_id)
    r = await api.http.post("/v1/webhooks/razorpay", content=body, headers=headers)
    assert r.status_code == 200, r.text


async def test_link_b_after_link_a_recovered_takes_no_money(
    rzp_api: Stack, rzp: FakeRazorpay
) -> None:
    api = rzp_api
    ref = await razorpay_failure(api, "cust_Gaurav0000001")
    first, second = await open_link(api, rzp, ref), await open_link(api, rzp, ref)
    link = rzp.payment_links[first]
    assert time.time() + 15 * 60 < link["expire_by"]  # it expires, and with our link
    rzp.pay_payment_link(first)
    await paid_webhook(api, rzp, first)

    async def cancelled_at_razorpay() -> dict:
        rec = await recovery(api, ref)
        assert rec["status"] == "recovered", rec
        assert rzp.payment_links[second]["status"] == "cancelled"
        return rec

    rec = await eventually(cancelled_at_razorpay, within=30)
    with pytest.raises(ValueError, match="cancelled"):
        rzp.pay_payment_link(second)
    assert [p["disposition"] for p in rec["payments"]] == ["recovered"]
    assert len([p for p in rzp.payments if p["status"] == "captured"]) == 1


async def test_a_link_opened_before_a_cancel_takes_no_money_after_it(
    rzp_api: Stack, rzp: FakeRazorpay
) -> None:
    api = rzp_api
    ref = await razorpay_failure(api, "cust_Gaurav0000001")
    link_id = await open_link(api, rzp, ref)
    r = await api.http.post(
        f"/v1/recoveries/by_ref/{ref}/cancel", json={"reason": "x"}, headers=api.auth()
    )
    assert r.status_code == 200 and r.json()["status"] == "cancelled"

    async def cancelled() -> bool:
        assert rzp.payment_links[link_id]["status"] == "cancelled"
        return True

    await eventually(cancelled, within=30)
    with pytest.raises(ValueError, match="cancelled"):
        rzp.pay_payment_link(link_id)
    rec = await recovery(api, ref)
    assert rec["status"] == "cancelled" and rec["paid"] is False


async def test_both_links_paid_before_closing_refunds_the_second(
    rzp_api: Stack, rzp: FakeRazorpay
) -> None:
    api = rzp_api
    ref = await razorpay_failure(api, "cust_Gaurav0000001")
    first, second = await open_link(api, rzp, ref), await open_link(api, rzp, ref)
    for link_id in (first, second):
        rzp.pay_payment_link(link_id)
    for link_id in (first, second):
        await paid_webhook(api, rzp, link_id)

    async def refunded() -> dict:
        rec = await recovery(api, ref)
        assert [p["refund_status"] for p in rec["payments"]] == [None, "succeeded"], rec
        return rec

    rec = await eventually(refunded, within=30)
    duplicate = rec["payments"][1]
    assert duplicate["disposition"] == "duplicate"
    refunds = [r for r in rzp.refunds.values() if r["payment_id"] == duplicate["psp_payment_id"]]
    assert [r["amount"] for r in refunds] == [4999]


async def test_an_expired_payment_link_is_recorded_closed(
    rzp_api: Stack, rzp: FakeRazorpay
) -> None:
    api = rzp_api
    ref = await razorpay_failure(api, "cust_Gaurav0000001")
    plink = await open_link(api, rzp, ref)
    assert (await our_link(api, ref))["checkout_closed_at"] is None
    rzp.advance(rzp.payment_links[plink]["expire_by"] - rzp.now() + 1)  # Razorpay's clock
    assert await deliver(api, rzp) == [("payment_link.expired", "checkout_closed")]
    assert (await our_link(api, ref))["checkout_closed_at"] is not None
    with pytest.raises(ValueError, match="expired"):  # no money can come through it
        rzp.pay_payment_link(plink)
    rec = await recovery(api, ref)
    assert rec["status"] == "active" and rec["payments"] == []


async def test_a_link_cancelled_at_razorpay_is_recorded_closed_and_ours_opens_a_new_one(
    rzp_api: Stack, rzp: FakeRazorpay
) -> None:
    """The merchant cancels the Payment Link in Razorpay's Dashboard while our retry link is
    still valid: the customer pressing Pay again gets a new Payment Link, not the dead one."""
    api = rzp_api
    ref = await razorpay_failure(api, "cust_Gaurav0000001")
    r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/link", headers=api.auth())
    assert r.status_code == 201, r.text
    page = urlsplit(r.json()["url"]).path
    first = await pay_button(api, rzp, page)
    rzp.cancel_payment_link(first)
    assert await deliver(api, rzp) == [("payment_link.cancelled", "checkout_closed")]
    assert (await our_link(api, ref))["checkout_closed_at"] is not None

    second = await pay_button(api, rzp, page)
    assert second != first and rzp.payment_links[second]["status"] == "created"
    assert (await our_link(api, ref))["checkout_closed_at"] is None  # the new one is open
    rzp.pay_payment_link(second)
    outcomes = dict(await deliver(api, rzp))
    assert outcomes["payment_link.paid"] in (
        "signalled_payment_succeeded",
        "payment_already_recorded",
    )
    rec = await eventually(lambda: recovered(api, ref), within=30)
    assert [p["disposition"] for p in rec["payments"]] == ["recovered"]
    assert len(rzp.captured_payments()) == 1


async def recovered(api: Stack, ref: str) -> dict:
    rec = await recovery(api, ref)
    assert rec["status"] == "recovered", rec
    return rec


async def test_a_part_payment_never_counts_as_the_payment(
    rzp_api: Stack, rzp: FakeRazorpay
) -> None:
    """Our links do not accept part payments; one that arrives anyway (the merchant turned
    them on in the Dashboard) is recorded with its own amount and refunded, never taken for
    the whole: the recovery goes on, and its own debit recovers the payment, once."""
    api = rzp_api
    ref = await razorpay_failure(api, "cust_Gaurav0000001")
    plink = await open_link(api, rzp, ref)
    assert rzp.payment_links[plink]["accept_partial"] is False  # ours never ask for it
    with pytest.raises(ValueError, match="takes 4999"):
        rzp.pay_payment_link(plink, amount=2000)
    rzp.update_payment_link(plink, accept_partial=True)
    rzp.pay_payment_link(plink, amount=2000)
    answers = dict(await deliver(api, rzp))
    assert set(answers) == {"payment.captured", "payment_link.partially_paid"}
    assert sorted(answers.values()) == ["payment_already_recorded", "refunding_partial_payment"]

    async def refunded() -> dict:
        rec = await recovery(api, ref)
        assert [p["refund_status"] for p in rec["payments"]] == ["succeeded"], rec
        return rec

    rec = await eventually(refunded, within=30)
    assert rec["status"] == "active" and rec["paid"] is False
    [part] = rec["payments"]
    assert (part["disposition"], part["amount"]) == ("partial", 2000)
    assert [r["amount"] for r in rzp.refunds.values()] == [2000]

    r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/expedite", headers=api.auth())
    assert r.status_code == 200, r.text
    rec = await eventually(lambda: recovered(api, ref), within=30)
    assert [(p["disposition"], p["amount"]) for p in rec["payments"]] == [
        ("partial", 2000),
        ("recovered", 4999),
    ]
    kept = [p["amount"] - p["amount_refunded"] for p in rzp.payments if p["status"] != "failed"]
    assert sum(kept) == 4999


async def test_a_link_paid_during_a_cooldown_recovers_once_and_the_debit_is_never_made(
    rzp_api: Stack, rzp: FakeRazorpay
) -> None:
    """The recovery waits out its cooldown before debiting the customer's token; meanwhile
    the customer pays through the retry link's Payment Link. Razorpay's events (shuffled
    and repeated as Razorpay may deliver them) recover the payment once; the recovery ends,
    so the debit it had scheduled is never made."""
    api = rzp_api
    ref = await razorpay_failure(api, "cust_Gaurav0000001")
    before = await recovery(api, ref)
    assert before["next_attempt_at"] is not None and before["attempts"] == []
    plink = await open_link(api, rzp, ref)
    rzp.pay_payment_link(plink)
    delivered = rzp.take_webhooks()
    assert [event for event, _, _ in delivered] == ["payment.captured", "payment_link.paid"]
    for event, body, headers in [*reversed(delivered), *delivered]:
        r = await api.http.post("/v1/webhooks/razorpay", content=body, headers=headers)
        assert r.status_code == 200, (event, r.text)

    rec = await eventually(lambda: recovered(api, ref), within=30)
    assert rec["next_attempt_at"] is None and rec["attempts"] == []
    assert [p["disposition"] for p in rec["payments"]] == ["recovered"]
    handle = api.temporal.get_workflow_handle(rec["workflow_id"])
    await asyncio.wait_for(handle.result(), 30)  # the run ended: no timer left to fire
    assert (await handle.describe()).status.name == "COMPLETED"
    assert rzp.requests_to("POST", RECURRING) == []  # the scheduled debit: never made
    assert [p["status"] for p in rzp.payments] == ["captured"]
    assert rzp.refunds == {}
