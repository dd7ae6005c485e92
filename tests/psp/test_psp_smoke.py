"""The real-mode smoke check (`python -m scripts.psp_smoke`) run against the local fakes: it
must agree with them, so that it and they stay in step (a check the fakes fail means the
script or a fake changed), and a difference must show."""

from __future__ import annotations

import pytest

from scripts.psp_smoke import StripeCards, main, razorpay_checks, stripe_checks
from tests.psp.localstripe_server import (
    CARD_DECLINED_ON_CHARGE,
    CARD_OK,
    TEST_API_KEY,
    localstripe,
)
from tests.psp.razorpay_server import fake_razorpay


async def test_the_stripe_checks_agree_with_the_local_stripe() -> None:
    with localstripe() as base:
        checks = await stripe_checks(
            TEST_API_KEY,
            base,
            StripeCards(ok=CARD_OK, declines=CARD_DECLINED_ON_CHARGE, numbers=True),
        )
    assert len(checks) == 5
    assert all(c.agrees for c in checks), [c.line() for c in checks]


@pytest.mark.parametrize("debit_delay", [0.0, 3600.0])  # captured at once, or pending
async def test_the_razorpay_checks_agree_with_the_fake(debit_delay: float) -> None:
    with fake_razorpay(debit_delay=debit_delay) as rzp:
        rzp.add_token("token_SmokeCheck001", status="confirmed", max_amount=1_000_000)
        checks = await razorpay_checks(
            rzp.key_id, rzp.key_secret, "cust_SmokeCheck01", "token_SmokeCheck001", rzp.base_url
        )
    assert len(checks) == (5 if debit_delay == 0 else 4)
    assert all(c.agrees for c in checks), [c.line() for c in checks]


def test_a_difference_is_reported_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with fake_razorpay(debit_delay=0) as rzp:
        rzp.add_token("token_SmokePaused01", status="paused")
        code = main(
            [
                "--psp=razorpay",
                f"--key-id={rzp.key_id}",
                f"--key-secret={rzp.key_secret}",
                "--customer=cust_SmokeCheck02",
                "--token=token_SmokePaused01",
                f"--api-base={rzp.base_url}",
            ]
        )
    out = capsys.readouterr().out
    assert code == 1
    assert "DIFFERS the token's mandate can be debited" in out and "token_paused" in out


def test_live_keys_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--psp=stripe", "--api-key=sk_live_123"]) == 2
    assert main(["--psp=razorpay", "--key-id=rzp_live_1", "--key-secret=s"]) == 2
    assert "test key" in capsys.readouterr().err
