"""Delivery status notifications (RFC 3464) as mail servers send them back: the shapes of
Postfix's (the original's headers returned) and of servers that return the whole message."""

from __future__ import annotations

from typing import Literal


def dsn(
    original: bytes,
    *,
    recipient: str,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <{recipient}>: Recipient address\r\n"
    "    rejected: User unknown in virtual mailbox table",
    returned: Literal["headers", "message"] = "headers",
) -> bytes:
    """A bounce of `original` (the bytes as sent) for `recipient`, as Postfix writes one
    (`returned="headers"`) or with the whole message returned (`"message"`)."""
    headers, _, _body = original.replace(b"\r\n", b"\n").partition(b"\n\n")
    if returned == "headers":
        third = (
            b"Content-Description: Undelivered Message Headers\n"
            b"Content-Type: text/rfc822-headers\n\n" + headers + b"\n"
        )
    else:
        third = (
            b"Content-Description: Undelivered Message\nContent-Type: message/rfc822\n\n"
            + original.replace(b"\r\n", b"\n")
        )
    report = (
        (
            "From: MAILER-DAEMON@mx.example.com (Mail Delivery System)\n"
            "Subject: Undelivered Mail Returned to Sender\n"
            "To: payments@example.com\n"
            "Auto-Submitted: auto-replied\n"
            "MIME-Version: 1.0\n"
            "Content-Type: multipart/report; report-type=delivery-status;\n"
            '\tboundary="4F1A2B.1733480000/mx.example.com"\n'
            "\n"
            "This is a MIME-encapsulated message.\n"
            "\n"
            "--4F1A2B.1733480000/mx.example.com\n"
            "Content-Description: Notification\n"
            "Content-Type: text/plain; charset=us-ascii\n"
            "\n"
            "This is the mail system at host mx.example.com.\n"
            "\n"
            "I'm sorry to have to inform you that your message could not\n"
            "be delivered to one or more recipients.\n"
            "\n"
            "--4F1A2B.1733480000/mx.example.com\n"
            "Content-Description: Delivery report\n"
            "Content-Type: message/delivery-status\n"
            "\n"
            "Reporting-MTA: dns; mx.example.com\n"
            "X-Postfix-Queue-ID: 4F1A2B\n"
            "Arrival-Date: Sun,  6 Dec 2026 16:00:00 +0000 (UTC)\n"
            "\n"
            f"Final-Recipient: rfc822; {recipient}\n"
            f"Original-Recipient: rfc822;{recipient}\n"
            f"Action: {action}\n"
            f"Status: {status}\n"
            "Remote-MTA: dns; mx.example.net\n"
            f"Diagnostic-Code: {diagnostic.format(recipient=recipient)}\n"
            "\n"
            "--4F1A2B.1733480000/mx.example.com\n"
        )
        .replace("\r\n", "\n")
        .encode()
    )
    return report + third + b"\n--4F1A2B.1733480000/mx.example.com--\n"
