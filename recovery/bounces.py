"""Bounces: what a delivery status notification (RFC 3464) says about a message we sent.

An SMTP server that accepted a message may still fail to deliver it, later: the mailbox does
not exist at the final hop, the domain has no mail server, the message was refused further
on. The server then mails a delivery status notification ("bounce") to the envelope sender:
a `multipart/report; report-type=delivery-status` whose `message/delivery-status` part says,
for each recipient, its `Action` (`failed`, `delayed`, `delivered`, ...), its `Status`
(RFC 3463: `5.x.x` permanent, `4.x.x` temporary) and the remote server's `Diagnostic-Code`,
and whose third part returns the original message or its headers, with our `Message-ID`.

Only a permanent failure (`Action: failed`, or a `5.x.x` status) is a bounce here: `delayed`
reports say the server is still trying and change nothing. A message that is not a delivery
status notification (an auto-reply, a person writing back) is not one either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes
from email import policy as email_policy
from email.message import Message

# the original message's id, in a returned message/rfc822 part or text/rfc822-headers part
_MESSAGE_ID = re.compile(r"^message-id:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class FailedRecipient:
    address: str
    status: str  # RFC 3463, e.g. "5.1.1"
    diagnostic: str  # the remote server's words, e.g. "smtp; 550 5.1.1 no such user"

    @property
    def reason(self) -> str:
        said = f": {self.diagnostic}" if self.diagnostic else ""
        return f"bounced: {self.address} {self.status}{said}"


@dataclass(frozen=True)
class Bounce:
    message_id: str  # the bounced message's Message-ID, <...>
    failed: tuple[FailedRecipient, ...]

    @property
    def reason(self) -> str:
        return "; ".join(r.reason for r in self.failed)[:1000]


class NotABounce(ValueError):
    """The message is not a permanent-failure report about a message we can name."""


def parse_bounce(raw: bytes) -> Bounce:
    """The permanent failure a delivery status notification reports; NotABounce (saying why)
    for anything else."""
    msg = message_from_bytes(raw, policy=email_policy.compat32)
    if msg.get_content_type() != "multipart/report" or not msg.is_multipart():
        raise NotABounce(f"not a delivery status notification ({msg.get_content_type()})")
    status = next(
        (p for p in msg.walk() if p.get_content_type() == "message/delivery-status"), None
    )
    if status is None:
        raise NotABounce("a report without a message/delivery-status part")
    failed = tuple(_failed_recipients(status))
    if not failed:
        raise NotABounce("no recipient failed for good (a delay or success report)")
    message_id = _returned_message_id(msg)
    if message_id is None:
        raise NotABounce("the report does not return the original message's Message-ID")
    return Bounce(message_id=message_id, failed=failed)


def _failed_recipients(status: Message) -> list[FailedRecipient]:
    # Python parses message/delivery-status as one header block per item: the first says
    # about the message, each next one about one recipient.
    blocks = status.get_payload()
    if not isinstance(blocks, list):
        return []
    out = []
    for block in blocks[1:]:
        if not isinstance(block, Message):
            continue
        action = _field(block, "Action").lower()
        code = _field(block, "Status")
        if action != "failed" and not code.startswith("5"):
            continue
        address = _field(block, "Final-Recipient") or _field(block, "Original-Recipient")
        out.append(
            FailedRecipient(
                address=address.split(";", 1)[-1].strip(),  # "rfc822; a@example.com"
                status=code or "5.0.0",
                diagnostic=" ".join(_field(block, "Diagnostic-Code").split()),
            )
        )
    return out


def _field(block: Message, name: str) -> str:
    return str(block.get(name, "")).strip()


def _returned_message_id(msg: Message) -> str | None:
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            original = inner[0] if isinstance(inner, list) and inner else None
            if isinstance(original, Message) and original.get("Message-ID"):
                return str(original["Message-ID"]).strip()
        elif kind == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
            found = _MESSAGE_ID.search(text)
            if found:
                return found.group(1)
    return None
