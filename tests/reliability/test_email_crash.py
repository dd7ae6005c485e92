"""SIGKILL the worker while it sends a customer's e-mail: the customer still gets one message.

Two crashes, each on a real worker process, a real SMTP server (the sink) and a real
Temporal dev server:
- after the server took the message and before the worker heard so (and recorded it): the
  try made again after the heartbeat timeout hands over the same message, with the same
  Message-ID, which the mailbox keeps once;
- before the server took it: the try made again delivers it (nothing is lost).
"""

from __future__ import annotations

import threading
from email.message import EmailMessage
from pathlib import Path

import pytest

from recovery import constants as names
from recovery.store import NotificationRecord, Store
from scripts.mail_sink import MailSink
from tests.helpers import INGEST, eventually, failure_body, running_stack
from tests.integration.servers import TemporalDevServer
from tests.reliability.support import WorkerProcess

HOLD_SECONDS = 60
RETRY_WITHIN = names.EMAIL_HEARTBEAT_TIMEOUT.total_seconds() + 40  # timeout, restart, backoff


class Hold:
    """Blocks the sink at one point of the first delivery until released."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        self.first = True

    def __call__(self, _message: EmailMessage) -> None:
        if self.first:
            self.first = False
            self.reached.set()
            self.release.wait(HOLD_SECONDS)

    def answer(self, message: EmailMessage) -> str | None:
        self(message)
        return None


async def run_crash(
    store: Store, pg_dsn: str, temporal: TemporalDevServer, tmp_path: Path, *, after_kept: bool
) -> tuple[MailSink, NotificationRecord]:
    hold = Hold()
    sink = MailSink(
        tmp_path / "mail",
        kept=hold if after_kept else None,
        answer=None if after_kept else hold.answer,
        say=lambda _line: None,
    ).start()
    worker: WorkerProcess | None = None
    try:
        async with running_stack(store, pg_dsn, temporal.address, worker=False) as api:
            worker = WorkerProcess(
                pg_dsn, temporal.address, api.settings.temporal_task_queue, tmp_path
            )
            worker.env |= {"SMTP_URL": sink.url, "MAIL_FROM": "Payments <pay@example.com>"}
            worker.start()
            body = failure_body(decline_code="lost_card")  # only the customer can fix it
            r = await api.http.post(INGEST, json=body, headers=api.auth())
            assert r.status_code == 202, r.text
            ref = body["payment_ref"]

            async def held() -> bool:
                return hold.reached.is_set()

            await eventually(held, within=60, what="the sink holding the first delivery")
            worker.kill()  # the worker never hears the server's answer
            hold.release.set()
            [note] = await store.notifications_of(api.merchant_id, ref)
            assert (note.status, note.tries) == ("queued", 1), note
            worker.start()

            async def settled() -> NotificationRecord | None:
                [n] = await store.notifications_of(api.merchant_id, ref)
                return n if n.status != "queued" else None

            final = await eventually(settled, within=RETRY_WITHIN, what="the e-mail sent")
            return sink, final
    finally:
        if worker is not None:
            worker.stop()
        sink.stop()


@pytest.mark.heavy
async def test_killed_after_the_server_took_it_the_customer_still_has_one_message(
    store: Store, pg_dsn: str, temporal_server: TemporalDevServer, tmp_path: Path
) -> None:
    sink, note = await run_crash(store, pg_dsn, temporal_server, tmp_path, after_kept=True)
    assert (note.status, note.tries) == ("sent", 2)
    assert sink.received == 2, "the crash window was hit: the message was handed over twice"
    [message] = sink.messages()
    assert message["Message-ID"] == note.message_id
    assert message["To"] == "a@example.com"


@pytest.mark.heavy
async def test_killed_before_the_server_took_it_the_message_is_sent_once(
    store: Store, pg_dsn: str, temporal_server: TemporalDevServer, tmp_path: Path
) -> None:
    sink, note = await run_crash(store, pg_dsn, temporal_server, tmp_path, after_kept=False)
    assert (note.status, note.tries) == ("sent", 2)
    assert sink.received == 1
    [message] = sink.messages()
    assert message["Message-ID"] == note.message_id
