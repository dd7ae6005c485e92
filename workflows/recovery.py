"""PaymentRecoveryWorkflow: one durable recovery per failed payment.

Deterministic code only: time comes from ``workflow.now()``, randomness from
``workflow.random()``, everything else from activities. Any change here must keep the stored
histories in ``tests/histories/`` replaying (use ``workflow.patched`` for new behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import TypedDict, TypeVar, assert_never

from temporalio import workflow
from temporalio.common import RetryPolicy as ActivityRetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType, ActivityHandle

with workflow.unsafe.imports_passed_through():
    from recovery import constants as names
    from recovery.activity_defs import RecoveryActivityDefs
    from recovery.models import (
        Attempt,
        CancelRequest,
        CardRef,
        ChargeLookup,
        ChargeRequest,
        ChargeResult,
        Classification,
        ClassifyRequest,
        ExpediteRequest,
        Failure,
        FailureEvent,
        FinishRequest,
        LinkRequest,
        PauseRequest,
        PaymentLookup,
        PaymentMethodUpdate,
        PaymentSucceeded,
        RecoveryInput,
        RecoveryState,
        RecoveryStatus,
        ResumeRequest,
        RevokeLinks,
    )
    from recovery.policy import (
        LEGACY_POLICY,
        AwaitStatus,
        CardAttemptRequest,
        CustomerAction,
        Decision,
        Exhausted,
        Retry,
        RetryPolicy,
        card_limit_reached,
        decide,
    )


ChargeResultT = TypeVar("ChargeResultT", ChargeResult, ChargeLookup)


class _ActivityOptions(TypedDict):
    start_to_close_timeout: timedelta
    retry_policy: ActivityRetryPolicy


# Bookkeeping activities (Postgres writes) retry until the database answers.
_STORE = _ActivityOptions(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=ActivityRetryPolicy(maximum_interval=timedelta(minutes=1)),
)
# A charge is retried with the same idempotency key, so a retry never charges twice.
_CHARGE_RETRY = ActivityRetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=2),
    non_retryable_error_types=["PSPNotConfigured"],
)
# Recoveries started after this patch load the merchant's retry policy and respect the
# card-network limits; older histories replay with LEGACY_POLICY and no card check.
POLICY_PATCH = "merchant-retry-policy"
# Recoveries started after this patch send the customer retry links while they wait for
# them, and revoke every outstanding link when they end.
LINKS_PATCH = "retry-links"
# Recoveries after this patch poll the PSP for a charge of theirs left pending (besides
# waiting for its webhook), never charging again while it may still complete.
POLLING_PATCH = "poll-pending-payments"
# Recoveries after this patch act on support actions at once and exactly: expedite only
# when an attempt waits on its cooldown (never armed for later); pause and resume show at
# once in Postgres and the search attributes; a policy update also reaches a recovery
# awaiting the customer; a new payment method is attempted now; events of another recovery
# that arrive with the first are kept for it; search attributes and memo follow the latest
# event; a pending payment that cannot be checked ends the recovery instead of failing it.
EXACT_ACTIONS_PATCH = "exact-support-actions"
# Recoveries after this patch bound each charge (heartbeats, a start-to-close above the
# adapters' own budget, a few tries) and settle an attempt left without an answer by looking
# it up at the PSP, never by a blind new charge; cancel stops a charge's retries; before any
# new charge, every earlier charge that may still complete is checked again at the PSP (also
# a pending failure's own payment, when the event names it); a charge canceled or refunded at
# the PSP ends the recovery for that reason instead of being retried.
BOUNDED_CHARGES_PATCH = "bounded-charges"
_CHARGE_BOUNDED = ActivityRetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=names.CHARGE_MAX_TRIES,
    non_retryable_error_types=["PSPNotConfigured", "PSPRequestRejected"],
)
# Looking an attempt up is a read: retried until the PSP answers (or the recovery is
# cancelled); after a cancel, a few tries only.
_LOOKUP_RETRY = ActivityRetryPolicy(
    initial_interval=timedelta(seconds=5),
    maximum_interval=timedelta(minutes=10),
    non_retryable_error_types=["PSPNotConfigured"],
)
_LOOKUP_AFTER_CANCEL = ActivityRetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_attempts=3,
    non_retryable_error_types=["PSPNotConfigured"],
)
# An attempt left without an answer is looked up this long after its last try, so that the
# PSP's lists and search (which may lag its writes) show the charge if there is one.
LOOKUP_AFTER = timedelta(minutes=2)
# What an attempt counts as when the PSP has no charge of it, or when it could not be looked
# up before the recovery was cancelled.
CHARGE_NOT_MADE = "charge_not_made"
OUTCOME_UNKNOWN = Failure(
    code="charge_outcome_unknown",
    message="the attempt's outcome could not be looked up at the PSP before the cancel",
)


# Recoveries after this patch count every attempt on the card the PSP will charge (the
# customer's default card included, one card under several payment-method ids once), reserve
# it on that card before charging, and wait (shown as the next attempt) when a card-network
# limit is reached until the rolling window allows the attempt, ending `exhausted` only when
# that is after the recovery window.
CARD_WINDOW_PATCH = "card-limits-rolling-window"
PENDING_POLL_EVERY = timedelta(minutes=5)
# Recoveries after this patch wait for a pending payment as long as its PSP says it can take
# (a Razorpay recurring debit waits out a 24 h pre-debit notice: the result's own failure
# code, e.g. `recurring_debit_pending`, names the wait, where it used to read as a 30-minute
# `payment_pending`), poll it less often the longer it takes (5 minutes, doubling, at most
# PENDING_POLL_MAX), and check earlier pending payments before reserving an attempt on the
# card, so a debit still pending never takes a place in the card-network limits.
PATIENT_PENDING_PATCH = "patient-pending-debits"
PENDING_POLL_MAX = timedelta(hours=1)
# Recoveries after this patch that end while a payment of theirs is still pending at the PSP
# (a debit waiting out its pre-debit notice when the customer paid by a link, a cancel, the
# window's end) have a WatchPendingPaymentWorkflow started for it through the outbox, in the
# transaction that ends them: when it settles it is recorded (a duplicate refunded, a payment
# after the end shown), never dropped.
WATCH_PENDING_PATCH = "watch-pending-after-end"
# Recoveries after this patch keep each failed charge the PSP may still authorise late (its
# result's `may_complete_until`: Razorpay asks the bank for 3 days after a timeout), check
# it again before any new charge (one authorised late ends the recovery `recovered`), and
# name it as they end, so that it is watched until then.
LATE_AUTH_PATCH = "late-authorisations"
# While waiting for the customer, a fresh link (the last one expired) goes out this often.
LINK_REMINDER_EVERY = timedelta(days=3)
# What a pending payment that never completed counts as (no message: it must not read as
# "pending" again to the classifier's message patterns).
PENDING_EXPIRED = Failure(code="payment_pending_expired")


class Wake(Enum):
    """Why a wait ended. `_news` looks for them in this order: the first one wins."""

    PAID = "paid"
    CANCELLED = "cancelled"
    PAUSE_CHANGED = "pause_changed"  # paused or resumed, and not yet shown
    EXPEDITED = "expedited"
    METHOD_UPDATED = "method_updated"
    NEW_FAILURE = "new_failure"
    POLICY_CHANGED = "policy_changed"
    TIMER = "timer"  # nothing woke it: the time was up


# What each wait wakes for. Before EXACT_ACTIONS_PATCH only a cooldown woke for an
# expedite or a policy, and pauses showed when the cooldown ended.
_ENDINGS = frozenset({Wake.PAID, Wake.CANCELLED, Wake.NEW_FAILURE})
_LEGACY_COOLDOWN = _ENDINGS | {Wake.EXPEDITED, Wake.POLICY_CHANGED}
_COOLDOWN = _LEGACY_COOLDOWN | {Wake.PAUSE_CHANGED, Wake.METHOD_UPDATED}
_CUSTOMER = _ENDINGS | {Wake.PAUSE_CHANGED, Wake.METHOD_UPDATED, Wake.POLICY_CHANGED}
# a pending payment may still complete: a new method or policy waits until it settles
_PENDING = _ENDINGS | {Wake.PAUSE_CHANGED}
# the card-network limits hold the attempt: an expedite cannot move it, a new card is checked
_CARD_HELD = _ENDINGS | {Wake.PAUSE_CHANGED, Wake.METHOD_UPDATED, Wake.POLICY_CHANGED}


class Stage(Enum):
    """What the main loop is doing, for the handlers that must know (expedite)."""

    DECIDING = "deciding"
    COOLDOWN = "cooldown"
    PAUSED = "paused"
    AWAITING_CUSTOMER = "awaiting_customer"
    AWAITING_PENDING = "awaiting_pending"
    CHARGING = "charging"
    CARD_LIMIT = "card_limit"
    ENDING = "ending"


@dataclass(frozen=True)
class Ending:
    """How a recovery ends, and why (as the reason the operator reads)."""

    status: RecoveryStatus
    reason: str


def _memo_of(event: FailureEvent) -> dict[str, object]:
    """The memo the Temporal UI shows for a run (set at start by the relay, then kept)."""
    return {
        "amount": event.amount,
        "currency": event.currency,
        "customer": event.customer.id,
        "recovery_id": event.recovery_id,
    }


def _outcome_of(result: ChargeResult) -> str:
    """An attempt's outcome as the recovery shows it."""
    if result.failure == OUTCOME_UNKNOWN:
        return "unknown"
    if result.failure is not None and result.failure.code == CHARGE_NOT_MADE:
        return "not_made"
    return result.status


def _ending_of(result: ChargeResult, what: str) -> Ending | None:
    """How a charge's result ends the recovery when it is neither a success nor a decline
    (canceled or refunded at the PSP: a person did that, so nobody charges again)."""
    match result.status:
        case "canceled":
            return Ending(
                RecoveryStatus.CANCELLED,
                f"{what} was canceled at the PSP (by the merchant or the PSP): not charged again",
            )
        case "refunded":
            return Ending(
                RecoveryStatus.CANCELLED,
                f"{what} was paid and then refunded at the PSP: not charged again",
            )
        case _:
            return None


def _failure_of(result: ChargeResult, *, patient: bool = False) -> Failure:
    """What an attempt that did not succeed tells the classifier (a pending one: its PSP's
    word on how long it may take, when it has one and the recovery is `patient`)."""
    if result.status == "processing":
        if patient and result.failure is not None:
            return result.failure
        return Failure(code="payment_pending")
    if result.status == "requires_action":  # 3-D Secure or similar: only the customer can
        return result.failure or Failure(code="authentication_required")
    return result.failure or Failure(code="unknown")


@workflow.defn(name=names.RECOVERY_WORKFLOW)
class PaymentRecoveryWorkflow:
    @workflow.init
    def __init__(self, inp: RecoveryInput) -> None:
        self._state = RecoveryState(merchant_id=inp.merchant_id, payment_ref=inp.payment_ref)
        self._arrived: list[FailureEvent] = list(inp.pending_events)  # not yet sorted out
        self._inbox: list[FailureEvent] = []  # failures of this recovery, not yet acted on
        self._later: list[FailureEvent] = []  # failures of another recovery run
        self._seen: set[str] = set()
        self._succeeded: PaymentSucceeded | None = None
        self._cancel: CancelRequest | None = None
        self._expedite: ExpediteRequest | None = None
        self._event: FailureEvent | None = None
        self._policy: RetryPolicy = LEGACY_POLICY
        self._policy_changed = False
        self._card_limits = False
        self._links = False
        self._pending_payment: str | None = None  # our charge that may still complete
        self._started_at: datetime = workflow.now()  # set again when the run starts acting
        self._exact = False  # EXACT_ACTIONS_PATCH
        self._stage = Stage.DECIDING
        self._shown_paused = False  # the `paused` last written to Postgres
        self._new_method: PaymentMethodUpdate | None = None
        self._shown_event: tuple[object, ...] | None = None  # what search attributes show
        self._bounded = False  # BOUNDED_CHARGES_PATCH
        self._unsettled: list[str] = []  # PSP ids of payments that may still complete
        self._patient = False  # PATIENT_PENDING_PATCH
        self._attempt_of: dict[str, int] = {}  # pending PSP payment id -> its attempt's index
        self._late: dict[str, datetime] = {}  # failed payments that may complete, until when
        self._late_auth = False  # LATE_AUTH_PATCH

    # ---- signals and query (handlers only record; the main loop acts) -----------------------

    @workflow.signal(name=names.SIGNAL_PAYMENT_FAILED)
    def payment_failed(self, event: FailureEvent) -> None:
        self._arrived.append(event)
        self._sort_arrivals()

    @workflow.signal(name=names.SIGNAL_PAYMENT_SUCCEEDED)
    def payment_succeeded(self, info: PaymentSucceeded) -> None:
        if self._succeeded is None:
            self._succeeded = info

    @workflow.signal(name=names.SIGNAL_CANCEL)
    def cancel(self, req: CancelRequest) -> None:
        if self._cancel is None:
            self._cancel = req

    @workflow.signal(name=names.SIGNAL_EXPEDITE)
    def expedite(self, req: ExpediteRequest) -> None:
        """Operators' expedite: ignored (never armed for later) when no attempt waits."""
        if self._exact and (why := self._nothing_to_expedite()) is not None:
            workflow.logger.info("expedite by %s ignored: %s", req.actor, why)
            return
        self._expedite = req

    @workflow.update(name=names.UPDATE_EXPEDITE)
    def expedite_attempt(self, req: ExpediteRequest) -> RecoveryState:
        """The API's expedite: refused by the validator when no attempt waits."""
        self._expedite = req
        return self._state

    @expedite_attempt.validator
    def _validate_expedite(self, req: ExpediteRequest) -> None:
        if (why := self._nothing_to_expedite()) is not None:
            raise ApplicationError(why, type=names.NOTHING_TO_EXPEDITE)

    def _nothing_to_expedite(self) -> str | None:
        """Why an expedite now would have nothing to act on, or None when it would."""
        if self._stage is Stage.COOLDOWN and not self._state.paused:
            return None
        if self._state.paused or self._stage is Stage.PAUSED:
            return "the recovery is paused: resume it to attempt"
        return {
            Stage.AWAITING_CUSTOMER: "the recovery is awaiting the customer",
            Stage.AWAITING_PENDING: "a payment is pending at the PSP and may still complete",
            Stage.CHARGING: "an attempt is in flight",
            Stage.CARD_LIMIT: "the card-network limits hold the next attempt until it is due",
            Stage.ENDING: "the recovery is ending",
        }.get(self._stage, "no attempt is waiting")

    @workflow.signal(name=names.SIGNAL_PAYMENT_METHOD_UPDATED)
    def payment_method_updated(self, update: PaymentMethodUpdate) -> None:
        """The next attempt uses the new method; a waiting one happens now."""
        self._new_method = update

    @workflow.signal(name=names.SIGNAL_PAUSE)
    def pause(self, req: PauseRequest) -> None:
        """No attempt is made while paused; a cooldown that ends meanwhile waits for resume."""
        self._state.paused = True
        self._state.paused_reason = f"paused by {req.actor}: {req.reason}".rstrip(": ")
        if self._exact:
            self._expedite = None  # an expedite does not outlive a pause

    @workflow.signal(name=names.SIGNAL_RESUME)
    def resume(self, req: ResumeRequest) -> None:
        self._state.paused = False
        self._state.paused_reason = None

    @workflow.signal(name=names.SIGNAL_UPDATE_POLICY)
    def update_policy(self, policy: RetryPolicy) -> None:
        """An operator applies a new policy version to this running recovery."""
        self._policy = policy
        self._state.policy_version = policy.version
        self._policy_changed = True

    @workflow.query(name=names.QUERY_STATE)
    def state(self) -> RecoveryState:
        return self._state

    def _refile_inbox(self) -> None:
        """Events sorted before this run knew its recovery id: another recovery's wait."""
        mine = self._state.recovery_id
        for ev in [e for e in self._inbox if e.recovery_id != mine]:
            self._inbox.remove(ev)
            self._seen.discard(ev.event_id)
            self._later.append(ev)

    def _sort_arrivals(self) -> None:
        mine = self._state.recovery_id
        for ev in self._arrived:
            if ev.event_id in self._seen or any(e.event_id == ev.event_id for e in self._later):
                continue  # duplicate delivery
            if mine is None or ev.recovery_id == mine:
                self._seen.add(ev.event_id)
                self._inbox.append(ev)
            else:
                self._later.append(ev)
        self._arrived.clear()

    # ---- main -------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: RecoveryInput) -> RecoveryState:
        await workflow.wait_condition(lambda: bool(self._arrived or self._inbox))
        first = (self._arrived or self._inbox)[0]
        self._state.recovery_id = first.recovery_id
        self._sort_arrivals()
        self._exact = workflow.patched(EXACT_ACTIONS_PATCH)
        if self._exact:
            self._refile_inbox()
        self._bounded = workflow.patched(BOUNDED_CHARGES_PATCH)
        self._patient = self._bounded and workflow.patched(PATIENT_PENDING_PATCH)
        self._late_auth = self._patient and workflow.patched(LATE_AUTH_PATCH)

        if not await workflow.execute_activity_method(
            RecoveryActivityDefs.recovery_is_open, first.recovery_id, **_STORE
        ):
            # A late delivery for a recovery that already ended: nothing to do.
            self._state.ended_reason = "event belongs to a recovery that already ended"
            return await self._close()

        if workflow.patched(POLICY_PATCH):
            if not self._policy_changed:
                self._policy = await workflow.execute_activity_method(
                    RecoveryActivityDefs.load_retry_policy, inp.merchant_id, **_STORE
                )
            self._card_limits = True
        self._state.policy_version = self._policy.version
        self._links = workflow.patched(LINKS_PATCH)
        self._started_at = workflow.now()
        failure = self._absorb_inbox() or PENDING_EXPIRED
        workflow.upsert_search_attributes(
            [
                names.SA_MERCHANT_ID.value_set(inp.merchant_id),
                names.SA_PAYMENT_REF.value_set(inp.payment_ref),
                names.SA_PSP.value_set(self._state.psp or ""),
                names.SA_AMOUNT_MINOR.value_set(self._state.amount or 0),
                names.SA_ATTEMPT_COUNT.value_set(0),
            ]
        )
        self._set_status(RecoveryStatus.ACTIVE)

        # Each branch returns the failure to decide on next, or how the recovery ends.
        while (ending := self._ending()) is None:
            decision = self._decide(await self._classify(failure))
            step: Failure | Ending
            match decision:
                case Exhausted(reason):
                    step = Ending(RecoveryStatus.EXHAUSTED, reason)
                case CustomerAction(reason):
                    step = await self._wait_for_customer(reason, failure)
                case AwaitStatus(until, reason):
                    step = await self._await_pending(until, reason, failure)
                case Retry(at, reason):
                    step = await self._attempt_after_cooldown(at, reason, failure)
                case _:
                    assert_never(decision)
            if isinstance(step, Ending):
                return await self._end(step.status, step.reason)
            failure = step
        return await self._end(ending.status, ending.reason)

    # ---- the four branches ------------------------------------------------------------------

    def _ending(self) -> Ending | None:
        """How the recovery ends because of a signal (paid, cancelled), if it does."""
        if self._succeeded is not None:
            return Ending(RecoveryStatus.RECOVERED, "payment succeeded")
        if self._cancel is not None:
            reason = f"cancelled by {self._cancel.actor}: {self._cancel.reason}".rstrip(": ")
            return Ending(RecoveryStatus.CANCELLED, reason)
        return None

    def _decide(self, classification: Classification) -> Decision:
        self._policy_changed = False
        decision = decide(
            self._policy,
            classification,
            attempts_made=len(self._state.attempts),
            started_at=self._started_at,
            now=workflow.now(),
            rand=workflow.random().random(),
        )
        workflow.logger.info(
            "next: %s",
            decision,
            extra={"merchant_id": self._state.merchant_id, "payment_ref": self._state.payment_ref},
        )
        return decision

    async def _wait_for_customer(self, reason: str, failure: Failure) -> Failure | Ending:
        """Send the customer retry links until they pay, news arrives, or the window closes."""
        self._set_status(RecoveryStatus.AWAITING_CUSTOMER)
        self._stage = Stage.AWAITING_CUSTOMER
        await self._schedule(None, reason)
        wakes = _CUSTOMER if self._exact else _ENDINGS
        send_link = self._links
        next_link_at = workflow.now()
        while workflow.now() < (deadline := self._started_at + self._policy.window):
            wait = deadline - workflow.now()
            if send_link:
                link = await workflow.execute_activity_method(
                    RecoveryActivityDefs.issue_retry_link,
                    LinkRequest(
                        merchant_id=self._state.merchant_id,
                        payment_ref=self._state.payment_ref,
                        reason=reason,
                    ),
                    **_STORE,
                )
                self._state.links.append(link)
                next_link_at = workflow.now() + LINK_REMINDER_EVERY
            if self._links:
                wait = min(wait, next_link_at - workflow.now())
            match await self._sleep(wait, wakes):
                case Wake.TIMER:  # a reminder is due, or the window closed
                    send_link = self._links
                case Wake.PAUSE_CHANGED | Wake.POLICY_CHANGED:
                    # show it at once; a new policy may move the window's end
                    self._policy_changed = False
                    await self._schedule(None, reason)
                    send_link = False
                case Wake.METHOD_UPDATED:
                    self._set_status(RecoveryStatus.ACTIVE)
                    return await self._attempt_now()  # stage: charging
                case Wake.PAID | Wake.CANCELLED | Wake.NEW_FAILURE | Wake.EXPEDITED:
                    self._stage = Stage.DECIDING
                    return self._absorb_inbox() or failure
                case other:
                    assert_never(other)
        self._stage = Stage.DECIDING
        return Ending(RecoveryStatus.EXHAUSTED, "recovery window closed awaiting the customer")

    async def _await_pending(
        self, until: datetime, reason: str, failure: Failure
    ) -> Failure | Ending:
        """A payment may still complete: wait for it (polling our own pending charge at the
        PSP) and never charge while it may."""
        self._set_status(RecoveryStatus.ACTIVE)
        self._stage = Stage.AWAITING_PENDING
        await self._schedule(None, reason)
        pending, self._pending_payment = self._pending_payment, None
        if pending is None and self._bounded:  # the failure itself may be a pending payment
            pending = self._current_event().psp_payment_id
        try:
            if pending and workflow.patched(POLLING_PATCH):
                try:
                    outcome = await self._poll_pending(pending, until, reason)
                except ActivityError as e:
                    if not self._exact:
                        raise
                    # not a decline: we cannot tell whether it completes, so never charge again
                    return Ending(
                        RecoveryStatus.EXHAUSTED,
                        f"the pending payment could not be checked at the PSP: {e.cause or e}",
                    )
                if outcome is None or outcome.failure == PENDING_EXPIRED:
                    if self._bounded and pending not in self._unsettled:
                        self._unsettled.append(pending)  # checked again before any charge
                if outcome is None:  # woken by a signal
                    return self._absorb_inbox() or failure
                if outcome.status == "succeeded":
                    return Ending(RecoveryStatus.RECOVERED, "pending payment completed")
                if self._bounded and (ending := _ending_of(outcome, "the pending payment")):
                    return ending
                return _failure_of(outcome, patient=self._patient)
            while True:
                wake = await self._sleep(until - workflow.now(), self._pending_wakes())
                if wake is not Wake.PAUSE_CHANGED:
                    break
                await self._schedule(None, reason)  # waiting is no attempt: show it, go on
            if wake is Wake.TIMER:
                return PENDING_EXPIRED
            return self._absorb_inbox() or failure
        finally:
            self._stage = Stage.DECIDING

    async def _attempt_after_cooldown(
        self, at: datetime, reason: str, failure: Failure
    ) -> Failure | Ending:
        """Wait out the cooldown on a durable timer (or until expedited), then charge."""
        self._set_status(RecoveryStatus.ACTIVE)
        while True:
            if self._exact and self._state.paused:
                await self._hold_while_paused()  # shows at once: no next attempt
                if self._ending() is not None:
                    return failure
                if self._new_method is not None or workflow.now() >= at:
                    await self._schedule(None, "resumed: attempting now")
                    break
            self._stage = Stage.COOLDOWN  # from here an expedite has an attempt to act on
            await self._schedule(at, reason)
            wake = await self._sleep(
                at - workflow.now(), _COOLDOWN if self._exact else _LEGACY_COOLDOWN
            )
            self._stage = Stage.DECIDING
            match wake:
                case Wake.PAID | Wake.CANCELLED:
                    return failure  # the loop ends the recovery
                case Wake.NEW_FAILURE | Wake.POLICY_CHANGED:
                    return self._absorb_inbox() or failure  # decide again
                case Wake.PAUSE_CHANGED:
                    continue  # held above; the rest of the cooldown after resume
                case Wake.EXPEDITED | Wake.METHOD_UPDATED | Wake.TIMER:
                    break
                case other:
                    assert_never(other)
        self._expedite = None
        if self._state.paused:  # before EXACT_ACTIONS_PATCH a pause held the attempt here
            await self._hold_while_paused()
            if self._ending() is not None:
                return failure
            # resumed after the cooldown ended: the held attempt happens now
        return await self._attempt_now()

    async def _attempt_now(self) -> Failure | Ending:
        """One charge (within the card-network limits), with the newest payment method."""
        self._take_new_method()
        if self._patient and self._unsettled:  # no place in the card's limits meanwhile
            if (earlier := await self._recheck_unsettled()) is not None:
                return earlier
        if self._late and (late := await self._recheck_late()) is not None:
            return late
        if self._card_limits and workflow.patched(CARD_WINDOW_PATCH):
            if (held := await self._within_card_limits()) is not None:
                return held
        elif self._card_limits and (limit := await self._card_limit()):
            return Ending(RecoveryStatus.EXHAUSTED, limit)
        if self._bounded:
            if (ending := self._ending()) is not None:
                return ending  # cancelled (or paid) on the way here: no charge
            if (earlier := await self._recheck_unsettled()) is not None:
                return earlier
        try:
            self._stage = Stage.CHARGING
            result = await self._charge()
        except ActivityError as e:  # only non-retryable errors get here, e.g. no PSP
            return Ending(RecoveryStatus.EXHAUSTED, f"the charge could not be made: {e.cause or e}")
        finally:
            self._stage = Stage.DECIDING
        if result.status == "succeeded":
            return Ending(RecoveryStatus.RECOVERED, "recovered by attempt")
        if result.status == "processing":
            self._pending_payment = result.psp_payment_id
            if result.psp_payment_id:
                self._attempt_of[result.psp_payment_id] = len(self._state.attempts) - 1
        if self._late_auth and result.may_complete_until and result.psp_payment_id:
            self._late[result.psp_payment_id] = result.may_complete_until
            self._attempt_of[result.psp_payment_id] = len(self._state.attempts) - 1
        if self._bounded and (ending := _ending_of(result, f"attempt {len(self._state.attempts)}")):
            return ending
        return _failure_of(result, patient=self._patient)

    async def _recheck_unsettled(self) -> Failure | Ending | None:
        """Check every earlier payment that may still complete, before a new charge: one that
        succeeded ends the recovery, one still pending is waited for (no charge)."""
        for psp_payment_id in list(self._unsettled):
            try:
                result = await self._payment_status(psp_payment_id)
            except ActivityError as e:
                return Ending(
                    RecoveryStatus.EXHAUSTED,
                    f"an earlier pending payment could not be checked at the PSP: {e.cause or e}",
                )
            if result.status == "processing":
                self._pending_payment = psp_payment_id
                return _failure_of(result, patient=self._patient)
            self._unsettled.remove(psp_payment_id)
            self._settle_attempt(psp_payment_id, result)
            if result.status == "succeeded":
                return Ending(RecoveryStatus.RECOVERED, "an earlier pending payment completed")
        return None

    async def _recheck_late(self) -> Failure | Ending | None:
        """Check every earlier failed payment that may still be authorised late, before a
        new charge: one that was ends the recovery; a failed one is kept until its time."""
        for psp_payment_id, until in list(self._late.items()):
            if workflow.now() >= until:
                del self._late[psp_payment_id]
                continue
            try:
                result = await self._payment_status(psp_payment_id)
            except ActivityError as e:
                return Ending(
                    RecoveryStatus.EXHAUSTED,
                    f"an earlier payment that may be authorised late could not be checked at "
                    f"the PSP: {e.cause or e}",
                )
            if result.status == "failed":
                continue
            del self._late[psp_payment_id]
            self._settle_attempt(psp_payment_id, result)
            if result.status == "succeeded":
                return Ending(RecoveryStatus.RECOVERED, "an earlier payment was authorised late")
            if result.status == "processing":
                self._pending_payment = psp_payment_id
                return _failure_of(result, patient=self._patient)
        return None

    def _pending_wakes(self) -> frozenset[Wake]:
        return _PENDING if self._exact else _ENDINGS

    # ---- steps ------------------------------------------------------------------------------

    def _absorb_inbox(self) -> Failure | None:
        """Take the latest failure events into the state; return the newest failure."""
        if not self._inbox:
            return None
        latest = self._inbox[-1]
        self._inbox.clear()
        self._event = latest
        self._state.amount = latest.amount
        self._state.currency = latest.currency
        self._state.psp = latest.psp
        self._state.events_seen = len(self._seen)
        if self._exact:
            self._show_event(latest)
        return latest.failure

    def _show_event(self, event: FailureEvent) -> None:
        """Keep the search attributes and the memo on the event the recovery acts on."""
        shown = (event.recovery_id, event.psp, event.amount, event.currency, event.customer.id)
        if shown == self._shown_event:
            return
        self._shown_event = shown
        workflow.upsert_search_attributes(
            [names.SA_PSP.value_set(event.psp), names.SA_AMOUNT_MINOR.value_set(event.amount)]
        )
        workflow.upsert_memo(_memo_of(event))

    def _current_event(self) -> FailureEvent:
        """The failure event the recovery acts on (set before the first decision)."""
        if self._event is None:  # a bug, not a business outcome: fail loudly, filterable
            raise ApplicationError(
                "no failure event to act on", type="RecoveryInvariantBroken", non_retryable=True
            )
        return self._event

    async def _classify(self, failure: Failure) -> Classification:
        event = self._current_event()
        classification = await workflow.execute_activity_method(
            RecoveryActivityDefs.classify_failure,
            ClassifyRequest(
                psp=event.psp,
                code=failure.code,
                decline_code=failure.decline_code,
                message=failure.message,
                network_advice_code=failure.network_advice_code,
                payment_method_type=event.payment_method.type,
                attempt=len(self._state.attempts) + 1,
            ),
            start_to_close_timeout=timedelta(seconds=30),
        )
        self._state.category = classification.category
        self._state.rule = classification.rule
        workflow.upsert_search_attributes(
            [names.SA_FAILURE_CATEGORY.value_set(classification.category.value)]
        )
        return classification

    def _news(self, wakes: frozenset[Wake]) -> Wake | None:
        """The most urgent of `wakes` that has happened, or None."""
        happened = {
            Wake.PAID: self._succeeded is not None,
            Wake.CANCELLED: self._cancel is not None,
            Wake.PAUSE_CHANGED: self._state.paused != self._shown_paused,
            Wake.EXPEDITED: self._expedite is not None,
            Wake.METHOD_UPDATED: self._new_method is not None,
            Wake.NEW_FAILURE: bool(self._inbox),
            Wake.POLICY_CHANGED: self._policy_changed,
        }
        return next((w for w in Wake if w in wakes and happened.get(w)), None)

    async def _sleep(self, wait: timedelta, wakes: frozenset[Wake]) -> Wake:
        """Sleep on a durable timer for `wait`, or until one of `wakes` happens; say which."""
        if (news := self._news(wakes)) is not None:
            return news
        try:
            await workflow.wait_condition(
                lambda: self._news(wakes) is not None, timeout=max(wait, timedelta(seconds=1))
            )
        except TimeoutError:
            return Wake.TIMER
        # The condition that ended the wait still holds (handlers only add news; the main
        # loop, which is waiting here, is what takes it away).
        return self._news(wakes) or Wake.TIMER

    async def _poll_pending(
        self, psp_payment_id: str, until: datetime, reason: str
    ) -> ChargeResult | None:
        """Ask the PSP about our pending charge every few minutes until it settles, a signal
        arrives, or `until`. Returns the settled result (an expired failure when it is still
        pending at `until`), or None when woken by a signal."""
        psp = self._current_event().psp
        every = PENDING_POLL_EVERY
        while workflow.now() < until:
            wait = min(every, until - workflow.now())
            if self._patient:
                every = min(every * 2, PENDING_POLL_MAX)
            match await self._sleep(wait, self._pending_wakes()):
                case Wake.TIMER:
                    pass
                case Wake.PAUSE_CHANGED:  # polling is no attempt: show the pause, go on
                    await self._schedule(None, reason)
                    continue
                case _:
                    return None
            result = await self._payment_status(psp_payment_id, psp)
            if result.status != "processing":
                self._settle_attempt(psp_payment_id, result)
                return result
        # still pending at the deadline: it counts as expired, as without polling
        return ChargeResult(status="failed", psp_payment_id=psp_payment_id, failure=PENDING_EXPIRED)

    def _settle_attempt(self, psp_payment_id: str, result: ChargeResult) -> None:
        """The attempt that left `psp_payment_id` pending shows how it ended; a failure the
        PSP may still turn into a payment (authorised late) is kept until then, and its
        attempt may show a success yet."""
        late = self._late_auth and result.status == "failed" and bool(result.may_complete_until)
        if late and result.may_complete_until:
            self._late[psp_payment_id] = result.may_complete_until
        i = (
            self._attempt_of.get(psp_payment_id)
            if late
            else self._attempt_of.pop(psp_payment_id, None)
        )
        if self._patient and i is not None:
            attempt = self._state.attempts[i]
            attempt.outcome = _outcome_of(result)
            attempt.code = (
                (result.failure.decline_code or result.failure.code) if result.failure else None
            )

    async def _payment_status(self, psp_payment_id: str, psp: str | None = None) -> ChargeResult:
        """A payment's status at the PSP (a success is recorded as a payment received)."""
        return await workflow.execute_activity_method(
            RecoveryActivityDefs.check_payment_status,
            PaymentLookup(
                merchant_id=self._state.merchant_id,
                psp=psp or self._current_event().psp,
                psp_payment_id=psp_payment_id,
                payment_ref=self._state.payment_ref if self._bounded else None,
            ),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=_CHARGE_RETRY,
        )

    async def _hold_while_paused(self) -> None:
        """Make no attempt until resumed (or cancelled, or paid meanwhile)."""
        await self._schedule(None, self._state.paused_reason or "paused")
        self._stage = Stage.PAUSED
        await workflow.wait_condition(
            lambda: not self._state.paused or bool(self._cancel or self._succeeded)
        )
        self._stage = Stage.DECIDING

    def _take_new_method(self) -> None:
        if self._new_method is not None:
            update, self._new_method = self._new_method, None
            self._event = self._current_event().model_copy(
                update={"payment_method": update.payment_method}
            )

    async def _within_card_limits(self) -> Failure | Ending | None:
        """Reserve the coming attempt on the card the PSP will charge; while a card-network
        limit holds it, wait (shown as the next attempt, with why) until the rolling window
        allows it. None: charge now. Otherwise what the main loop acts on instead."""
        while True:
            event = self._current_event()
            number = len(self._state.attempts) + 1
            verdict = await workflow.execute_activity_method(
                RecoveryActivityDefs.reserve_card_attempt,
                CardAttemptRequest(
                    merchant_id=self._state.merchant_id,
                    psp=event.psp,
                    customer=event.customer,
                    payment_method=event.payment_method,
                    idempotency_key=names.attempt_idempotency_key(
                        self._state.recovery_id or event.recovery_id, number
                    ),
                    at=workflow.now(),
                    policy=self._policy,
                ),
                **_STORE,
            )
            if verdict.not_before is None:
                return None
            deadline = self._started_at + self._policy.window
            if verdict.not_before > deadline:
                return Ending(
                    RecoveryStatus.EXHAUSTED,
                    f"{verdict.reason}; the window allows the next attempt at "
                    f"{verdict.not_before.isoformat()}, after the recovery window closes "
                    f"({deadline.isoformat()})",
                )
            self._stage = Stage.CARD_LIMIT
            await self._schedule(
                verdict.not_before, f"{verdict.reason}; attempt {number} when the window allows"
            )
            wake = await self._sleep(verdict.not_before - workflow.now(), _CARD_HELD)
            self._stage = Stage.DECIDING
            match wake:
                case Wake.PAID | Wake.CANCELLED:
                    return event.failure  # the loop ends the recovery
                case Wake.NEW_FAILURE:
                    return self._absorb_inbox() or event.failure  # decide again
                case Wake.PAUSE_CHANGED:
                    if self._state.paused:
                        await self._hold_while_paused()
                        if self._ending() is not None:
                            return event.failure
                case Wake.POLICY_CHANGED:
                    self._policy_changed = False  # its limits and window apply from here
                case Wake.METHOD_UPDATED:
                    self._take_new_method()  # a new card: checked on its own attempts
                case Wake.TIMER | Wake.EXPEDITED:
                    pass  # check again: another recovery may have used the card meanwhile
                case other:
                    assert_never(other)

    async def _card_limit(self) -> str | None:
        """Before CARD_WINDOW_PATCH: why charging this card now would break a card-network
        limit, if it would (skipped without a payment method id)."""
        card = self._current_event().payment_method.id
        if not card:
            return None
        usage = await workflow.execute_activity_method(
            RecoveryActivityDefs.count_card_attempts,
            CardRef(merchant_id=self._state.merchant_id, payment_method_id=card),
            **_STORE,
        )
        return card_limit_reached(self._policy, usage.last_30_days, usage.last_day)

    async def _charge(self) -> ChargeResult:
        event = self._current_event()
        recovery_id = self._state.recovery_id or event.recovery_id  # set at the run's start
        number = len(self._state.attempts) + 1
        key = names.attempt_idempotency_key(recovery_id, number)
        req = ChargeRequest(
            merchant_id=self._state.merchant_id,
            recovery_id=recovery_id,
            payment_ref=self._state.payment_ref,
            attempt=number,
            idempotency_key=key,
            psp=event.psp,
            amount=event.amount,
            currency=event.currency,
            customer=event.customer,
            payment_method=event.payment_method,
            original_failure=event.failure,
        )
        self._state.next_attempt_at = None
        if self._bounded:
            result = await self._bounded_charge(req)
        else:
            result = await workflow.execute_activity_method(
                RecoveryActivityDefs.charge_payment,
                req,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=_CHARGE_RETRY,
            )
        code = (result.failure.decline_code or result.failure.code) if result.failure else None
        self._state.attempts.append(
            Attempt(
                number=number,
                at=workflow.now(),
                outcome=_outcome_of(result),
                code=code,
                idempotency_key=key,
            )
        )
        workflow.upsert_search_attributes(
            [names.SA_ATTEMPT_COUNT.value_set(len(self._state.attempts))]
        )
        return result

    async def _bounded_charge(self, req: ChargeRequest) -> ChargeResult:
        """One attempt in a few bounded tries; a cancel stops the tries (the one in flight
        finishes). An attempt left without an answer is looked up at the PSP."""
        charge = workflow.start_activity_method(
            RecoveryActivityDefs.charge_payment,
            req,
            start_to_close_timeout=names.CHARGE_START_TO_CLOSE,
            heartbeat_timeout=names.CHARGE_HEARTBEAT_TIMEOUT,
            retry_policy=_CHARGE_BOUNDED,
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        try:
            return await self._unless_cancelled(charge)
        except ActivityError as e:
            cause = e.cause
            if isinstance(cause, ApplicationError) and cause.non_retryable:
                raise  # refused (no PSP, a request the PSP rejects): the outcome is known
            why = f"{cause or e}"
        return await self._look_up(req, why)

    async def _look_up(self, req: ChargeRequest, why: str) -> ChargeResult:
        """What the PSP has for an attempt whose answer never came: never a blind charge."""
        if self._cancel is None:
            await self._sleep(LOOKUP_AFTER, frozenset({Wake.CANCELLED}))
        try:
            if self._cancel is not None:  # cancelled: a few tries, then say it is unknown
                found = await workflow.execute_activity_method(
                    RecoveryActivityDefs.find_attempt_charge,
                    req,
                    start_to_close_timeout=names.CHARGE_START_TO_CLOSE,
                    heartbeat_timeout=names.CHARGE_HEARTBEAT_TIMEOUT,
                    retry_policy=_LOOKUP_AFTER_CANCEL,
                )
            else:
                found = await self._unless_cancelled(
                    workflow.start_activity_method(
                        RecoveryActivityDefs.find_attempt_charge,
                        req,
                        start_to_close_timeout=names.CHARGE_START_TO_CLOSE,
                        heartbeat_timeout=names.CHARGE_HEARTBEAT_TIMEOUT,
                        retry_policy=_LOOKUP_RETRY,
                        cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                    )
                )
        except ActivityError:
            return ChargeResult(status="failed", failure=OUTCOME_UNKNOWN)
        if found.result is not None:
            return found.result
        return ChargeResult(
            status="failed",
            failure=Failure(code=CHARGE_NOT_MADE, message=f"nothing was charged: {why}"[:1000]),
        )

    async def _unless_cancelled(self, handle: ActivityHandle[ChargeResultT]) -> ChargeResultT:
        """The activity's result; a cancel of the recovery cancels it (and waits for it)."""
        await workflow.wait_condition(lambda: handle.done() or self._cancel is not None)
        if not handle.done():
            handle.cancel()
        return await handle

    def _set_status(self, status: RecoveryStatus) -> None:
        self._state.status = status
        workflow.upsert_search_attributes([names.SA_RECOVERY_STATUS.value_set(status.value)])

    async def _schedule(self, at: datetime | None, reason: str) -> None:
        self._state.next_attempt_at = at
        self._state.next_attempt_reason = reason
        workflow.upsert_search_attributes(
            [
                names.SA_NEXT_ATTEMPT_AT.value_set(at)
                if at is not None
                else names.SA_NEXT_ATTEMPT_AT.value_unset()
            ]
        )
        self._shown_paused = self._state.paused
        await workflow.execute_activity_method(
            RecoveryActivityDefs.save_recovery_state, self._state, **_STORE
        )

    async def _end(self, status: RecoveryStatus, reason: str) -> RecoveryState:
        self._stage = Stage.ENDING
        self._state.next_attempt_at = None
        self._state.next_attempt_reason = None
        self._state.ended_reason = reason
        self._set_status(status)
        workflow.upsert_search_attributes([names.SA_NEXT_ATTEMPT_AT.value_unset()])
        pending = self._still_pending()
        paid = self._succeeded.psp_payment_id if self._succeeded else None
        late = {
            p: t
            for p, t in self._late.items()
            if p not in pending and p != paid and workflow.now() < t
        }
        while True:
            done = await workflow.execute_activity_method(
                RecoveryActivityDefs.finish_recovery,
                FinishRequest(
                    state=self._state,
                    seen_event_ids=sorted(self._seen),
                    pending_payments=pending,
                    late_payments=late,
                ),
                **_STORE,
            )
            if done.finished:
                break
            # Failures that joined while we decided to end: record them as seen; the end
            # state stands (a recovered or cancelled payment is not charged again).
            for ev in done.unseen_events:
                self._seen.add(ev.event_id)
            self._state.events_seen = len(self._seen)
        if self._links:
            await workflow.execute_activity_method(
                RecoveryActivityDefs.revoke_retry_links,
                RevokeLinks(recovery_id=self._state.recovery_id or "", reason=status.value),
                **_STORE,
            )
        return await self._close()

    def _still_pending(self) -> list[str]:
        """PSP ids of this recovery's payments that may still complete as it ends: each is
        watched after the end (`WATCH_PENDING_PATCH`)."""
        if not self._patient:
            return []
        paid = self._succeeded.psp_payment_id if self._succeeded else None
        pending = [p for p in dict.fromkeys([*self._unsettled, self._pending_payment]) if p]
        pending = [p for p in pending if p != paid]
        return pending if pending and workflow.patched(WATCH_PENDING_PATCH) else []

    async def _close(self) -> RecoveryState:
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._sort_arrivals()
        if self._later:
            workflow.continue_as_new(
                RecoveryInput(
                    merchant_id=self._state.merchant_id,
                    payment_ref=self._state.payment_ref,
                    pending_events=self._later,
                ),
                # the next run is the next recovery's: its memo says so from the start
                memo=_memo_of(self._later[0]) if self._exact else None,
            )
        return self._state
