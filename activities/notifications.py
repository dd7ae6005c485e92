"""Activities that tell the customer: a retry link with the message carrying it, and sending
that message by e-mail (SMTP).

At most one message per notification: a notification is recorded once (its key is the
issuing activity's own id, the same on every retry), a message that ended (sent, failed,
suppressed) is never sent again, and every try of one message carries the same Message-ID,
so the one copy a crash between the server's acceptance and our record may add is one that
mail systems and clients collapse.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeats import heartbeating
from recovery import mail
from recovery.activity_defs import NotificationActivityDefs
from recovery.constants import EMAIL_MAX_TRIES
from recovery.customer_email import EMAIL_OFF, POLICY_OFF, email_of, why_not_send
from recovery.logs import bind
from recovery.mail import MailDeferred, MailRefused
from recovery.models import LinkIssued, LinkRequest, NotificationSent, SendNotification
from recovery.retry_links import url_of
from recovery.settings import Settings
from recovery.store import NotificationRecord, OutgoingNotification, Store

log = logging.getLogger("recovery.activities")


class NotificationActivities(NotificationActivityDefs):
    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._smtp = settings.smtp_server()
        self._sender = mail.sender_address(settings.mail_from) if settings.mail_from else None

    @activity.defn(name="issue_retry_link")
    async def issue_retry_link(self, req: LinkRequest) -> LinkIssued:
        bind(merchant_id=req.merchant_id, payment_ref=req.payment_ref)
        info = activity.info()
        note = await self._store.record_notification(
            key=f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}",
            merchant_id=req.merchant_id,
            payment_ref=req.payment_ref,
            kind=req.kind or "retry_link",
            link_ttl=timedelta(seconds=self._settings.email_link_ttl_seconds),
        )
        out = await self._store.outgoing_notification(note.id)
        if out.link is None:  # recorded with a link: a bug, not a business outcome
            raise ApplicationError(f"notification {note.id} has no link", non_retryable=True)
        if note.status == "queued":
            why = POLICY_OFF if not req.send_email else self._why_not_send(out)
            if why is not None:  # known now: no e-mail to send in the background
                note = await self._store.settle_notification(note.id, "suppressed", why)
            elif req.kind is None:  # a recovery from before the `email-customers` patch
                note = await self._send(note.id, last_try=True)  # one try, here
        log.info("retry link %s issued (%s): %s", out.link.id, note.kind, req.reason)
        return LinkIssued(
            link_id=out.link.id,
            expires_at=out.link.expires_at,
            notification_id=note.id if note.status == "queued" else None,
        )

    @activity.defn(name="send_customer_email")
    async def send_customer_email(self, req: SendNotification) -> NotificationSent:
        last_try = activity.info().attempt >= EMAIL_MAX_TRIES
        note = await self._send(req.notification_id, last_try=last_try)
        return NotificationSent(status=note.status, error=note.error)

    def _why_not_send(self, out: OutgoingNotification, now: datetime | None = None) -> str | None:
        email_on = self._smtp is not None and self._sender is not None
        return why_not_send(out, now=now or datetime.now(UTC), email_on=email_on)

    async def _send(self, notification_id: int, *, last_try: bool) -> NotificationRecord:
        """Send a queued notification once: its record says how it ended, or a temporary
        refusal is raised (retried) until `last_try`, whose refusal marks it failed."""
        out = await self._store.outgoing_notification(notification_id)
        note = out.notification
        bind(merchant_id=note.merchant_id, payment_ref=note.payment_ref)
        if note.status != "queued":
            return note  # ended: never sent twice
        now = datetime.now(UTC)
        server, sender = self._smtp, self._sender
        why = self._why_not_send(out, now)
        if why or server is None or sender is None:
            log.info("notification %s suppressed: %s", note.id, why)
            return await self._store.settle_notification(note.id, "suppressed", why or EMAIL_OFF)
        url = url_of(out.link, self._settings) if out.link else None
        message = mail.build_message(
            email_of(out, url), sender=sender, notification_key=out.notification_key, now=now
        )
        await self._store.begin_notification_try(
            note.id, subject=str(message["Subject"]), message_id=str(message["Message-ID"])
        )
        try:
            await heartbeating(
                mail.send(
                    server,
                    message,
                    seconds_per_step=self._settings.smtp_timeout_seconds,
                    ca_file=self._settings.smtp_ca_file,
                )
            )
        except MailRefused as e:
            log.warning("notification %s refused: %s", note.id, e)
            return await self._store.settle_notification(note.id, "failed", str(e))
        except MailDeferred as e:
            if last_try:
                log.warning("notification %s failed after its last try: %s", note.id, e)
                return await self._store.settle_notification(note.id, "failed", str(e))
            await self._store.settle_notification(note.id, "queued", str(e))
            raise ApplicationError(str(e), type="MailDeferred") from None
        log.info("notification %s sent: %s %s", note.id, note.kind, message["Message-ID"])
        return await self._store.settle_notification(note.id, "sent")
