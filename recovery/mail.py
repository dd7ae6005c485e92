"""E-mail to customers: the SMTP server from `SMTP_URL`, the messages, and sending one.

`SMTP_URL` names the server and how to reach it safely:

- `smtps://[user:password@]host[:port]`: TLS from the first byte (port 465 by default);
- `smtp+starttls://[user:password@]host[:port]`: STARTTLS required (port 587 by default);
- `smtp://[user:password@]host[:port]`: STARTTLS when the server offers it (port 25 by
  default). Plain SMTP may carry passwords and links in the clear, so outside development it
  is only accepted to a loopback address (a local relay), see `SmtpServer.check_safe`.

A message is one `Email` rendered from the Jinja2 templates in `recovery/templates/email/`
(an HTML and a plain-text part; autoescaped; nothing loaded from other origins; no card data).
Its `Message-ID` is derived from the notification's own key, so the one message a
notification stands for keeps one id however often it is handed to the server: mail systems
and clients collapse copies with the same id, which is what keeps "at most one message" true
when a worker dies between the server accepting it and our record of that.

`send` says what the server did: nothing (the message was accepted), `MailRefused` (a
permanent refusal, 5xx: sending again cannot help) or `MailDeferred` (a temporary one, 4xx,
or no answer: try again later).
"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from datetime import datetime
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from functools import cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

import aiosmtplib
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from recovery.currencies import format_amount

Security = Literal["tls", "starttls", "starttls-if-offered"]
_SCHEMES: dict[str, tuple[Security, int]] = {
    "smtps": ("tls", 465),
    "smtp+starttls": ("starttls", 587),
    "smtp": ("starttls-if-offered", 25),
}
NotificationKind = Literal["retry_link", "reminder", "receipt"]


class MailRefused(Exception):
    """The SMTP server refused the message for good (a 5xx answer): never sent again."""


class MailDeferred(Exception):
    """The message was not accepted this time (a 4xx answer, a timeout, no server): retry."""


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    security: Security
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        """The server an `SMTP_URL` names; ValueError (saying what is wrong) otherwise."""
        parts = urlsplit(url.strip())
        if parts.scheme not in _SCHEMES:
            raise ValueError(
                f"SMTP_URL must start with one of {', '.join(s + '://' for s in _SCHEMES)}"
            )
        if not parts.hostname:
            raise ValueError("SMTP_URL names no host")
        security, default_port = _SCHEMES[parts.scheme]
        try:
            port = parts.port or default_port
        except ValueError:
            raise ValueError("SMTP_URL has an invalid port") from None
        return cls(
            host=parts.hostname,
            port=port,
            security=security,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def check_safe(self) -> None:
        """Outside development: plain SMTP (STARTTLS only if offered, which an attacker on
        the path can strip) is accepted to a loopback relay only."""
        if self.security != "starttls-if-offered":
            return
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = self.host == "localhost"
        if not loopback:
            raise ValueError(
                "SMTP_URL: smtp:// sends in the clear when the server offers no STARTTLS; "
                "outside development use smtps:// or smtp+starttls:// (or a relay on loopback)"
            )


def sender_address(mail_from: str) -> Address:
    """`MAIL_FROM` ("Payments <payments@example.com>" or a bare address) as an address;
    ValueError when it is not one."""
    name, addr = parseaddr(mail_from)
    local, at, domain = addr.rpartition("@")
    if not (local and at and domain) or any(c.isspace() for c in addr):
        raise ValueError(f"MAIL_FROM is not an e-mail address: {mail_from!r}")
    return Address(display_name=name, username=local, domain=domain)


def mask_address(address: str | None) -> str | None:
    """An address fit to show in the API and logs: `alice@example.com` -> `a***@example.com`."""
    if not address:
        return address
    local, at, domain = address.rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def message_id(notification_key: str, domain: str) -> str:
    """The one Message-ID of a notification: the same on every try."""
    digest = hashlib.sha256(notification_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


@dataclass(frozen=True)
class Email:
    """What a message to a customer says (everything a template may use)."""

    kind: NotificationKind
    to: str
    merchant_name: str
    reply_to: str | None
    payment_ref: str
    amount: int
    currency: str
    url: str | None  # the retry link (none in a receipt)
    link_expires_at: datetime | None

    @property
    def amount_text(self) -> str:
        return format_amount(self.amount, self.currency)


_SUBJECTS: dict[NotificationKind, str] = {
    "retry_link": "Action needed: your payment of {amount} to {merchant} did not go through",
    "reminder": "Reminder: your payment of {amount} to {merchant} is still due",
    "receipt": "Receipt: your payment of {amount} to {merchant}",
}


# Headers are not folded below RFC 5322's 998-character limit: Python folds a long subject
# right after "Subject:", and some readers (Python's own parser among them) then keep the
# fold's leading space. On the wire, lines end in CRLF.
_POLICY = email_policy.default.clone(max_line_length=998)
_SMTP_POLICY = email_policy.SMTP.clone(max_line_length=998)


@cache
def _templates() -> Environment:
    return Environment(
        loader=PackageLoader("recovery", "templates/email"),
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def subject_of(email: Email) -> str:
    subject = _SUBJECTS[email.kind].format(amount=email.amount_text, merchant=email.merchant_name)
    return " ".join(subject.split())  # no line breaks from a merchant's name in a header


def build_message(
    email: Email, *, sender: Address, notification_key: str, now: datetime
) -> EmailMessage:
    """The message for `email`: a plain-text part and an HTML alternative."""
    context = {
        "email": email,
        "amount": email.amount_text,
        "expires": email.link_expires_at.strftime("%d %B %Y, %H:%M UTC")
        if email.link_expires_at
        else None,
    }
    env = _templates()
    msg = EmailMessage(policy=_POLICY)
    msg["Subject"] = subject_of(email)
    msg["From"] = Address(
        display_name=" ".join(email.merchant_name.split()) or sender.display_name,
        username=sender.username,
        domain=sender.domain,
    )
    msg["To"] = email.to
    if email.reply_to:
        msg["Reply-To"] = email.reply_to
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id(notification_key, sender.domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
    msg.set_content(env.get_template(f"{email.kind}.txt").render(context))
    msg.add_alternative(env.get_template(f"{email.kind}.html").render(context), subtype="html")
    return msg


async def send(
    server: SmtpServer,
    message: EmailMessage,
    *,
    seconds_per_step: float,
    ca_file: Path | None = None,
) -> None:
    """Hand `message` to the SMTP server, waiting at most `seconds_per_step` for each of its
    answers; raises `MailRefused` or `MailDeferred`."""
    tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        await aiosmtplib.send(
            message.as_bytes(policy=_SMTP_POLICY),
            sender=message["From"].addresses[0].addr_spec,
            recipients=[a.addr_spec for a in message["To"].addresses],
            hostname=server.host,
            port=server.port,
            username=server.username,
            password=server.password,
            use_tls=server.security == "tls",
            start_tls=True if server.security == "starttls" else None,
            tls_context=tls,
            timeout=seconds_per_step,
        )
    except aiosmtplib.SMTPRecipientsRefused as e:
        codes = [r.code for r in e.recipients]
        reason = "; ".join(f"{r.code} {r.message}" for r in e.recipients)
        if codes and all(code >= 500 for code in codes):
            raise MailRefused(f"the recipient was refused: {reason}") from None
        raise MailDeferred(f"the recipient was not accepted this time: {reason}") from None
    except aiosmtplib.SMTPAuthenticationError as e:
        # our configuration, not this message: retried until an operator fixes it
        raise MailDeferred(f"the SMTP server refused our login: {e.code} {e.message}") from None
    except aiosmtplib.SMTPResponseException as e:
        answer = f"{e.code} {e.message}"
        if e.code >= 500:
            raise MailRefused(f"the SMTP server refused the message: {answer}") from None
        raise MailDeferred(f"the SMTP server deferred the message: {answer}") from None
    except (aiosmtplib.SMTPException, OSError) as e:  # connect, TLS, timeout, disconnect
        raise MailDeferred(f"no answer from the SMTP server: {e}") from None
