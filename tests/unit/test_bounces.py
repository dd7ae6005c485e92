"""Reading bounces: the permanent failure a delivery status notification (RFC 3464) reports
about one of our messages, and everything else that reaches the bounce address let go."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import pytest

from recovery.bounces import NotABounce, parse_bounce
from recovery.mail import Email, build_message, sender_address
from tests.helpers.bounces import dsn

KEY = "recovery/mer_1/order_42/run/7"


def sent() -> tuple[bytes, str]:
    """One of our messages as the SMTP server took it, and its Message-ID."""
    mail = Email(
        kind="retry_link",
        to="nobody@example.com",
        merchant_name="Acme Inc",
        reply_to=None,
        payment_ref="order_42",
        amount=4999,
        currency="usd",
        url="https://pay.example/pay/retry/tok",
        link_expires_at=datetime(2026, 12, 13, 9, 0, tzinfo=UTC),
    )
    msg = build_message(
        mail,
        sender=sender_address("Payments <pay@example.com>"),
        notification_key=KEY,
        now=datetime(2026, 12, 6, 9, 0, tzinfo=UTC),
    )
    return msg.as_bytes(), str(msg["Message-ID"])


@pytest.mark.parametrize("returned", ["headers", "message"])
def test_a_permanent_failure_names_our_message_the_address_and_the_servers_words(
    returned: Literal["headers", "message"],
) -> None:
    original, message_id = sent()

    bounce = parse_bounce(dsn(original, recipient="nobody@example.com", returned=returned))

    assert bounce.message_id == message_id
    [failed] = bounce.failed
    assert (failed.address, failed.status) == ("nobody@example.com", "5.1.1")
    # the folded Diagnostic-Code is read as one line
    assert failed.diagnostic == (
        "smtp; 550 5.1.1 <nobody@example.com>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )
    assert bounce.reason == f"bounced: nobody@example.com 5.1.1: {failed.diagnostic}"


def test_a_delay_report_is_not_a_bounce() -> None:
    original, _ = sent()
    report = dsn(
        original,
        recipient="nobody@example.com",
        action="delayed",
        status="4.4.1",
        diagnostic="X-Postfix; connect to mx.example.net: Connection timed out",
    )
    with pytest.raises(NotABounce, match="no recipient failed for good"):
        parse_bounce(report)


def test_a_failed_action_counts_whatever_its_status_says() -> None:
    original, message_id = sent()
    report = dsn(original, recipient="nobody@example.com", status="4.0.0")
    assert parse_bounce(report).message_id == message_id


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (
            b"From: Alice <alice@example.com>\nSubject: Re: your payment\n\nI paid already.\n",
            "not a delivery status notification",
        ),
        (
            b"From: alice@example.com\nSubject: Out of office\nAuto-Submitted: auto-replied\n"
            b"Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/plain\n\n"
            b"Away until Monday.\n--x--\n",
            "not a delivery status notification",
        ),
        (b"", "not a delivery status notification"),
        (b"\xff\xfe\x00garbage", "not a delivery status notification"),
    ],
)
def test_what_is_not_a_report_is_let_go(raw: bytes, why: str) -> None:
    with pytest.raises(NotABounce, match=why):
        parse_bounce(raw)


def test_a_report_that_returns_no_message_id_names_no_message() -> None:
    original, _ = sent()
    without = b"\n".join(
        line
        for line in original.replace(b"\r\n", b"\n").split(b"\n")
        if not line.lower().startswith(b"message-id:")
    )
    with pytest.raises(NotABounce, match="Message-ID"):
        parse_bounce(dsn(without, recipient="nobody@example.com"))
