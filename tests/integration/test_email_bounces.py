"""A message the SMTP server took and then could not deliver: the bounce mailed back to us
(a delivery status notification, piped to `recovery mail bounce` as a mail server does)
marks it failed with the remote server's words, and its address is not mailed again for
that merchant (another merchant's customer at the same address still is). Through the real
workflow, a real SMTP server (the dev sink) and the operator CLI in its own process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recovery.store import Store
from scripts.mail_sink import MailSink
from tests.helpers import INGEST, Stack, add_merchant, cli, eventually, failure_body
from tests.helpers.bounces import dsn

ADDRESS = "nobody@example.com"


async def hard_decline(stack: Stack, key: str | None = None) -> str:
    body = failure_body(decline_code="lost_card")
    body["customer"] = {"id": "cus_gone", "email": ADDRESS}
    r = await stack.http.post(INGEST, json=body, headers=stack.auth(key))
    assert r.status_code == 202, r.text
    return str(body["payment_ref"])


async def settled_note(stack: Stack, ref: str, key: str | None = None) -> dict[str, Any]:
    async def settled() -> dict[str, Any]:
        r = await stack.http.get("/v1/notifications", params={"ref": ref}, headers=stack.auth(key))
        assert r.status_code == 200, r.text
        [note] = r.json()["data"]
        assert note["status"] != "queued", note
        return dict(note)

    return await eventually(settled, within=30, what=f"the e-mail of {ref} settled")


def kept_files(sink: MailSink) -> list[Path]:
    return sorted(sink.directory.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)


def bounce(pg_dsn: str, tmp_path: Path, report: bytes) -> dict[str, Any]:
    path = tmp_path / "bounce.eml"
    path.write_bytes(report)
    done = cli(pg_dsn, "mail", "bounce", str(path), "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


async def test_a_bounce_fails_the_message_and_its_address_is_not_mailed_again(
    mailing: Stack, sink: MailSink, store: Store, pg_dsn: str, tmp_path: Path
) -> None:
    ref = await hard_decline(mailing)
    note = await settled_note(mailing, ref)
    assert note["status"] == "sent", note
    [sent] = kept_files(sink)

    recorded = bounce(pg_dsn, tmp_path, dsn(sent.read_bytes(), recipient=ADDRESS))
    reason = (
        f"bounced: {ADDRESS} 5.1.1: smtp; 550 5.1.1 <{ADDRESS}>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )
    assert recorded == {
        "notification_id": recorded["notification_id"],
        "merchant_id": mailing.merchant_id,
        "payment_ref": ref,
        "status": "failed",
        "error": reason,
    }
    r = await mailing.http.get("/v1/notifications", params={"ref": ref}, headers=mailing.auth())
    [shown] = r.json()["data"]
    assert (shown["id"], shown["status"], shown["error"]) == (note["id"], "failed", reason)
    assert shown["sent_at"] == note["sent_at"]  # it was sent; then it bounced

    # the same report again (mail servers repeat themselves): the same record, no error
    assert bounce(pg_dsn, tmp_path, dsn(sent.read_bytes(), recipient=ADDRESS)) == recorded

    # the next payment of a customer at that address: recorded, not sent, saying why
    again = await hard_decline(mailing)
    later = await settled_note(mailing, again)
    assert later["status"] == "suppressed", later
    assert later["error"] == f"an earlier message to this address {reason}"
    assert len(kept_files(sink)) == 1

    # another merchant's customer at the same address is still mailed
    _, other_key = await add_merchant(store)
    theirs = await hard_decline(mailing, other_key)
    assert (await settled_note(mailing, theirs, other_key))["status"] == "sent"
    assert len(kept_files(sink)) == 2


async def test_what_is_no_bounce_of_ours_is_read_and_let_go(
    mailing: Stack, pg_dsn: str, tmp_path: Path
) -> None:
    reply = b"From: alice@example.com\nSubject: Re: your payment\n\nI paid already.\n"
    assert bounce(pg_dsn, tmp_path, reply) == {
        "ignored": "not a delivery status notification (text/plain)"
    }
    stranger = (
        b"From: x@example.com\nTo: y@example.com\nSubject: hi\n"
        b"Message-ID: <not-ours@example.com>\n\nhello\n"
    )
    assert bounce(pg_dsn, tmp_path, dsn(stranger, recipient="y@example.com")) == {
        "ignored": "no message of ours has Message-ID <not-ours@example.com>"
    }


def test_a_bounce_that_cannot_be_recorded_now_is_tried_again_by_the_mail_server(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bounce.eml"
    path.write_bytes(b"anything")
    # nothing listens there: EX_TEMPFAIL, which tells the mail server to try again later
    done = cli("postgresql://nobody@127.0.0.1:1/none", "mail", "bounce", str(path))
    assert done.returncode == 75, (done.returncode, done.stderr)
    assert "cannot reach the database" in done.stderr
