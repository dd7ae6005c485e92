"""E-mail: what SMTP_URL may name, what a message to a customer looks like, and what the
settings refuse."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest
from pydantic import SecretStr, ValidationError

from recovery.mail import (
    Email,
    SmtpServer,
    build_message,
    mask_address,
    message_id,
    sender_address,
)
from recovery.policy import PolicyUpdate, RetryPolicy
from recovery.settings import Settings

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def email(**overrides: object) -> Email:
    fields: dict[str, object] = {
        "kind": "retry_link",
        "to": "alice@example.com",
        "merchant_name": "Acme Inc",
        "reply_to": "help@acme.example",
        "payment_ref": "order_42",
        "amount": 4999,
        "currency": "usd",
        "url": "https://pay.example/pay/retry/tok?a=1&b=2",
        "link_expires_at": datetime(2026, 12, 13, 9, 0, tzinfo=UTC),
    }
    return Email(**(fields | overrides))  # type: ignore[arg-type]


def built(mail: Email, key: str = "recovery/mer_1/order_42/run/7") -> object:
    msg = build_message(
        mail, sender=sender_address("Payments <pay@example.com>"), notification_key=key, now=NOW
    )
    return message_from_bytes(msg.as_bytes(), policy=policy.default)


@pytest.mark.parametrize(
    ("url", "host", "port", "security", "user", "password"),
    [
        (
            "smtps://mailer:p%40ss@smtp.example.com",
            "smtp.example.com",
            465,
            "tls",
            "mailer",
            "p@ss",
        ),
        ("smtp+starttls://smtp.example.com", "smtp.example.com", 587, "starttls", None, None),
        ("smtp://127.0.0.1:1025", "127.0.0.1", 1025, "starttls-if-offered", None, None),
    ],
)
def test_smtp_url_names_server_security_and_login(
    url: str, host: str, port: int, security: str, user: str | None, password: str | None
) -> None:
    server = SmtpServer.from_url(url)
    assert (server.host, server.port, server.security) == (host, port, security)
    assert (server.username, server.password) == (user, password)


@pytest.mark.parametrize("url", ["http://smtp.example.com", "smtp://", "smtps://h:99999", "x"])
def test_an_smtp_url_that_names_no_smtp_server_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="SMTP_URL"):
        SmtpServer.from_url(url)


def test_outside_development_plain_smtp_only_to_a_loopback_relay() -> None:
    base = {"environment": "production", "link_signing_secret": "x" * 40, "mail_from": "p@x.io"}
    key = {"credentials_key": SecretStr("A" * 43 + "=")}
    with pytest.raises(ValidationError, match="smtp:// sends in the clear"):
        Settings(smtp_url=SecretStr("smtp://mail.example.com"), **base, **key)  # type: ignore[arg-type]
    for ok in ("smtp://127.0.0.1:25", "smtp://localhost", "smtps://mail.example.com"):
        assert Settings(smtp_url=SecretStr(ok), **base, **key).smtp_server() is not None  # type: ignore[arg-type]
    # development may use any server (the dev stack's sink, a test server)
    dev = Settings(
        environment="development", smtp_url=SecretStr("smtp://mail.test"), mail_from="p@x.io"
    )
    assert dev.smtp_server() == SmtpServer("mail.test", 25, "starttls-if-offered")


def test_smtp_url_needs_a_sender_address() -> None:
    with pytest.raises(ValidationError, match="MAIL_FROM must be set"):
        Settings(environment="development", smtp_url=SecretStr("smtp://127.0.0.1"))
    with pytest.raises(ValidationError, match="MAIL_FROM is not an e-mail address"):
        Settings(
            environment="development", smtp_url=SecretStr("smtp://127.0.0.1"), mail_from="nobody"
        )


def test_a_message_has_a_text_and_an_html_part_with_the_link_the_amount_and_the_merchant() -> None:
    msg = built(email())
    assert (
        msg["Subject"] == "Action needed: your payment of 49.99 USD to Acme Inc did not go through"
    )
    assert msg["From"] == "Acme Inc <pay@example.com>"
    assert (msg["To"], msg["Reply-To"]) == ("alice@example.com", "help@acme.example")
    assert msg["Auto-Submitted"] == "auto-generated"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "https://pay.example/pay/retry/tok?a=1&b=2" in text
    assert 'href="https://pay.example/pay/retry/tok?a=1&amp;b=2"' in html
    assert "49.99 USD" in text and "49.99 USD" in html
    assert "13 December 2026, 09:00 UTC" in text
    # nothing loaded from anywhere: no images, scripts, styles or fonts by URL
    for loaded in ("<img", "<script", "<link", "src=", "@import", "url("):
        assert loaded not in html


def test_the_merchants_name_is_escaped_in_html_and_cannot_add_headers() -> None:
    msg = built(email(merchant_name="Evil <script>alert(1)</script>\r\nBcc: x@evil.test"))
    html = msg.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert msg["Bcc"] is None
    assert "\n" not in msg["Subject"] and "\n" not in str(msg["From"])


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [(5000, "jpy", "5,000 JPY"), (1234567, "kwd", "1,234.567 KWD"), (100, "eur", "1.00 EUR")],
)
def test_the_amount_is_shown_in_its_currencys_own_minor_unit(
    amount: int, currency: str, shown: str
) -> None:
    msg = built(email(amount=amount, currency=currency))
    assert shown in msg["Subject"]


def test_one_notification_has_one_message_id_on_every_try() -> None:
    first, again = built(email(), key="k1"), built(email(), key="k1")
    assert first["Message-ID"] == again["Message-ID"] == message_id("k1", "example.com")
    assert built(email(), key="k2")["Message-ID"] != first["Message-ID"]


def test_a_reminder_and_a_receipt_say_what_they_are() -> None:
    assert built(email(kind="reminder"))["Subject"].startswith("Reminder: your payment")
    receipt = built(email(kind="receipt", url=None, link_expires_at=None))
    assert receipt["Subject"].startswith("Receipt: your payment of 49.99 USD")
    assert "/pay/retry/" not in receipt.get_body(("plain",)).get_content()


@pytest.mark.parametrize(
    ("address", "masked"),
    [("alice@example.com", "a***@example.com"), ("a@b.io", "a***@b.io"), (None, None)],
)
def test_recipients_are_masked(address: str | None, masked: str | None) -> None:
    assert mask_address(address) == masked


def test_reminder_days_are_increasing_days_within_the_window() -> None:
    assert RetryPolicy().reminder_days == (3, 7)
    assert PolicyUpdate(reminder_days=[1, 2, 10]).reminder_days == (1, 2, 10)
    assert PolicyUpdate(reminder_days=[]).reminder_days == ()
    for bad, why in [
        ([7, 3], "strictly increasing"),
        ([3, 3], "strictly increasing"),
        ([0], "count from 1"),
        ([21], "not before the end of the 21-day recovery window"),
        (list(range(1, 12)), "at most 10"),
    ]:
        with pytest.raises(ValidationError, match=why):
            PolicyUpdate(reminder_days=bad)
    # a stored policy loads whatever it holds: a reminder after its window is never due
    assert RetryPolicy(window_days=5).reminder_days == (3, 7)
