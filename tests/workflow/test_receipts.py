"""CustomerReceiptWorkflow sends a recorded receipt once, after its recovery ended, and,
when the SMTP server defers it every time, gives up after the e-mail's 12 tries (about 8
hours of workflow time) with the receipt recorded failed, saying why. Real worker and
activities on a time-skipping server, real Postgres, a real SMTP server (the sink)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from recovery import constants as names
from recovery.models import NotificationSent, SendNotification
from recovery.settings import Settings
from recovery.store import Store
from scripts.mail_sink import MailSink
from tests.helpers import RunningWorker, add_merchant, recorded_receipt
from workflows.receipts import CustomerReceiptWorkflow

DEFERRED = "later@example.com"


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[MailSink]:
    s = MailSink(
        tmp_path / "mail",
        answer=lambda m: "451 4.3.0 try again later" if m["To"] == DEFERRED else None,
        say=lambda _line: None,
    ).start()
    yield s
    s.stop()


@pytest.fixture
def worker_settings(sink: MailSink) -> Settings:
    return Settings(
        environment="development",
        allow_simulator=True,
        smtp_url=SecretStr(sink.url),
        mail_from="Payments <payments@example.com>",
    )


async def send(worker: RunningWorker, note_id: int) -> NotificationSent:
    return await worker.client.execute_workflow(
        CustomerReceiptWorkflow.run,
        SendNotification(notification_id=note_id),
        id=names.receipt_workflow_id(f"rcv_{uuid.uuid4().hex[:8]}"),
        task_queue=worker.task_queue,
    )


async def test_a_receipt_is_sent_once(worker: RunningWorker, store: Store, sink: MailSink) -> None:
    merchant_id, _ = await add_merchant(store)
    note_id = await recorded_receipt(store, merchant_id, "paid@example.com")

    assert await send(worker, note_id) == NotificationSent(status="sent")
    [message] = sink.messages()
    assert message["Subject"] == "Receipt: your payment of 49.99 USD to Test Merchant"
    # started again (a relay that lost the answer): the record says it was sent, no copy
    assert await send(worker, note_id) == NotificationSent(status="sent")
    assert sink.received == 1


async def test_a_receipt_the_server_always_defers_fails_after_its_tries(
    worker: RunningWorker, store: Store, sink: MailSink
) -> None:
    merchant_id, _ = await add_merchant(store)
    note_id = await recorded_receipt(store, merchant_id, DEFERRED)

    sent = await send(worker, note_id)

    assert sent.status == "failed" and sent.error and "451" in sent.error, sent
    row = await store.pool.fetchrow(
        "SELECT status, tries, error FROM customer_notifications WHERE id = $1", note_id
    )
    assert (row["status"], row["tries"]) == ("failed", names.EMAIL_MAX_TRIES)
    assert "451 4.3.0 try again later" in row["error"]
    assert sink.messages() == []
