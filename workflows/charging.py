"""One attempt of a recovery, and everything that must hold before money moves.

`ChargingSteps` is the part of `PaymentRecoveryWorkflow` that charges: before a charge it
checks every earlier payment of ours that may still complete (pending, or failed but still
authorisable late) and reserves the attempt within the card-network limits; the charge itself
is bounded (heartbeats, a few tries with the attempt's one idempotency key) and an attempt
left without an answer is looked up at the PSP, never charged again blind. Deterministic
code only (see workflows/recovery_base.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypeVar, assert_never

from temporalio import workflow
from temporalio.common import RetryPolicy as ActivityRetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType, ActivityHandle

from workflows.patches import CARD_WINDOW_PATCH
from workflows.recovery_base import (
    CARD_HELD_WAKES,
    CHARGE_RETRY,
    PENDING_EXPIRED,
    STORE,
    Ending,
    RecoveryBase,
    Stage,
    Wake,
)

with workflow.unsafe.imports_passed_through():
    from recovery import constants as names
    from recovery.activity_defs import RecoveryActivityDefs
    from recovery.models import (
        Attempt,
        CardRef,
        ChargeLookup,
        ChargeRequest,
        ChargeResult,
        Failure,
        RecoveryStatus,
    )
    from recovery.policy import CardAttemptRequest, card_limit_reached

ChargeResultT = TypeVar("ChargeResultT", ChargeResult, ChargeLookup)

CHARGE_BOUNDED = ActivityRetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=names.CHARGE_MAX_TRIES,
    non_retryable_error_types=["PSPNotConfigured", "PSPRequestRejected"],
)
# Looking an attempt up is a read: retried until the PSP answers (or the recovery is
# cancelled); after a cancel, a few tries only.
LOOKUP_RETRY = ActivityRetryPolicy(
    initial_interval=timedelta(seconds=5),
    maximum_interval=timedelta(minutes=10),
    non_retryable_error_types=["PSPNotConfigured"],
)
LOOKUP_AFTER_CANCEL = ActivityRetryPolicy(
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
# A payment of ours left pending is asked about this often at first; after
# PATIENT_PENDING_PATCH, twice as long each time, at most PENDING_POLL_MAX.
PENDING_POLL_EVERY = timedelta(minutes=5)
PENDING_POLL_MAX = timedelta(hours=1)


def outcome_of(result: ChargeResult) -> str:
    """An attempt's outcome as the recovery shows it."""
    if result.failure == OUTCOME_UNKNOWN:
        return "unknown"
    if result.failure is not None and result.failure.code == CHARGE_NOT_MADE:
        return "not_made"
    return result.status


def ending_of(result: ChargeResult, what: str) -> Ending | None:
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


def failure_of(result: ChargeResult, *, patient: bool = False) -> Failure:
    """What an attempt that did not succeed tells the classifier (a pending one: its PSP's
    word on how long it may take, when it has one and the recovery is `patient`)."""
    if result.status == "processing":
        if patient and result.failure is not None:
            return result.failure
        return Failure(code="payment_pending")
    if result.status == "requires_action":  # 3-D Secure or similar: only the customer can
        return result.failure or Failure(code="authentication_required")
    return result.failure or Failure(code="unknown")


class ChargingSteps(RecoveryBase):
    """Attempts, and the checks before them (see the module's docstring)."""

    async def _attempt_now(self) -> Failure | Ending:
        """One charge (within the card-network limits), with the newest payment method."""
        self._take_new_method()
        if (instead := await self._before_charging()) is not None:
            return instead
        try:
            self._stage = Stage.CHARGING
            result = await self._charge()
        except ActivityError as e:  # only non-retryable errors get here, e.g. no PSP
            return Ending(RecoveryStatus.EXHAUSTED, f"the charge could not be made: {e.cause or e}")
        finally:
            self._stage = Stage.DECIDING
        return self._after_charging(result)

    async def _before_charging(self) -> Failure | Ending | None:
        """What must hold before money moves: no earlier payment of ours may still complete
        (pending, or failed but authorisable late), the card-network limits allow the attempt
        (reserved on its card), and nothing ended the recovery on the way. None: charge now;
        otherwise what the main loop acts on instead."""
        if self._patient and self._unsettled:  # no place in the card's limits meanwhile
            if (earlier := await self._recheck_unsettled()) is not None:
                return earlier
        if self._late and (late := await self._recheck_late()) is not None:
            return late
        if self._card_limits and self._has(CARD_WINDOW_PATCH):
            if (held := await self._within_card_limits()) is not None:
                return held
        elif self._card_limits and (limit := await self._card_limit()):
            return Ending(RecoveryStatus.EXHAUSTED, limit)
        if self._bounded:
            if (ending := self._ending()) is not None:
                return ending  # cancelled (or paid) on the way here: no charge
            return await self._recheck_unsettled()
        return None

    def _after_charging(self, result: ChargeResult) -> Failure | Ending:
        """What an attempt's result means: the end, or the failure to decide on next (a
        payment that may still complete is kept, to be checked before any new charge)."""
        if result.status == "succeeded":
            return Ending(RecoveryStatus.RECOVERED, "recovered by attempt")
        attempt = len(self._state.attempts) - 1
        if result.status == "processing":
            self._pending_payment = result.psp_payment_id
            if result.psp_payment_id:
                self._attempt_of[result.psp_payment_id] = attempt
        if self._late_auth and result.may_complete_until and result.psp_payment_id:
            self._late[result.psp_payment_id] = result.may_complete_until
            self._attempt_of[result.psp_payment_id] = attempt
        if self._bounded and (ending := ending_of(result, f"attempt {len(self._state.attempts)}")):
            return ending
        return failure_of(result, patient=self._patient)

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
                return failure_of(result, patient=self._patient)
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
                return failure_of(result, patient=self._patient)
        return None

    async def _within_card_limits(self) -> Failure | Ending | None:
        """Reserve the coming attempt on the card the PSP will charge; while a card-network
        limit holds it, wait (shown as the next attempt, with why) until the rolling window
        allows it. None: charge now. Otherwise what the main loop acts on instead."""
        while True:
            event = self._current_event()
            number = len(self._state.attempts) + 1
            verdict = await self._bookkeep(
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
            await self._show_next_attempt(
                verdict.not_before, f"{verdict.reason}; attempt {number} when the window allows"
            )
            wake = await self._sleep(verdict.not_before - workflow.now(), CARD_HELD_WAKES)
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
            **STORE,
        )
        return card_limit_reached(self._policy, usage.last_30_days, usage.last_day)

    async def _charge(self) -> ChargeResult:
        event = self._current_event()
        recovery_id = self._state.recovery_id or event.recovery_id  # set at the run's start
        number = len(self._state.attempts) + 1
        key = names.attempt_idempotency_key(recovery_id, number)
        req = ChargeRequest(
            **event.payment_fields(),
            recovery_id=recovery_id,
            attempt=number,
            idempotency_key=key,
            original_failure=event.failure,
        )
        self._state.next_attempt_at = None
        if self._bounded:
            result = await self._bounded_charge(req)
        else:
            self._flush()
            result = await workflow.execute_activity_method(
                RecoveryActivityDefs.charge_payment,
                req,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=CHARGE_RETRY,
            )
        code = (result.failure.decline_code or result.failure.code) if result.failure else None
        self._state.attempts.append(
            Attempt(
                number=number,
                at=workflow.now(),
                outcome=outcome_of(result),
                code=code,
                idempotency_key=key,
            )
        )
        self._show(names.SA_ATTEMPT_COUNT.value_set(len(self._state.attempts)))
        return result

    async def _bounded_charge(self, req: ChargeRequest) -> ChargeResult:
        """One attempt in a few bounded tries; a cancel stops the tries (the one in flight
        finishes). An attempt left without an answer is looked up at the PSP."""
        charge = workflow.start_activity_method(
            RecoveryActivityDefs.charge_payment,
            req,
            start_to_close_timeout=names.CHARGE_START_TO_CLOSE,
            heartbeat_timeout=names.CHARGE_HEARTBEAT_TIMEOUT,
            retry_policy=CHARGE_BOUNDED,
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
                self._flush()
                found = await workflow.execute_activity_method(
                    RecoveryActivityDefs.find_attempt_charge,
                    req,
                    start_to_close_timeout=names.CHARGE_START_TO_CLOSE,
                    heartbeat_timeout=names.CHARGE_HEARTBEAT_TIMEOUT,
                    retry_policy=LOOKUP_AFTER_CANCEL,
                )
            else:
                found = await self._unless_cancelled(
                    workflow.start_activity_method(
                        RecoveryActivityDefs.find_attempt_charge,
                        req,
                        start_to_close_timeout=names.CHARGE_START_TO_CLOSE,
                        heartbeat_timeout=names.CHARGE_HEARTBEAT_TIMEOUT,
                        retry_policy=LOOKUP_RETRY,
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
        self._flush()
        await workflow.wait_condition(lambda: handle.done() or self._cancel is not None)
        if not handle.done():
            handle.cancel()
        return await handle

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
                    await self._show_next_attempt(None, reason)
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
            attempt.outcome = outcome_of(result)
            attempt.code = (
                (result.failure.decline_code or result.failure.code) if result.failure else None
            )
