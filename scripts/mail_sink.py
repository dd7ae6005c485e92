"""A local SMTP server that keeps what it is sent: `make dev`'s mailbox, and the tests'.

Every message is written to `<directory>/<Message-ID>.eml` (open it in a mail client, or
its HTML part in a browser) and logged in one line: recipient, subject, file. A message whose
Message-ID the sink already holds is not stored again, as mail systems collapse copies of one
message: a retry of a message the sink took is one message, not two.

`python -m scripts.mail_sink --dir .data/mail --port 1025` runs one on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import threading
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

from aiosmtpd.controller import Controller

from scripts.stack import HOST, free_port

_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")


def file_name(message_id: str) -> str:
    """The file a message is kept in: its Message-ID, made safe for a file name."""
    return _UNSAFE.sub("_", message_id.strip().strip("<>")) + ".eml"


class MailSink:
    """An SMTP server on `host`:`port` that stores each message in `directory`.

    `answer(message)` may hold or refuse a message: it runs (in a thread) before the message
    is stored and returns None (take it), or an SMTP reply such as "451 4.3.0 try again
    later" (the message is not stored). `kept(message)` runs (in a thread) after a message
    is stored and before the server says so: a test can stop the sender right there.
    """

    def __init__(
        self,
        directory: Path,
        *,
        host: str = HOST,
        port: int = 0,
        say: Callable[[str], None] = print,
        answer: Callable[[EmailMessage], str | None] | None = None,
        kept: Callable[[EmailMessage], None] | None = None,
    ) -> None:
        self.directory = directory
        self.host = host
        self.port = port or free_port()
        self.say = say
        self.answer = answer
        self.kept = kept
        self.received = 0  # messages the sink took, copies included
        self.received_at: dict[str, float] = {}  # Message-ID -> when first kept (time.time())
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname=host, port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> MailSink:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def messages(self) -> list[EmailMessage]:
        """Every message stored, oldest first."""
        files = sorted(self.directory.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
        return [parse(p.read_bytes()) for p in files]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = cast(bytes, envelope.original_content or envelope.content)
        message = parse(content)
        if self.answer is not None:
            reply = await asyncio.to_thread(self.answer, message)
            if reply is not None:
                return reply
        message_id = str(message.get("Message-ID") or f"<no-id-{id(content)}@sink>")
        path = self.directory / file_name(message_id)
        with self._lock:
            self.received += 1
            copy = path.exists()
            self.received_at.setdefault(message_id, time.time())
            if not copy:
                partial = path.with_suffix(".part")
                partial.write_bytes(content)
                partial.replace(path)
        if self.kept is not None:
            await asyncio.to_thread(self.kept, message)
        recipients = ", ".join(envelope.rcpt_tos)
        subject = str(message.get("Subject", "")).strip()
        if copy:
            self.say(f"mail to {recipients}: a copy of {path.name} (already kept)")
        else:
            self.say(f"mail to {recipients} | {subject} | {path}")
        return "250 OK: kept"


def parse(content: bytes) -> EmailMessage:
    return message_from_bytes(content, policy=policy.default)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(".data/mail"))
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=1025)
    args = parser.parse_args()
    sink = MailSink(args.dir, host=args.host, port=args.port).start()
    print(f"SMTP sink on {sink.url}, keeping messages in {args.dir}")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        sink.stop()


if __name__ == "__main__":
    main()
