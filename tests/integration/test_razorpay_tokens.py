"""A customer's new card at Razorpay (a confirmed recurring token) switches their open
recoveries to it and attempts at once (the local Razorpay fake, the real `razorpay` SDK).
Razorpay's `token.confirmed` names no customer; the registration payment does, and the two
webhooks may come in either order."""

from __future__ import annotations

from tests.helpers import Stack, eventually, recovery
from tests.helpers.stack import razorpay_failure
from tests.psp.razorpay_server import FakeRazorpay


async def test_a_new_razorpay_token_is_attempted_at_once(rzp_api: Stack, rzp: FakeRazorpay) -> None:
    api = rzp_api
    confirmed_first, paid_first = "cust_TokenConfirm01", "cust_TokenPayment01"
    refs = {c: await razorpay_failure(api, c) for c in (confirmed_first, paid_first)}

    async def post(event: str, **entity_ids: str) -> str:
        body, headers = rzp.signed_webhook(event, **entity_ids)
        r = await api.http.post("/v1/webhooks/razorpay", content=body, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()["outcome"]

    registration, token = rzp.register_token(confirmed_first)
    assert await post("token.confirmed", token_id=token) == "token_recorded"
    assert (await recovery(api, refs[confirmed_first]))["attempts"] == []
    assert await post("payment.captured", payment_id=registration) == (
        "signalled_payment_method_updated"
    )

    registration2, token2 = rzp.register_token(paid_first)
    assert await post("payment.captured", payment_id=registration2) == "unknown_payment"
    assert (await recovery(api, refs[paid_first]))["attempts"] == []
    assert await post("token.confirmed", token_id=token2) == "signalled_payment_method_updated"
    # the token switches its customer's recoveries once, however often it is named again
    assert await post("payment.authorized", payment_id=registration2) == "ignored"

    for customer, new_token in ((confirmed_first, token), (paid_first, token2)):

        async def recovered(ref: str = refs[customer]) -> dict:
            rec = await recovery(api, ref)
            assert rec["status"] == "recovered", rec
            return rec

        rec = await eventually(recovered, within=30)
        assert [a["outcome"] for a in rec["attempts"]] == ["succeeded"]
        charged = [
            p["token_id"]
            for p in rzp.captured_payments()
            if p["customer_id"] == customer and p["description"] != "Card registration"
        ]
        assert charged == [new_token]
