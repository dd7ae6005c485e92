"""Activities of the recovery workflow: classification, PSP charges, Postgres writes."""

from __future__ import annotations

import logging
from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from recovery.activity_defs import RecoveryActivityDefs
from recovery.classifier import classify
from recovery.logs import bind
from recovery.models import (
    CardRef,
    CardUsage,
    ChargeRequest,
    ChargeResult,
    Classification,
    ClassifyRequest,
    FinishRequest,
    FinishResult,
    LinkIssued,
    LinkRequest,
    PaymentLookup,
    RecoveryState,
    RevokeLinks,
)
from recovery.policy import RetryPolicy
from recovery.psp.base import TransientPSPError
from recovery.psp.dispatcher import PSPDispatcher, PSPNotConfigured
from recovery.psp.razorpay import RazorpayError
from recovery.psp.stripe import StripeRequestRejected
from recovery.retry_links import issue_link
from recovery.settings import Settings
from recovery.store import Store

log = logging.getLogger("recovery.activities")


class RecoveryActivities(RecoveryActivityDefs):
    """Built by the worker with its dependencies; each method is one activity, declared in
    `RecoveryActivityDefs` under the same name."""

    def __init__(self, store: Store, psps: PSPDispatcher, settings: Settings) -> None:
        self._store = store
        self._psps = psps
        self._settings = settings

    @activity.defn(name="classify_failure")
    async def classify_failure(self, req: ClassifyRequest) -> Classification:
        return classify(req)

    @activity.defn(name="recovery_is_open")
    async def recovery_is_open(self, recovery_id: str) -> bool:
        return await self._store.recovery_is_open(recovery_id)

    @activity.defn(name="load_retry_policy")
    async def load_retry_policy(self, merchant_id: str) -> RetryPolicy:
        return await self._store.current_policy(merchant_id)

    @activity.defn(name="count_card_attempts")
    async def count_card_attempts(self, card: CardRef) -> CardUsage:
        month, day = await self._store.card_attempts(card.merchant_id, card.payment_method_id)
        return CardUsage(last_30_days=month, last_day=day)

    @activity.defn(name="check_payment_status")
    async def check_payment_status(self, req: PaymentLookup) -> ChargeResult:
        """The current status of a charge of ours that was left pending."""
        psp = await self._psps.for_merchant(req.merchant_id, req.psp)
        try:
            return await psp.retrieve_payment_intent(req.psp_payment_id)
        except TransientPSPError as e:
            raise ApplicationError(f"transient PSP error: {e}", type="TransientPSPError") from e

    @activity.defn(name="issue_retry_link")
    async def issue_retry_link(self, req: LinkRequest) -> LinkIssued:
        """Issue a link and hand it to the customer notification outbox (e-mail when we
        have the customer's address, else the merchant's webhook)."""
        bind(merchant_id=req.merchant_id, payment_ref=req.payment_ref)
        link = await issue_link(
            self._store, self._settings, req.merchant_id, req.payment_ref, "workflow"
        )
        view = await self._store.link_page(link.link_id)
        email = view.customer_email if view else None
        await self._store.add_notification(
            req.merchant_id,
            req.payment_ref,
            link.link_id,
            "email" if email else "merchant_webhook",
            email,
            link.url,
        )
        log.info("retry link %s issued: %s", link.link_id, req.reason)
        return LinkIssued(link_id=link.link_id, expires_at=link.expires_at)

    @activity.defn(name="revoke_retry_links")
    async def revoke_retry_links(self, req: RevokeLinks) -> int:
        return await self._store.revoke_links(req.recovery_id, req.reason)

    @activity.defn(name="save_recovery_state")
    async def save_recovery_state(self, state: RecoveryState) -> None:
        await self._store.save_state(state)

    @activity.defn(name="finish_recovery")
    async def finish_recovery(self, req: FinishRequest) -> FinishResult:
        return await self._store.finish(req.state, req.seen_event_ids)

    @activity.defn(name="charge_payment")
    async def charge_payment(self, req: ChargeRequest) -> ChargeResult:
        """One attempt: recorded before the PSP call, charged once by its idempotency key."""
        bind(
            merchant_id=req.merchant_id,
            payment_ref=req.payment_ref,
            recovery_id=req.recovery_id,
            attempt=req.attempt,
        )
        try:
            psp = await self._psps.for_merchant(req.merchant_id, req.psp)
        except PSPNotConfigured as e:
            raise ApplicationError(e.message, type="PSPNotConfigured", non_retryable=True) from e
        await self._store.begin_attempt(req)
        try:
            result = await psp.create_payment_intent(req)
        except TransientPSPError as e:
            raise ApplicationError(f"transient PSP error: {e}", type="TransientPSPError") from e
        except (StripeRequestRejected, RazorpayError) as e:
            # the PSP refused the request itself (not a decline): retrying cannot help
            raise ApplicationError(
                f"the PSP rejected the request: {e}", type="PSPRequestRejected", non_retryable=True
            ) from e
        await self._store.complete_attempt(req.idempotency_key, result)
        log.info(
            "charge %s: %s %d %s",
            req.idempotency_key,
            result.status,
            req.amount,
            req.currency,
            extra={
                "code": (result.failure.decline_code or result.failure.code)
                if result.failure
                else None
            },
        )
        return result


class MaintenanceActivities:
    IDEMPOTENCY_KEY_TTL = timedelta(hours=24)
    DELIVERED_OUTBOX_TTL = timedelta(days=7)

    def __init__(self, store: Store) -> None:
        self._store = store

    @activity.defn(name="prune_expired_records")
    async def prune_expired_records(self) -> dict[str, int]:
        pruned = await self._store.prune(
            idempotency_older_than=self.IDEMPOTENCY_KEY_TTL,
            outbox_older_than=self.DELIVERED_OUTBOX_TTL,
        )
        activity.logger.info("pruned expired records: %s", pruned)
        return pruned
