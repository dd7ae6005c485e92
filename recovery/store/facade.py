"""`Store`: the one object callers hold (`StoreDep`), delegating to the aggregate modules.

Every read and write that concerns a merchant's data takes the merchant id and filters by it.
Connection failures surface as `Unavailable` (503 with Retry-After at the API).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from recovery.models import (
    CardIdentity,
    ChargeRequest,
    ChargeResult,
    ChargeStatus,
    FinishResult,
    PaymentFailedIn,
    RecoveryState,
    WebhookDeliveryRequest,
    WebhookEvent,
)
from recovery.policy import CardWindow, RetryPolicy
from recovery.store import (
    analytics,
    attempts,
    audit,
    db,
    history,
    ingest,
    links,
    maintenance,
    merchant_webhooks,
    merchants,
    notifications,
    outbox,
    payments,
    policies,
    recoveries,
    sessions,
    simulator,
    webhook_queue,
    webhooks,
)
from recovery.store.records import (
    ActivityItem,
    AnalyticsSummary,
    ApiKeyInfo,
    ApiKeyRecord,
    AttemptDetail,
    AuditEntryRecord,
    ConsoleSession,
    DayFigures,
    DeliveryTarget,
    DueDeliveries,
    FailureEventRecord,
    IngestResult,
    LinkSummary,
    LinkView,
    MerchantEventRecord,
    MerchantFigures,
    MerchantRecord,
    MetricsSnapshot,
    NotificationRecord,
    OpenCount,
    OutboxRow,
    OutgoingNotification,
    PaymentRecord,
    ReceivedPayment,
    RecoveryRecord,
    RunSummary,
    SealedSecret,
    SimulatorCheckout,
    StoredPSPCredentials,
    TryDone,
    WebhookDeliveryRecord,
    WebhookEndpointRecord,
)
from recovery.views import RecoveryOut
from recovery.webhook_routing import WebhookOutcome


class Store:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 0, max_size: int = 10) -> Store:
        return cls(await db.create_pool(dsn, min_size=min_size, max_size=max_size))

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> None:
        async with db.connection(self.pool) as conn:
            await conn.fetchval("SELECT 1")

    # ---- merchants and keys (merchants.py) --------------------------------------------------

    async def ensure_merchant(self, merchant_id: str, name: str) -> None:
        await merchants.ensure_merchant(self.pool, merchant_id, name)

    async def list_merchants(self) -> list[MerchantRecord]:
        return await merchants.list_merchants(self.pool)

    async def update_merchant(
        self, merchant_id: str, *, name: str | None = None, reply_to: str | None = None
    ) -> MerchantRecord | None:
        return await merchants.update_merchant(self.pool, merchant_id, name=name, reply_to=reply_to)

    async def add_api_key(
        self, key_id: str, merchant_id: str, role: str, key_hash: bytes, prefix: str
    ) -> None:
        await merchants.add_api_key(self.pool, key_id, merchant_id, role, key_hash, prefix)

    async def list_api_keys(self, merchant_id: str) -> list[ApiKeyInfo]:
        return await merchants.list_api_keys(self.pool, merchant_id)

    async def revoke_api_key(self, key_id: str) -> bool:
        return await merchants.revoke_api_key(self.pool, key_id)

    async def api_key_by_hash(self, key_hash: bytes) -> ApiKeyRecord | None:
        return await merchants.api_key_by_hash(self.pool, key_hash)

    # ---- ingest (ingest.py) -----------------------------------------------------------------

    async def ingest_failure(
        self,
        merchant_id: str,
        body: PaymentFailedIn,
        *,
        idempotency_key: str | None,
        request_hash: str,
    ) -> IngestResult:
        return await ingest.ingest_failure(
            self.pool, merchant_id, body, idempotency_key=idempotency_key, request_hash=request_hash
        )

    # ---- outbox (outbox.py) -----------------------------------------------------------------

    async def relay_outbox(
        self,
        limit: int,
        deliver: Callable[[Sequence[OutboxRow]], Awaitable[dict[int, str | None]]],
        *,
        first_failure_of: str | None = None,
    ) -> tuple[int, int]:
        return await outbox.relay(self.pool, limit, deliver, first_failure_of=first_failure_of)

    async def outbox_pending(self) -> int:
        return await outbox.pending(self.pool)

    # ---- recoveries (recoveries.py) ---------------------------------------------------------

    async def redrive(self, merchant_id: str, payment_ref: str) -> str:
        return await recoveries.redrive(self.pool, merchant_id, payment_ref)

    async def save_state(self, state: RecoveryState) -> None:
        await recoveries.save_state(self.pool, state)

    async def finish(
        self,
        state: RecoveryState,
        seen_event_ids: Sequence[str],
        pending_payments: Sequence[str] = (),
        late_payments: Mapping[str, datetime] | None = None,
        *,
        revoke_links: bool = False,
    ) -> FinishResult:
        return await recoveries.finish(
            self.pool,
            state,
            seen_event_ids,
            pending_payments,
            late_payments,
            revoke_links=revoke_links,
        )

    async def recovery_is_open(self, recovery_id: str) -> bool:
        return await recoveries.recovery_is_open(self.pool, recovery_id)

    async def has_open_recovery(self, workflow_id: str) -> bool:
        return await recoveries.has_open_recovery(self.pool, workflow_id)

    async def get_recovery(self, merchant_id: str, payment_ref: str) -> RecoveryRecord:
        return await recoveries.get_recovery(self.pool, merchant_id, payment_ref)

    async def recovery_view(self, merchant_id: str, payment_ref: str) -> RecoveryOut:
        """The payment's latest recovery as merchants see it (`GET .../by_ref/{ref}`)."""
        return await recoveries.get_recovery_view(self.pool, merchant_id, payment_ref)

    async def list_recoveries(
        self,
        merchant_id: str,
        *,
        status: str | None,
        category: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[RecoveryRecord], str | None]:
        return await recoveries.list_recoveries(
            self.pool, merchant_id, status=status, category=category, limit=limit, cursor=cursor
        )

    # ---- attempts (attempts.py) -------------------------------------------------------------

    async def begin_attempt(self, req: ChargeRequest) -> datetime:
        return await attempts.begin_attempt(self.pool, req)

    async def complete_attempt(self, idempotency_key: str, result: ChargeResult) -> None:
        await attempts.complete_attempt(self.pool, idempotency_key, result)

    async def card_attempts(self, merchant_id: str, payment_method_id: str) -> tuple[int, int]:
        return await attempts.card_attempts(self.pool, merchant_id, payment_method_id)

    async def reserve_card_attempt(
        self,
        merchant_id: str,
        card: CardIdentity,
        idempotency_key: str,
        at: datetime,
        decide: Callable[[list[datetime]], CardWindow],
    ) -> CardWindow:
        return await attempts.reserve_card_attempt(
            self.pool, merchant_id, card, idempotency_key, at, decide
        )

    # ---- retry policies (policies.py) -------------------------------------------------------

    async def current_policy(self, merchant_id: str) -> RetryPolicy:
        return await policies.current_policy(self.pool, merchant_id)

    async def save_policy(self, merchant_id: str, policy: RetryPolicy, actor: str) -> RetryPolicy:
        return await policies.save_policy(self.pool, merchant_id, policy, actor)

    # ---- audit (audit.py) -------------------------------------------------------------------

    async def audit(
        self,
        *,
        merchant_id: str,
        actor_key_id: str,
        actor_role: str,
        action: str,
        payment_ref: str | None,
        recovery_id: str | None,
        reason: str | None,
        result: str,
    ) -> None:
        await audit.audit(
            self.pool,
            merchant_id=merchant_id,
            actor_key_id=actor_key_id,
            actor_role=actor_role,
            action=action,
            payment_ref=payment_ref,
            recovery_id=recovery_id,
            reason=reason,
            result=result,
        )

    async def audit_entries(
        self, merchant_id: str, payment_ref: str | None, limit: int
    ) -> list[AuditEntryRecord]:
        return await audit.audit_entries(self.pool, merchant_id, payment_ref, limit)

    # ---- retry links, notifications, simulator checkout (links.py) ---------------------------

    async def add_link(
        self, merchant_id: str, payment_ref: str, *, issued_by: str, expires_at: datetime
    ) -> tuple[str, str]:
        return await links.add_link(
            self.pool, merchant_id, payment_ref, issued_by=issued_by, expires_at=expires_at
        )

    async def link_page(self, link_id: str) -> LinkView | None:
        """Everything the customer's page shows about a link, or None for an unknown link."""
        return await links.link_view(self.pool, link_id)

    async def mark_link_opened(self, link_id: str) -> None:
        await links.mark_link_opened(self.pool, link_id)

    async def link_checkout(
        self,
        link_id: str,
        create: Callable[[str | None], Awaitable[tuple[str, str, str]]],
        *,
        simulator_return_url: str,
    ) -> str:
        return await links.link_checkout(
            self.pool, link_id, create, simulator_return_url=simulator_return_url
        )

    async def revoke_links(self, recovery_id: str, reason: str) -> int:
        return await links.revoke_links(self.pool, recovery_id, reason)

    async def links_of(self, recovery_id: str) -> list[LinkSummary]:
        return await links.links_of(self.pool, recovery_id)

    async def close_checkouts(self, recovery_id: str) -> list[tuple[str, str, str, str]]:
        return await links.close_checkouts(self.pool, recovery_id)

    async def checkout_closed(self, link_id: str) -> None:
        await links.checkout_closed(self.pool, link_id)

    async def simulator_checkout_view(self, checkout_id: str) -> SimulatorCheckout | None:
        return await links.simulator_checkout_view(self.pool, checkout_id)

    async def pay_simulator_checkout(self, checkout_id: str) -> str:
        return await links.pay_simulator_checkout(self.pool, checkout_id)

    # ---- messages to customers (notifications.py) -------------------------------------------

    async def record_notification(
        self,
        *,
        key: str,
        merchant_id: str,
        payment_ref: str,
        kind: str,
        link_ttl: timedelta | None,
    ) -> NotificationRecord:
        return await notifications.record_notification(
            self.pool,
            key=key,
            merchant_id=merchant_id,
            payment_ref=payment_ref,
            kind=kind,
            link_ttl=link_ttl,
        )

    async def outgoing_notification(self, notification_id: int) -> OutgoingNotification:
        return await notifications.outgoing_notification(self.pool, notification_id)

    async def begin_notification_try(
        self, notification_id: int, *, subject: str, message_id: str
    ) -> None:
        await notifications.begin_notification_try(
            self.pool, notification_id, subject=subject, message_id=message_id
        )

    async def settle_notification(
        self, notification_id: int, status: str, error: str | None = None
    ) -> NotificationRecord:
        return await notifications.settle_notification(self.pool, notification_id, status, error)

    async def record_bounce(self, message_id: str, reason: str) -> NotificationRecord | None:
        return await notifications.record_bounce(self.pool, message_id, reason)

    async def notifications_of(
        self, merchant_id: str, payment_ref: str | None, limit: int = 100
    ) -> list[NotificationRecord]:
        return await notifications.notifications_of(self.pool, merchant_id, payment_ref, limit)

    # ---- PSP credentials and webhooks (webhooks.py) -----------------------------------------

    async def psp_credentials(self, merchant_id: str, psp: str) -> StoredPSPCredentials | None:
        return await webhooks.psp_credentials(self.pool, merchant_id, psp)

    async def all_psp_credentials(self) -> list[StoredPSPCredentials]:
        return await webhooks.all_psp_credentials(self.pool)

    async def set_psp_credentials(
        self,
        merchant_id: str,
        psp: str,
        key_id: str,
        sealed: bytes,
        *,
        if_updated_at: datetime | None = None,
    ) -> bool:
        return await webhooks.set_psp_credentials(
            self.pool, merchant_id, psp, key_id, sealed, if_updated_at=if_updated_at
        )

    async def record_webhook(
        self, event: WebhookEvent, payload: dict[str, Any], *, account: str | None = None
    ) -> tuple[bool, WebhookOutcome]:
        return await webhooks.record_webhook(self.pool, event, payload, account=account)

    # ---- merchant webhooks (merchant_webhooks.py) -------------------------------------------

    async def create_webhook_endpoint(
        self,
        *,
        endpoint_id: str,
        merchant_id: str,
        url: str,
        description: str | None,
        events: Sequence[str] | None,
        secret: SealedSecret,
    ) -> WebhookEndpointRecord:
        return await merchant_webhooks.create_endpoint(
            self.pool,
            endpoint_id=endpoint_id,
            merchant_id=merchant_id,
            url=url,
            description=description,
            events=events,
            secret=secret,
        )

    async def list_webhook_endpoints(self, merchant_id: str) -> list[WebhookEndpointRecord]:
        return await merchant_webhooks.list_endpoints(self.pool, merchant_id)

    async def delete_webhook_endpoint(self, merchant_id: str, endpoint_id: str) -> None:
        await merchant_webhooks.delete_endpoint(self.pool, merchant_id, endpoint_id)

    async def rotate_webhook_secret(
        self,
        merchant_id: str,
        endpoint_id: str,
        secret: SealedSecret,
        previous_signs_for: timedelta,
    ) -> WebhookEndpointRecord:
        return await merchant_webhooks.rotate_secret(
            self.pool, merchant_id, endpoint_id, secret, previous_signs_for
        )

    async def webhook_delivery_target(
        self, merchant_id: str, endpoint_id: str, event_id: str
    ) -> DeliveryTarget | None:
        return await merchant_webhooks.delivery_target(
            self.pool, merchant_id, endpoint_id, event_id
        )

    async def record_webhook_delivery(
        self,
        req: WebhookDeliveryRequest,
        *,
        attempt: int,
        attempted_at: datetime,
        status_code: int | None,
        error: str | None,
        duration_ms: int,
        next_retry_at: datetime | None,
    ) -> str:
        return await merchant_webhooks.record_delivery(
            self.pool,
            req,
            attempt=attempt,
            attempted_at=attempted_at,
            status_code=status_code,
            error=error,
            duration_ms=duration_ms,
            next_retry_at=next_retry_at,
        )

    async def webhook_deliveries_due(
        self, merchant_id: str, endpoint_id: str, limit: int, now: datetime
    ) -> DueDeliveries:
        return await webhook_queue.due(self.pool, merchant_id, endpoint_id, limit, now)

    async def record_webhook_tries(
        self, endpoint_id: str, done: list[TryDone], now: datetime
    ) -> tuple[bool, datetime | None]:
        return await webhook_queue.record_tries(self.pool, endpoint_id, done, now)

    async def recovery_webhook_events(
        self, merchant_id: str, recovery_id: str
    ) -> list[MerchantEventRecord]:
        """The merchant events of one recovery run with their delivery tries."""
        return await merchant_webhooks.recovery_events(self.pool, merchant_id, recovery_id)

    async def list_webhook_deliveries(
        self,
        merchant_id: str,
        *,
        endpoint_id: str | None,
        event_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[WebhookDeliveryRecord], str | None]:
        return await merchant_webhooks.list_deliveries(
            self.pool,
            merchant_id,
            endpoint_id=endpoint_id,
            event_id=event_id,
            limit=limit,
            cursor=cursor,
        )

    async def queue_webhook_redelivery(
        self, merchant_id: str, endpoint_id: str, event_id: str
    ) -> str:
        return await merchant_webhooks.queue_redelivery(
            self.pool, merchant_id, endpoint_id, event_id
        )

    # ---- simulator PSP ledger (simulator.py) ------------------------------------------------

    async def simulator_charge(
        self, req: ChargeRequest, status: ChargeStatus, decline_code: str | None
    ) -> tuple[str, ChargeStatus, str | None]:
        return await simulator.simulator_charge(self.pool, req, status, decline_code)

    async def settle_pending_attempt(
        self,
        result: ChargeResult,
        *,
        merchant_id: str | None = None,
        payment_ref: str | None = None,
    ) -> None:
        await attempts.settle_pending_attempt(
            self.pool, result, merchant_id=merchant_id, payment_ref=payment_ref
        )

    async def settle_unanswered_attempt(
        self, idempotency_key: str, result: ChargeResult | None, why: str
    ) -> None:
        await attempts.settle_unanswered_attempt(self.pool, idempotency_key, result, why)

    # ---- received payments (payments.py) ---------------------------------------------------

    async def received_payment(self, payment_id: str) -> ReceivedPayment | None:
        return await payments.received_payment(self.pool, payment_id)

    async def payments_of(self, recovery_id: str) -> list[ReceivedPayment]:
        return await payments.payments_of(self.pool, recovery_id)

    async def record_refund(
        self, payment_id: str, *, status: str, refund_id: str | None, error: str | None
    ) -> None:
        await payments.record_refund(
            self.pool, payment_id, status=status, refund_id=refund_id, error=error
        )

    async def simulator_refund_amount(self, refund_id: str) -> int:
        return await simulator.simulator_refund_amount(self.pool, refund_id)

    async def simulator_refund(self, psp_payment_id: str, amount: int | None, key: str) -> str:
        return await simulator.simulator_refund(self.pool, psp_payment_id, amount, key)

    async def simulator_payment(self, psp_payment_id: str) -> tuple[ChargeStatus, str | None]:
        return await simulator.simulator_payment(self.pool, psp_payment_id)

    async def simulator_charge_by_key(
        self, idempotency_key: str
    ) -> tuple[str, ChargeStatus, str | None] | None:
        return await simulator.simulator_charge_by_key(self.pool, idempotency_key)

    # ---- maintenance and metrics (maintenance.py) -------------------------------------------

    async def prune(
        self,
        *,
        idempotency_older_than: timedelta,
        outbox_older_than: timedelta,
        merchant_events_older_than: timedelta,
        webhooks_stalled_after: timedelta,
    ) -> dict[str, int]:
        return await maintenance.prune(
            self.pool,
            idempotency_older_than=idempotency_older_than,
            outbox_older_than=outbox_older_than,
            merchant_events_older_than=merchant_events_older_than,
            webhooks_stalled_after=webhooks_stalled_after,
        )

    async def metrics_snapshot(self) -> MetricsSnapshot:
        return await maintenance.metrics_snapshot(self.pool)

    # ---- analytics (analytics.py) -----------------------------------------------------------

    async def analytics_summary(
        self, merchant_id: str, start: datetime, end: datetime
    ) -> AnalyticsSummary:
        return await analytics.summary(self.pool, merchant_id, start, end)

    async def analytics_days(
        self, merchant_id: str, start: datetime, end: datetime
    ) -> list[DayFigures]:
        return await analytics.days(self.pool, merchant_id, start, end)

    async def merchant_figures(self, since: datetime, top: int) -> MerchantFigures:
        """Every merchant's figures for /metrics, the `top` merchants named (the rest together)."""
        return await analytics.merchant_figures(self.pool, since, top)

    # ---- console sessions (sessions.py) -----------------------------------------------------

    async def create_console_session(
        self,
        *,
        id_hash: bytes,
        key_id: str,
        merchant_id: str,
        csrf_token: str,
        expires_at: datetime,
    ) -> None:
        await sessions.create_session(
            self.pool,
            id_hash=id_hash,
            key_id=key_id,
            merchant_id=merchant_id,
            csrf_token=csrf_token,
            expires_at=expires_at,
        )

    async def console_session(self, id_hash: bytes, idle: timedelta) -> ConsoleSession | None:
        return await sessions.touch_session(self.pool, id_hash, idle)

    async def end_console_session(self, id_hash: bytes) -> bool:
        return await sessions.delete_session(self.pool, id_hash)

    async def set_console_flash(self, id_hash: bytes, kind: str, message: str) -> None:
        await sessions.set_flash(self.pool, id_hash, kind, message)

    async def take_console_flash(self, id_hash: bytes) -> tuple[str, str] | None:
        return await sessions.take_flash(self.pool, id_hash)

    async def switch_console_merchant(self, id_hash: bytes, merchant_id: str) -> bool:
        return await sessions.switch_merchant(self.pool, id_hash, merchant_id)

    # ---- what the console reads (history.py) ------------------------------------------------

    async def search_recoveries(
        self,
        merchant_id: str,
        *,
        q: str | None = None,
        status: str | None = None,
        category: str | None = None,
        psp: str | None = None,
        started_from: datetime | None = None,
        started_to: datetime | None = None,
        limit: int = 25,
        cursor: str | None = None,
    ) -> tuple[list[RecoveryRecord], str | None]:
        return await history.search_recoveries(
            self.pool,
            merchant_id,
            q=q,
            status=status,
            category=category,
            psp=psp,
            started_from=started_from,
            started_to=started_to,
            limit=limit,
            cursor=cursor,
        )

    async def payment_of(self, merchant_id: str, payment_ref: str) -> PaymentRecord | None:
        return await history.payment_of(self.pool, merchant_id, payment_ref)

    async def events_of(self, merchant_id: str, recovery_id: str) -> list[FailureEventRecord]:
        return await history.events_of(self.pool, merchant_id, recovery_id)

    async def attempts_detail(self, merchant_id: str, recovery_id: str) -> list[AttemptDetail]:
        return await history.attempts_detail(self.pool, merchant_id, recovery_id)

    async def runs_of(self, merchant_id: str, payment_ref: str) -> list[RunSummary]:
        return await history.runs_of(self.pool, merchant_id, payment_ref)

    async def recent_activity(self, merchant_id: str, limit: int = 20) -> list[ActivityItem]:
        return await history.recent_activity(self.pool, merchant_id, limit)

    async def upcoming_attempts(self, merchant_id: str, limit: int = 10) -> list[RecoveryRecord]:
        return await history.upcoming_attempts(self.pool, merchant_id, limit)

    async def open_by_category(self, merchant_id: str) -> list[OpenCount]:
        return await history.open_by_category(self.pool, merchant_id)
