"""Activities of the recovery workflow: classification, PSP charges, Postgres writes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeats import heartbeating
from recovery.activity_defs import RecoveryActivityDefs
from recovery.classifier import classify
from recovery.constants import CHARGE_TRY_BUDGET, WEBHOOK_STALLED_AFTER
from recovery.errors import NotFound
from recovery.logs import bind
from recovery.models import (
    CardIdentity,
    CardRef,
    CardUsage,
    CardVerdict,
    ChargeLookup,
    ChargeRequest,
    ChargeResult,
    Classification,
    ClassifyRequest,
    FinishRequest,
    FinishResult,
    PaymentLookup,
    RecoveryState,
    RefundOutcome,
    RefundRequest,
    RevokeLinks,
)
from recovery.payments import refund_idempotency_key
from recovery.policy import (
    BeginRecovery,
    CardAttemptRequest,
    RecoveryBegun,
    RetryPolicy,
    card_window,
)
from recovery.psp.base import PSPAdapter, PSPRequestRejected, TransientPSPError
from recovery.psp.dispatcher import PSPDispatcher, PSPNotConfigured
from recovery.settings import Settings
from recovery.store import ReceivedPayment, Store

log = logging.getLogger("recovery.activities")

KEY_MARGIN = timedelta(hours=1)
"""A try this long before the PSP may prune its key already looks the attempt up first."""
T = TypeVar("T")


async def _within(budget: timedelta, call: Awaitable[T]) -> T:
    """`call`, stopped when it takes longer than `budget` (a transient failure)."""
    try:
        async with asyncio.timeout(budget.total_seconds()):
            return await call
    except TimeoutError:
        raise TransientPSPError(f"no answer from the PSP within {budget}") from None


class RecoveryActivities(RecoveryActivityDefs):
    """Built by the worker with its dependencies; each method is one activity, declared in
    `RecoveryActivityDefs` under the same name."""

    def __init__(self, store: Store, psps: PSPDispatcher, settings: Settings) -> None:
        self._store = store
        self._psps = psps
        self._settings = settings

    async def _psp(self, merchant_id: str, psp: str) -> PSPAdapter:
        """The merchant's adapter for `psp`. A PSP with no credentials, or one this
        deployment turns off (`PSPDisabled`), fails the activity for good under the one type
        name the workflow's retry policies list as non-retryable: `PSPNotConfigured`."""
        try:
            return await self._psps.for_merchant(merchant_id, psp)
        except PSPNotConfigured as e:
            raise ApplicationError(e.message, type="PSPNotConfigured", non_retryable=True) from e

    @activity.defn(name="classify_failure")
    async def classify_failure(self, req: ClassifyRequest) -> Classification:
        return classify(req)

    @activity.defn(name="begin_recovery")
    async def begin_recovery(self, req: BeginRecovery) -> RecoveryBegun:
        if not await self._store.recovery_is_open(req.recovery_id):
            return RecoveryBegun(open=False)
        return RecoveryBegun(
            open=True,
            policy=await self._store.current_policy(req.merchant_id),
            classification=classify(req.classify),
        )

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

    @activity.defn(name="reserve_card_attempt")
    async def reserve_card_attempt(self, req: CardAttemptRequest) -> CardVerdict:
        """Resolve the card the PSP will charge (the customer's default when no method is
        named) and reserve this attempt on it within the card-network limits, or say when
        the rolling window allows it."""
        card = await self._resolve_card(req)
        window = await self._store.reserve_card_attempt(
            req.merchant_id,
            card,
            req.idempotency_key,
            req.at,
            lambda attempted: card_window(req.policy, card.brand, attempted, req.at),
        )
        return CardVerdict(
            card=card,
            not_before=window.not_before,
            reason=window.reason,
            last_30_days=window.last_30_days,
            last_day=window.last_day,
        )

    async def _resolve_card(self, req: CardAttemptRequest) -> CardIdentity:
        try:
            psp = await self._psps.for_merchant(req.merchant_id, req.psp)
            return await psp.resolve_card(req.customer, req.payment_method)
        except TransientPSPError as e:
            raise ApplicationError(f"transient PSP error: {e}", type="TransientPSPError") from e
        except (PSPNotConfigured, PSPRequestRejected) as e:
            # The PSP cannot tell which card (nothing to charge, no credentials): the charge
            # is refused for the same reason. Count under what we know, never uncounted.
            log.info("card of %s not resolved: %s", req.idempotency_key, e)
            pm, customer = req.payment_method.id, req.customer.id
            key = f"{req.psp}:pm:{pm}" if pm else f"{req.psp}:customer:{customer}:default"
            return CardIdentity(key=key, brand=None, payment_method_id=pm)

    @activity.defn(name="check_payment_status")
    async def check_payment_status(self, req: PaymentLookup) -> ChargeResult:
        """The current status of a charge of ours that was left pending."""
        psp = await self._psp(req.merchant_id, req.psp)
        try:
            result = await psp.retrieve_payment_intent(req.psp_payment_id)
        except TransientPSPError as e:
            raise ApplicationError(f"transient PSP error: {e}", type="TransientPSPError") from e
        if result.status == "succeeded":  # the money arrived: it is a received payment
            await self._store.settle_pending_attempt(
                result, merchant_id=req.merchant_id, payment_ref=req.payment_ref
            )
        return result

    @activity.defn(name="revoke_retry_links")
    async def revoke_retry_links(self, req: RevokeLinks) -> int:
        """Revoke the recovery's links and close their hosted checkouts at the PSP, so none
        takes money after the recovery ended (retried until every PSP confirmed)."""
        revoked = await self._store.revoke_links(req.recovery_id, req.reason)
        for link_id, merchant_id, psp_name, checkout_id in await self._store.close_checkouts(
            req.recovery_id
        ):
            try:
                psp = await self._psps.for_merchant(merchant_id, psp_name)
            except PSPNotConfigured as e:
                # Nothing here can close it (no credentials, or the PSP is turned off): it
                # stays recorded open, and a payment it still takes is recorded by the usual
                # rules (a duplicate refunded). The links are revoked all the same.
                log.warning("checkout %s of link %s not closed: %s", checkout_id, link_id, e)
                continue
            try:
                await psp.close_checkout(checkout_id)
            except TransientPSPError as e:
                raise ApplicationError(f"transient PSP error: {e}", type="TransientPSPError") from e
            await self._store.checkout_closed(link_id)
            log.info("checkout %s of link %s closed at %s", checkout_id, link_id, psp_name)
        return revoked

    @activity.defn(name="save_recovery_state")
    async def save_recovery_state(self, state: RecoveryState) -> None:
        await self._store.save_state(state)

    @activity.defn(name="finish_recovery")
    async def finish_recovery(self, req: FinishRequest) -> FinishResult:
        return await self._store.finish(
            req.state,
            req.seen_event_ids,
            req.pending_payments,
            req.late_payments,
            revoke_links=req.revoke_links,
        )

    @activity.defn(name="charge_payment")
    async def charge_payment(self, req: ChargeRequest) -> ChargeResult:
        """One try of an attempt: recorded before the PSP call, charged once by its
        idempotency key. It heartbeats while the PSP works and stops within
        `CHARGE_TRY_BUDGET`. A cancel (the recovery was cancelled) lets the call in flight
        finish and returns its result: the truth about the attempt, and no further try."""
        bind(
            merchant_id=req.merchant_id,
            payment_ref=req.payment_ref,
            recovery_id=req.recovery_id,
            attempt=req.attempt,
        )
        psp = await self._psp(req.merchant_id, req.psp)
        started = await self._store.begin_attempt(req)
        try:
            result = await self._charged_before(psp, req, started)
            if result is None:
                result = await heartbeating(
                    _within(CHARGE_TRY_BUDGET, psp.create_payment_intent(req))
                )
        except TransientPSPError as e:
            raise ApplicationError(f"transient PSP error: {e}", type="TransientPSPError") from e
        except PSPRequestRejected as e:
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

    async def _charged_before(
        self, psp: PSPAdapter, req: ChargeRequest, started: datetime
    ) -> ChargeResult | None:
        """A try that comes so late that the PSP may have forgotten the attempt's idempotency
        key (Stripe prunes keys after 24 hours: workers down for a day, a task long in the
        queue) would run as a new charge: it looks the attempt up first. The charge found is
        the result; none found means nothing was charged, and charging now is safe."""
        window = psp.idempotency_window
        if window is None or datetime.now(UTC) - started < window - KEY_MARGIN:
            return None
        found = await psp.find_charge(req)
        log.warning(
            "charge %s: a try %s after the first, looked up first: %s",
            req.idempotency_key,
            datetime.now(UTC) - started,
            found.status if found else "nothing charged",
        )
        return found

    @activity.defn(name="find_attempt_charge")
    async def find_attempt_charge(self, req: ChargeRequest) -> ChargeLookup:
        """Settle an attempt whose tries all ended without an answer: look its charge up at
        the PSP and record what was found (or that nothing was charged)."""
        bind(merchant_id=req.merchant_id, payment_ref=req.payment_ref, attempt=req.attempt)
        psp = await self._psp(req.merchant_id, req.psp)
        try:
            result = await heartbeating(_within(CHARGE_TRY_BUDGET, psp.find_charge(req)))
        except TransientPSPError as e:
            raise ApplicationError(f"transient PSP error: {e}", type="TransientPSPError") from e
        await self._store.settle_unanswered_attempt(
            req.idempotency_key, result, "the PSP has no charge of this attempt"
        )
        log.info(
            "charge %s looked up: %s",
            req.idempotency_key,
            result.status if result else "nothing charged",
        )
        return ChargeLookup(result=result)

    @activity.defn(name="refund_duplicate_payment")
    async def refund_duplicate_payment(self, req: RefundRequest) -> RefundOutcome:
        """Refund a payment made twice, once (its idempotency key comes from the payment).
        A refusal by the PSP is recorded for operators, not retried."""
        paid = await self._store.received_payment(req.received_payment_id)
        if paid is None:
            raise ApplicationError("no such received payment", type="NotFound", non_retryable=True)
        bind(merchant_id=paid.merchant_id, payment_ref=paid.payment_ref)
        if paid.refund_status == "succeeded":
            return RefundOutcome(status="succeeded", psp_refund_id=paid.refund_id)
        outcome = await self._refund(paid)
        await self._store.record_refund(
            paid.id, status=outcome.status, refund_id=outcome.psp_refund_id, error=outcome.error
        )
        log.info("duplicate payment %s refund: %s", paid.id, outcome.status)
        return outcome

    @activity.defn(name="check_refund")
    async def check_refund(self, req: RefundRequest) -> RefundOutcome:
        """The current status of a duplicate payment's refund that was pending, recorded."""
        paid = await self._store.received_payment(req.received_payment_id)
        if paid is None:
            raise ApplicationError("no such received payment", type="NotFound", non_retryable=True)
        if paid.refund_status == "succeeded":
            return RefundOutcome(status="succeeded", psp_refund_id=paid.refund_id)
        if paid.refund_status != "pending" or not paid.refund_id:
            return RefundOutcome(
                status="failed", psp_refund_id=paid.refund_id, error=paid.refund_error
            )
        psp = await self._psp(paid.merchant_id, paid.psp)
        try:
            result = await psp.retrieve_refund(paid.refund_id)
        except TransientPSPError as e:
            raise ApplicationError(f"transient PSP error: {e}", type="TransientPSPError") from e
        error = "the PSP reported that the refund failed" if result.status == "failed" else None
        if result.status != "pending":
            await self._store.record_refund(
                paid.id, status=result.status, refund_id=result.psp_refund_id, error=error
            )
            log.info("duplicate payment %s refund settled: %s", paid.id, result.status)
        return RefundOutcome(status=result.status, psp_refund_id=result.psp_refund_id, error=error)

    async def _refund(self, paid: ReceivedPayment) -> RefundOutcome:
        if not paid.psp_payment_id:
            return RefundOutcome(status="failed", error="the PSP's id of the payment is unknown")
        try:
            psp = await self._psps.for_merchant(paid.merchant_id, paid.psp)
            result = await psp.refund_payment(
                paid.psp_payment_id,
                amount=paid.amount,
                idempotency_key=refund_idempotency_key(paid.id),
            )
        except TransientPSPError as e:
            raise ApplicationError(f"transient PSP error: {e}", type="TransientPSPError") from e
        except (PSPNotConfigured, PSPRequestRejected, NotFound) as e:
            return RefundOutcome(status="failed", error=f"the PSP refused the refund: {e}")
        return RefundOutcome(status=result.status, psp_refund_id=result.psp_refund_id)


class MaintenanceActivities:
    IDEMPOTENCY_KEY_TTL = timedelta(hours=24)
    DELIVERED_OUTBOX_TTL = timedelta(days=7)
    # merchant events (and their delivery log) are kept 30 days, as Stripe keeps its events;
    # their deliveries stop retrying after WEBHOOK_RETRY_FOR (3 days)
    MERCHANT_EVENT_TTL = timedelta(days=30)

    def __init__(self, store: Store) -> None:
        self._store = store

    @activity.defn(name="prune_expired_records")
    async def prune_expired_records(self) -> dict[str, int]:
        pruned = await self._store.prune(
            idempotency_older_than=self.IDEMPOTENCY_KEY_TTL,
            outbox_older_than=self.DELIVERED_OUTBOX_TTL,
            merchant_events_older_than=self.MERCHANT_EVENT_TTL,
            webhooks_stalled_after=WEBHOOK_STALLED_AFTER,
        )
        activity.logger.info("pruned expired records: %s", pruned)
        return pruned
