"""The recovery e-mails the customer while it waits for them: a retry link, reminders with
fresh links on the policy's days, nothing while paused, nothing after the end. Real worker
and activities on a time-skipping server, real Postgres, a real SMTP server (the sink)."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from recovery import constants as names
from recovery.customer_email import NO_ADDRESS, POLICY_OFF
from recovery.models import (
    CancelRequest,
    PauseRequest,
    PaymentSucceeded,
    RecoveryStatus,
    ResumeRequest,
)
from recovery.policy import RetryPolicy
from recovery.settings import Settings
from recovery.store import NotificationRecord, Store
from recovery.store.notifications import RECOVERY_ENDED
from scripts.mail_sink import MailSink
from tests.helpers import (
    RunningWorker,
    eventually,
    failure_body,
    ingest,
    relay,
    run_out,
    running_worker,
    start_recovery,
    wait_for_state,
    workflow_state,
)

MAIL_FROM = "Payments <payments@example.com>"
LOST_CARD = {"pm": "pm_sim_decline_lost_card", "decline_code": "lost_card", "code": "card_declined"}


def mail_settings(sink: MailSink) -> Settings:
    return Settings(
        environment="development",
        allow_simulator=True,
        smtp_url=SecretStr(sink.url),
        mail_from=MAIL_FROM,
    )


@pytest.fixture
def worker_settings(sink: MailSink) -> Settings:
    return mail_settings(sink)


async def notes(store: Store, merchant: str, ref: str) -> list[NotificationRecord]:
    return list(reversed(await store.notifications_of(merchant, ref)))


async def settled_note(store: Store, merchant: str, ref: str) -> NotificationRecord:
    """The payment's one notification, once it is no longer queued."""

    async def settled() -> NotificationRecord | None:
        found = await notes(store, merchant, ref)
        return found[0] if found and found[0].status != "queued" else None

    return await eventually(settled)


async def mails(sink: MailSink, count: int) -> list[EmailMessage]:
    """The sink's messages once it holds `count` (and, a moment later, still `count`)."""

    async def exactly() -> list[EmailMessage] | None:
        got = sink.messages()
        assert len(got) <= count, f"{len(got)} messages, expected {count}"
        return got if len(got) == count else None

    return await eventually(exactly)


def link_in(message: EmailMessage) -> str:
    html = message.get_body(("html",))
    text = message.get_body(("plain",))
    assert html is not None and text is not None
    url = re.search(r"(http://\S+/pay/retry/[\w.-]+)", text.get_content())
    assert url is not None, text.get_content()
    assert url.group(1) in html.get_content()
    return url.group(1)


async def awaiting(handle: WorkflowHandle) -> None:
    await wait_for_state(handle, lambda s: s.status is RecoveryStatus.AWAITING_CUSTOMER)


async def test_a_retry_link_then_a_reminder_on_each_reminder_day_then_nothing(
    worker: RunningWorker,
    ts_env: WorkflowEnvironment,
    store: Store,
    merchant: str,
    sink: MailSink,
) -> None:
    await store.update_merchant(merchant, reply_to="help@merchant.test")
    ref = f"order_{uuid.uuid4().hex[:8]}"
    handle = await start_recovery(store, worker, merchant, ref=ref, **LOST_CARD)
    await awaiting(handle)
    [first] = await mails(sink, 1)
    assert first["To"] == "a@example.com"
    assert first["Reply-To"] == "help@merchant.test"
    assert first["Subject"].startswith("Action needed: your payment of 49.99 USD")
    assert "Test Merchant" in first["From"]
    await ts_env.sleep(timedelta(days=3, hours=1))
    await mails(sink, 2)
    await ts_env.sleep(timedelta(days=4))
    messages = await mails(sink, 3)
    kinds = [m["Subject"].split(":")[0] for m in messages]
    assert kinds == ["Action needed", "Reminder", "Reminder"]
    links = [link_in(m) for m in messages]
    assert len(set(links)) == 3, "each reminder carries a fresh link"
    assert len({m["Message-ID"] for m in messages}) == 3
    state = await workflow_state(handle)
    assert len(state.links) == 3

    result = await run_out(ts_env, handle)  # the window closes: no reminder after day 7
    assert result.status is RecoveryStatus.EXHAUSTED
    assert len(sink.messages()) == 3
    sent = await notes(store, merchant, ref)
    assert [(n.kind, n.status) for n in sent] == [
        ("retry_link", "sent"),
        ("reminder", "sent"),
        ("reminder", "sent"),
    ]
    assert all(n.sent_at is not None and n.message_id for n in sent)
    assert [n.link_id for n in sent] == [lnk.link_id for lnk in state.links]


async def test_paid_before_the_first_reminder_no_reminder_is_sent(
    worker: RunningWorker,
    ts_env: WorkflowEnvironment,
    store: Store,
    merchant: str,
    sink: MailSink,
) -> None:
    ref = f"order_{uuid.uuid4().hex[:8]}"
    handle = await start_recovery(store, worker, merchant, ref=ref, **LOST_CARD)
    await awaiting(handle)
    await mails(sink, 1)
    await ts_env.sleep(timedelta(days=1))
    await handle.signal(names.SIGNAL_PAYMENT_SUCCEEDED, PaymentSucceeded(source="test"))
    assert (await handle.result()).status is RecoveryStatus.RECOVERED
    await ts_env.sleep(timedelta(days=10))
    assert len(sink.messages()) == 1
    assert [n.status for n in await notes(store, merchant, ref)] == ["sent"]


async def test_no_email_while_paused_and_the_reminder_due_meanwhile_goes_out_on_resume(
    worker: RunningWorker,
    ts_env: WorkflowEnvironment,
    store: Store,
    merchant: str,
    sink: MailSink,
) -> None:
    ref = f"order_{uuid.uuid4().hex[:8]}"
    handle = await start_recovery(store, worker, merchant, ref=ref, **LOST_CARD)
    await awaiting(handle)
    await mails(sink, 1)
    await handle.signal(names.SIGNAL_PAUSE, PauseRequest(reason="dispute", actor="support"))
    await wait_for_state(handle, lambda s: s.paused)
    await ts_env.sleep(timedelta(days=4))  # day 3's reminder falls due while paused
    assert len(sink.messages()) == 1
    await handle.signal(names.SIGNAL_RESUME, ResumeRequest(actor="support"))
    await mails(sink, 2)
    await ts_env.sleep(timedelta(days=3, hours=1))  # day 7's
    await mails(sink, 3)


async def test_a_policy_without_email_issues_links_and_sends_nothing(
    worker: RunningWorker, store: Store, merchant: str, sink: MailSink
) -> None:
    await store.save_policy(merchant, RetryPolicy(email_customers=False), actor="test")
    ref = f"order_{uuid.uuid4().hex[:8]}"
    handle = await start_recovery(store, worker, merchant, ref=ref, **LOST_CARD)
    await awaiting(handle)
    note = await settled_note(store, merchant, ref)
    assert (note.status, note.error, note.link_id is not None) == ("suppressed", POLICY_OFF, True)
    assert sink.messages() == []


async def test_a_customer_without_an_address_gets_a_link_recorded_as_not_sent(
    worker: RunningWorker, store: Store, merchant: str, sink: MailSink
) -> None:
    body = failure_body(**LOST_CARD)
    body["customer"] = {"id": "cus_no_mail"}
    res = await ingest(store, merchant, body)
    await relay(store, worker.client, worker.task_queue)
    handle = worker.client.get_workflow_handle(res.body["workflow_id"])
    await awaiting(handle)
    note = await settled_note(store, merchant, body["payment_ref"])
    assert (note.status, note.error, note.recipient) == ("suppressed", NO_ADDRESS, None)
    assert sink.messages() == []


async def test_a_deferring_server_is_tried_again_and_a_refusal_is_final(
    ts_env: WorkflowEnvironment, store: Store, merchant: str, tmp_path: Path
) -> None:
    answers = {"deferred@example.com": ["451 4.3.0 busy, try later"], "gone@example.com": []}
    tries: dict[str, int] = {}

    def answer(message: EmailMessage) -> str | None:
        to = str(message["To"])
        tries[to] = tries.get(to, 0) + 1
        if to == "gone@example.com":
            return "550 5.1.1 no such mailbox"
        queue = answers.get(to, [])
        return queue.pop(0) if queue else None

    sink = MailSink(tmp_path / "mail", answer=answer, say=lambda _line: None).start()
    try:
        async with running_worker(ts_env.client, store, settings=mail_settings(sink)) as env:
            refs = {}
            for to in answers:
                body = failure_body(**LOST_CARD)
                body["customer"] = {"id": "cus_x", "email": to}
                refs[to] = body["payment_ref"]
                await ingest(store, merchant, body)
                await relay(store, env.client, env.task_queue)

            async def settled() -> dict[str, NotificationRecord] | None:
                got = {to: await notes(store, merchant, ref) for to, ref in refs.items()}
                done = all(n and n[0].status != "queued" for n in got.values())
                return {to: n[0] for to, n in got.items()} if done else None

            final = await eventually(settled, within=60)
    finally:
        sink.stop()
    deferred, gone = final["deferred@example.com"], final["gone@example.com"]
    assert (deferred.status, deferred.tries, tries["deferred@example.com"]) == ("sent", 2, 2)
    assert (gone.status, gone.tries, tries["gone@example.com"]) == ("failed", 1, 1)
    assert gone.error is not None and "550 5.1.1 no such mailbox" in gone.error
    assert [m["To"] for m in sink.messages()] == ["deferred@example.com"]


async def test_an_email_still_deferred_at_the_end_is_not_sent_after_it(
    ts_env: WorkflowEnvironment, store: Store, merchant: str, tmp_path: Path
) -> None:
    sink = MailSink(
        tmp_path / "mail", answer=lambda _m: "421 4.7.0 later", say=lambda _line: None
    ).start()
    try:
        async with running_worker(ts_env.client, store, settings=mail_settings(sink)) as env:
            ref = f"order_{uuid.uuid4().hex[:8]}"
            handle = await start_recovery(store, env, merchant, ref=ref, **LOST_CARD)
            await awaiting(handle)

            async def tried() -> bool:
                return bool((await notes(store, merchant, ref))[0].tries)

            await eventually(tried)
            await handle.signal(names.SIGNAL_CANCEL, CancelRequest(reason="left", actor="t"))
            assert (await handle.result()).status is RecoveryStatus.CANCELLED
            [note] = await notes(store, merchant, ref)
            assert (note.status, note.error) == ("suppressed", RECOVERY_ENDED)
    finally:
        sink.stop()
    assert sink.messages() == []
