"""A recovery's whole story for its console page: the payment, each failure and how the
classifier read it (category, action, the rule that decided), every attempt with the time
planned for it and why, the links and what the customer did with them, the payments
received, the e-mails, the merchant webhook events and their deliveries, the support actions
(audit log), the earlier runs of the payment and the workflow in the Temporal UI."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from recovery.classifier import classify
from recovery.models import Classification, ClassifyRequest, RecoveryStatus
from recovery.settings import Settings
from recovery.store import (
    AuditEntryRecord,
    LinkSummary,
    NotificationRecord,
    ReceivedPayment,
    RecoveryRecord,
    Store,
)
from recovery.store.records import (
    AttemptDetail,
    MerchantEventRecord,
    PaymentRecord,
    RunSummary,
)

EARLY = timedelta(seconds=60)  # an attempt this much before its planned time was brought forward


@dataclass(frozen=True)
class FailureView:
    event_id: str
    occurred_at: datetime
    received_at: datetime
    code: str | None
    decline_code: str | None
    message: str | None
    network_advice_code: str | None
    payment_method: str | None
    classification: Classification | None


@dataclass(frozen=True)
class AttemptView:
    detail: AttemptDetail
    why: str
    early: bool


@dataclass(frozen=True)
class Story:
    recovery: RecoveryRecord
    payment: PaymentRecord | None
    failures: list[FailureView]
    attempts: list[AttemptView]
    links: list[LinkSummary]
    payments: list[ReceivedPayment]
    emails: list[NotificationRecord]
    webhooks: list[MerchantEventRecord]
    audit: list[AuditEntryRecord]
    runs: list[RunSummary]
    temporal_url: str | None

    @property
    def status(self) -> RecoveryStatus:
        return RecoveryStatus(self.recovery.status)

    @property
    def ended(self) -> bool:
        return self.status.ended

    def actions(self, role_can_support: bool) -> list[str]:
        """The actions this recovery allows now, for a key with (or without) the support
        role; the server checks both again when one is posted."""
        r = self.recovery
        allowed: list[str] = []
        if not self.ended:
            allowed.append("link")
        if not role_can_support:
            return allowed
        if self.status is RecoveryStatus.EXHAUSTED:
            allowed.append("retry")
        if not self.ended:
            if r.status == RecoveryStatus.ACTIVE and r.next_attempt_at and not r.paused:
                allowed.append("expedite")
            allowed.append("resume" if r.paused else "pause")
            allowed += ["apply_policy", "cancel"]
        return allowed


def temporal_url(settings: Settings, workflow_id: str) -> str | None:
    if not settings.temporal_ui_url:
        return None
    base = settings.temporal_ui_url.rstrip("/")
    return (
        f"{base}/namespaces/{quote(settings.temporal_namespace, safe='')}"
        f"/workflows/{quote(workflow_id, safe='')}"
    )


def _failure(payload: dict[str, Any], event: Any) -> FailureView:
    failure = payload.get("failure") or {}
    method = payload.get("payment_method") or {}
    classification = None
    if any(failure.get(k) for k in ("code", "decline_code", "message")):
        try:
            classification = classify(
                ClassifyRequest(
                    psp=str(payload.get("psp") or ""),
                    code=failure.get("code"),
                    decline_code=failure.get("decline_code"),
                    message=failure.get("message"),
                    network_advice_code=failure.get("network_advice_code"),
                    payment_method_type=method.get("type"),
                )
            )
        except ValueError:
            classification = None  # a stored event from before a field was validated
    return FailureView(
        event_id=event.event_id,
        occurred_at=event.occurred_at,
        received_at=event.received_at,
        code=failure.get("code"),
        decline_code=failure.get("decline_code"),
        message=failure.get("message"),
        network_advice_code=failure.get("network_advice_code"),
        payment_method=" ".join(str(v) for v in (method.get("type"), method.get("id")) if v)
        or None,
        classification=classification,
    )


def _attempt(a: AttemptDetail) -> AttemptView:
    early = a.planned_at is not None and a.created_at < a.planned_at - EARLY
    if a.planned_reason:
        why = a.planned_reason
    elif a.number == 1 and a.planned_at is None:
        why = "not recorded (an attempt made before planned times were kept)"
    else:
        why = "not recorded"
    return AttemptView(detail=a, why=why, early=early)


async def story(store: Store, settings: Settings, merchant_id: str, ref: str) -> Story:
    """The story of the payment's latest recovery run (404 for an unknown ref)."""
    rec = await store.get_recovery(merchant_id, ref)
    # one query after another: a page holds one pooled connection at a time
    payment = await store.payment_of(merchant_id, ref)
    events = await store.events_of(merchant_id, rec.id)
    attempts = await store.attempts_detail(merchant_id, rec.id)
    links = await store.links_of(rec.id)
    payments = await store.payments_of(rec.id)
    emails = await store.notifications_of(merchant_id, ref, 100)
    webhooks = await store.recovery_webhook_events(merchant_id, rec.id)
    audit = await store.audit_entries(merchant_id, ref, 200)
    runs = await store.runs_of(merchant_id, ref)
    return Story(
        recovery=rec,
        payment=payment,
        failures=[_failure(e.payload, e) for e in events],
        attempts=[_attempt(a) for a in attempts],
        links=links,
        payments=payments,
        emails=[e for e in emails if e.recovery_id in (None, rec.id)],
        webhooks=webhooks,
        audit=audit,
        runs=runs,
        temporal_url=temporal_url(settings, rec.workflow_id),
    )
