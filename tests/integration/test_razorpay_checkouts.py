"""Razorpay Payment Links live no longer than their recovery (the local Razorpay fake, the
real `razorpay` SDK): a link paid after another recovered the payment, or after a cancel,
takes no money; the link is created to expire with ours."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from tests.helpers import Stack, eventually, recovery
from tests.helpers.stack import razorpay_failure
from tests.psp.razorpay_server import FakeRazorpay


async def open_link(api: Stack, rzp: FakeRazorpay, ref: str) -> str:
    """Issue a retry link and open its checkout: the Razorpay Payment Link's id."""
    r = await api.http.post(f"/v1/recoveries/by_ref/{ref}/link", headers=api.auth())
    assert r.status_code == 201, r.text
    opened = await api.http.post(urlsplit(r.json()["url"]).path)
    assert opened.status_code == 303, opened.text
    (link,) = [
        link
        for link in rzp.payment_links.values()
        if link["short_url"] == opened.headers["location"]
    ]
    return link["id"]


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
