"""What every step of a recovery run shares: its state, its waits and how it shows itself.

`PaymentRecoveryWorkflow` (workflows/recovery.py) is built on `RecoveryBase` (here: the
run's state, sleeping until something happens, writing what it shows to Postgres and the
search attributes) and `ChargingSteps` (workflows/charging.py: one attempt, and everything
that must hold before money moves). Deterministic code only, like every module in
`workflows/`: time from `workflow.now()`, randomness from `workflow.random()`, the rest from
activities.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, TypedDict, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy as ActivityRetryPolicy
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ApplicationError
from temporalio.workflow import ActivityHandle

with workflow.unsafe.imports_passed_through():
    from recovery import constants as names
    from recovery.activity_defs import RecoveryActivityDefs
    from recovery.models import (
        CancelRequest,
        ChargeResult,
        Classification,
        ClassifyRequest,
        ExpediteRequest,
        Failure,
        FailureEvent,
        NotificationSent,
        PaymentLookup,
        PaymentMethodUpdate,
        PaymentSucceeded,
        RecoveryInput,
        RecoveryState,
        RecoveryStatus,
    )
    from recovery.policy import LEGACY_POLICY, RetryPolicy


class ActivityOptions(TypedDict):
    start_to_close_timeout: timedelta
    retry_policy: ActivityRetryPolicy


# Bookkeeping activities (Postgres writes) retry until the database answers.
STORE = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=ActivityRetryPolicy(maximum_interval=timedelta(minutes=1)),
)
# A charge is retried with the same idempotency key, so a retry never charges twice.
CHARGE_RETRY = ActivityRetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=2),
    non_retryable_error_types=["PSPNotConfigured"],
)
# Bookkeeping as local activities (LEAN_HISTORY_PATCH): run by the worker inside the workflow
# task, one marker each in the history, retried until the database answers, like STORE.
LOCAL = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=ActivityRetryPolicy(maximum_interval=timedelta(minutes=1)),
)
ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")
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
ENDING_WAKES = frozenset({Wake.PAID, Wake.CANCELLED, Wake.NEW_FAILURE})
LEGACY_COOLDOWN_WAKES = ENDING_WAKES | {Wake.EXPEDITED, Wake.POLICY_CHANGED}
COOLDOWN_WAKES = LEGACY_COOLDOWN_WAKES | {Wake.PAUSE_CHANGED, Wake.METHOD_UPDATED}
CUSTOMER_WAKES = ENDING_WAKES | {Wake.PAUSE_CHANGED, Wake.METHOD_UPDATED, Wake.POLICY_CHANGED}
# a pending payment may still complete: a new method or policy waits until it settles
PENDING_WAKES = ENDING_WAKES | {Wake.PAUSE_CHANGED}
# the card-network limits hold the attempt: an expedite cannot move it, a new card is checked
CARD_HELD_WAKES = ENDING_WAKES | {
    Wake.PAUSE_CHANGED,
    Wake.METHOD_UPDATED,
    Wake.POLICY_CHANGED,
}


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


def memo_of(event: FailureEvent) -> dict[str, object]:
    """The memo the Temporal UI shows for a run (set at start by the relay, then kept)."""
    return {
        "amount": event.amount,
        "currency": event.currency,
        "customer": event.customer.id,
        "recovery_id": event.recovery_id,
    }


class RecoveryBase:
    """A recovery run's state, and the steps every branch of its main loop uses.

    Signal and update handlers only record what arrived (in the fields below); the main
    loop, sleeping in `_sleep`, is what acts on it.
    """

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
        self._email: bool | None = None  # EMAIL_PATCH, once known
        self._lean = False  # LEAN_HISTORY_PATCH
        self._unshown: dict[str, SearchAttributeUpdate[Any]] = {}  # upserts not yet made
        self._sending: list[ActivityHandle[NotificationSent]] = []  # e-mails being sent

    def _ending(self) -> Ending | None:
        """How the recovery ends because of a signal (paid, cancelled), if it does."""
        if self._succeeded is not None:
            return Ending(RecoveryStatus.RECOVERED, "payment succeeded")
        if self._cancel is not None:
            reason = f"cancelled by {self._cancel.actor}: {self._cancel.reason}".rstrip(": ")
            return Ending(RecoveryStatus.CANCELLED, reason)
        return None

    def _pending_wakes(self) -> frozenset[Wake]:
        return PENDING_WAKES if self._exact else ENDING_WAKES

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
        self._show(names.SA_PSP.value_set(event.psp), names.SA_AMOUNT_MINOR.value_set(event.amount))
        memo = memo_of(event)
        if not self._lean or any(workflow.memo_value(k, None) != v for k, v in memo.items()):
            workflow.upsert_memo(memo)  # (the start set it: a lean run writes only a change)

    def _current_event(self) -> FailureEvent:
        """The failure event the recovery acts on (set before the first decision)."""
        if self._event is None:  # a bug, not a business outcome: fail loudly, filterable
            raise ApplicationError(
                "no failure event to act on", type="RecoveryInvariantBroken", non_retryable=True
            )
        return self._event

    def _classify_request(self, failure: Failure) -> ClassifyRequest:
        event = self._current_event()
        return ClassifyRequest(
            psp=event.psp,
            code=failure.code,
            decline_code=failure.decline_code,
            message=failure.message,
            network_advice_code=failure.network_advice_code,
            payment_method_type=event.payment_method.type,
            attempt=len(self._state.attempts) + 1,
        )

    async def _classify(self, failure: Failure) -> Classification:
        req = self._classify_request(failure)
        if self._lean:
            classification = await self._bookkeep(RecoveryActivityDefs.classify_failure, req)
        else:
            classification = await workflow.execute_activity_method(
                RecoveryActivityDefs.classify_failure,
                req,
                start_to_close_timeout=timedelta(seconds=30),
            )
        return self._classified(classification)

    def _classified(self, classification: Classification) -> Classification:
        self._state.category = classification.category
        self._state.rule = classification.rule
        self._show(names.SA_FAILURE_CATEGORY.value_set(classification.category.value))
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
        self._flush()
        try:
            await workflow.wait_condition(
                lambda: self._news(wakes) is not None, timeout=max(wait, timedelta(seconds=1))
            )
        except TimeoutError:
            return Wake.TIMER
        # The condition that ended the wait still holds (handlers only add news; the main
        # loop, which is waiting here, is what takes it away).
        return self._news(wakes) or Wake.TIMER

    async def _payment_status(self, psp_payment_id: str, psp: str | None = None) -> ChargeResult:
        """A payment's status at the PSP (a success is recorded as a payment received)."""
        self._flush()
        return await workflow.execute_activity_method(
            RecoveryActivityDefs.check_payment_status,
            PaymentLookup(
                merchant_id=self._state.merchant_id,
                psp=psp or self._current_event().psp,
                psp_payment_id=psp_payment_id,
                payment_ref=self._state.payment_ref if self._bounded else None,
            ),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=CHARGE_RETRY,
        )

    async def _hold_while_paused(self) -> None:
        """Make no attempt until resumed (or cancelled, or paid meanwhile)."""
        await self._show_next_attempt(None, self._state.paused_reason or "paused")
        self._stage = Stage.PAUSED
        self._flush()
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

    def _set_status(self, status: RecoveryStatus) -> None:
        self._state.status = status
        self._show(names.SA_RECOVERY_STATUS.value_set(status.value))

    async def _show_next_attempt(self, at: datetime | None, reason: str) -> None:
        self._state.next_attempt_at = at
        self._state.next_attempt_reason = reason
        self._show(
            names.SA_NEXT_ATTEMPT_AT.value_set(at)
            if at is not None
            else names.SA_NEXT_ATTEMPT_AT.value_unset()
        )
        self._shown_paused = self._state.paused
        await self._bookkeep(RecoveryActivityDefs.save_recovery_state, self._state)

    # ---- what the history records (LEAN_HISTORY_PATCH makes it less) -------------------------

    def _has(self, patch: str) -> bool:
        """Whether this run has the behaviour `patch` names: a lean run has every earlier
        one without a marker of its own (`workflows/patches.py`)."""
        return self._lean or workflow.patched(patch)

    def _show(self, *updates: SearchAttributeUpdate[Any]) -> None:
        """Show `updates` in the search attributes. Before LEAN_HISTORY_PATCH each call is an
        upsert (an event) at once; a lean run keeps the latest value of each attribute until
        it next waits (`_flush`), and writes only what changed."""
        if not self._lean:
            workflow.upsert_search_attributes(list(updates))
            return
        for update in updates:
            self._unshown[update.key.name] = update

    def _flush(self) -> None:
        """Make the search-attribute changes kept by `_show`, in one upsert: called before
        the run waits (a timer, a signal, a non-local activity) and as it ends."""
        shown = workflow.info().typed_search_attributes
        changed = [u for u in self._unshown.values() if shown.get(u.key) != u.value]
        self._unshown.clear()
        if changed:
            workflow.upsert_search_attributes(changed)

    async def _bookkeep(
        self, activity: Callable[[Any, ArgT], Awaitable[ResultT]], arg: ArgT
    ) -> ResultT:
        """A bookkeeping activity (Postgres, retried until it answers): a local activity in
        a lean run (`LOCAL`), a regular one (`STORE`) before."""
        if self._lean:
            return await workflow.execute_local_activity_method(activity, arg, **LOCAL)
        return await workflow.execute_activity_method(activity, arg, **STORE)
