"""PaymentRecoveryWorkflow: one durable recovery per failed payment.

The main loop classifies the newest failure, lets `recovery.policy.decide` choose one of four
branches (an attempt after a cooldown, waiting for the customer, waiting for a pending
payment, or the end) and repeats until the recovery ends. The steps live in two more modules:
`workflows/recovery_base.py` (the run's state, its waits, what it shows) and
`workflows/charging.py` (an attempt and the checks before it).

Deterministic code only: time comes from ``workflow.now()``, randomness from
``workflow.random()``, everything else from activities. Any change here must keep the stored
histories in ``tests/histories/`` replaying: new behaviour goes behind a patch id of
``workflows/patches.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, assert_never

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

# The worker passes every module of `workflows` through Temporal's sandbox (imported once per
# worker, not afresh for each run: `worker.main.WORKFLOW_RUNNER`); the core modules below are
# passed through here too, for any runner. None of them keeps state between runs, and the
# sandbox checks nothing at run time in a passed-through module: the rules of workflow code
# (no I/O, clock, randomness or settings but through `workflow.*`) are checked statically in
# every module workflow code runs (`tests/unit/test_workflow_determinism.py`), and
# import-linter keeps I/O out of `workflows/`.
with workflow.unsafe.imports_passed_through():
    from recovery import constants as names
    from recovery.activity_defs import NotificationActivityDefs, RecoveryActivityDefs
    from recovery.models import (
        CancelRequest,
        Classification,
        ExpediteRequest,
        Failure,
        FailureEvent,
        FinishRequest,
        LinkRequest,
        PauseRequest,
        PaymentMethodUpdate,
        PaymentSucceeded,
        RecoveryInput,
        RecoveryState,
        RecoveryStatus,
        ResumeRequest,
        RevokeLinks,
        SendNotification,
    )
    from recovery.policy import (
        AwaitStatus,
        BeginRecovery,
        CustomerAction,
        Decision,
        Exhausted,
        Retry,
        RetryPolicy,
        decide,
    )
    from workflows.charging import ChargingSteps, ending_of, failure_of
    from workflows.patches import (
        BOUNDED_CHARGES_PATCH,
        EMAIL_PATCH,
        EXACT_ACTIONS_PATCH,
        LATE_AUTH_PATCH,
        LEAN_HISTORY_PATCH,
        LINKS_PATCH,
        PATIENT_PENDING_PATCH,
        POLICY_PATCH,
        POLLING_PATCH,
        WATCH_PENDING_PATCH,
    )
    from workflows.recovery_base import (
        COOLDOWN_WAKES,
        CUSTOMER_WAKES,
        ENDING_WAKES,
        LEGACY_COOLDOWN_WAKES,
        PENDING_EXPIRED,
        STORE,
        Ending,
        Stage,
        Wake,
        memo_of,
    )

# Before EMAIL_PATCH, while waiting for the customer, a fresh link went out this often.
LINK_REMINDER_EVERY = timedelta(days=3)


@workflow.defn(name=names.RECOVERY_WORKFLOW)
class PaymentRecoveryWorkflow(ChargingSteps):
    @workflow.init
    def __init__(self, inp: RecoveryInput) -> None:
        super().__init__(inp)

    # ---- signals, update and query (handlers only record; the main loop acts) --------------

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

    # ---- the main loop and its branches ------------------------------------------------------

    @workflow.run
    async def run(self, inp: RecoveryInput) -> RecoveryState:
        await workflow.wait_condition(lambda: bool(self._arrived or self._inbox))
        first = (self._arrived or self._inbox)[0]
        self._state.recovery_id = first.recovery_id
        self._sort_arrivals()
        self._lean = workflow.patched(LEAN_HISTORY_PATCH)
        self._exact = self._has(EXACT_ACTIONS_PATCH)
        if self._exact:
            self._refile_inbox()
        self._bounded = self._has(BOUNDED_CHARGES_PATCH)
        self._patient = self._bounded and self._has(PATIENT_PENDING_PATCH)
        self._late_auth = self._patient and self._has(LATE_AUTH_PATCH)
        if self._lean:
            begun = await self._begin_lean(first)
        else:
            begun = await self._begin(inp, first)
        if begun is None:
            # A late delivery for a recovery that already ended: nothing to do.
            self._state.ended_reason = "event belongs to a recovery that already ended"
            return await self._close_run()
        failure, classification = begun
        self._set_status(RecoveryStatus.ACTIVE)

        # Each branch returns the failure to decide on next, or how the recovery ends.
        while (ending := self._ending()) is None:
            decision = self._decide(classification or await self._classify(failure))
            classification = None
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

    async def _begin(
        self, inp: RecoveryInput, first: FailureEvent
    ) -> tuple[Failure, Classification | None] | None:
        """Before LEAN_HISTORY_PATCH: is the recovery still open (None: no), its policy, the
        failure to decide on (its classification comes in the loop)."""
        if not await workflow.execute_activity_method(
            RecoveryActivityDefs.recovery_is_open, first.recovery_id, **STORE
        ):
            return None
        if workflow.patched(POLICY_PATCH):
            if not self._policy_changed:
                self._policy = await workflow.execute_activity_method(
                    RecoveryActivityDefs.load_retry_policy, inp.merchant_id, **STORE
                )
            self._card_limits = True
        self._state.policy_version = self._policy.version
        self._links = workflow.patched(LINKS_PATCH)
        self._started_at = workflow.now()
        failure = self._absorb_inbox() or PENDING_EXPIRED
        self._show(
            names.SA_MERCHANT_ID.value_set(inp.merchant_id),
            names.SA_PAYMENT_REF.value_set(inp.payment_ref),
            names.SA_PSP.value_set(self._state.psp or ""),
            names.SA_AMOUNT_MINOR.value_set(self._state.amount or 0),
            names.SA_ATTEMPT_COUNT.value_set(0),
        )
        return failure, None

    async def _begin_lean(
        self, first: FailureEvent
    ) -> tuple[Failure, Classification | None] | None:
        """A lean run's start, in one local activity: is the recovery still open (None: no),
        its policy, and the first failure with its classification. The search attributes
        the start set (merchant, payment, PSP, amount, status) are not written again."""
        self._started_at = workflow.now()
        failure = self._absorb_inbox() or PENDING_EXPIRED
        begun = await self._bookkeep(
            RecoveryActivityDefs.begin_recovery,
            BeginRecovery(
                recovery_id=first.recovery_id,
                merchant_id=self._state.merchant_id,
                classify=self._classify_request(failure),
            ),
        )
        if not begun.open or begun.policy is None or begun.classification is None:
            return None
        if not self._policy_changed:
            self._policy = begun.policy
        self._state.policy_version = self._policy.version
        self._card_limits = self._links = True
        self._show(
            names.SA_MERCHANT_ID.value_set(self._state.merchant_id),
            names.SA_PAYMENT_REF.value_set(self._state.payment_ref),
            names.SA_ATTEMPT_COUNT.value_set(0),
        )
        return failure, self._classified(begun.classification)

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
        """Only the customer can fix it: tell them (a retry link, reminders) until they pay,
        news arrives, or the window closes."""
        self._set_status(RecoveryStatus.AWAITING_CUSTOMER)
        self._stage = Stage.AWAITING_CUSTOMER
        await self._show_next_attempt(None, reason)
        if self._links and self._emails():
            step = await self._tell_customer_until_news(reason, failure)
        else:
            step = await self._send_links_until_news(reason, failure)
        self._stage = Stage.DECIDING
        return step

    def _emails(self) -> bool:
        """Whether this run e-mails the customer as EMAIL_PATCH says (decided once)."""
        if self._email is None:
            self._email = self._has(EMAIL_PATCH)
        return self._email

    async def _tell_customer_until_news(self, reason: str, failure: Failure) -> Failure | Ending:
        """E-mail a retry link, then a reminder with a fresh link on each of the policy's
        reminder days, counted from the first; nothing while paused (a reminder due meanwhile
        goes out on resume)."""
        first = last = workflow.now()
        due: Literal["retry_link", "reminder"] | None = "retry_link"
        while workflow.now() < (deadline := self._started_at + self._policy.window):
            if due is not None and not self._state.paused:
                await self._tell_customer(due, reason)
                due = None
            reminders = [first + timedelta(days=d) for d in self._policy.reminder_days]
            wake_at = min([deadline, *(t for t in reminders if t > last)])
            wake = await self._sleep(wake_at - workflow.now(), CUSTOMER_WAKES)
            if wake is Wake.TIMER:  # a reminder is due, or the window closed
                if wake_at < deadline:
                    due, last = "reminder", wake_at
            elif (step := await self._customer_news(wake, reason, failure)) is not None:
                return step
        return Ending(RecoveryStatus.EXHAUSTED, "recovery window closed awaiting the customer")

    async def _customer_news(
        self, wake: Wake, reason: str, failure: Failure
    ) -> Failure | Ending | None:
        """What news while waiting for the customer means: None to wait on (a pause or a new
        policy is shown at once: it may move the window's end or the reminders), else what
        the main loop acts on."""
        match wake:
            case Wake.PAUSE_CHANGED | Wake.POLICY_CHANGED:
                self._policy_changed = False
                await self._show_next_attempt(None, reason)
                return None
            case Wake.METHOD_UPDATED:
                self._set_status(RecoveryStatus.ACTIVE)
                return await self._attempt_now()  # stage: charging
            case Wake.PAID | Wake.CANCELLED | Wake.NEW_FAILURE | Wake.EXPEDITED:
                return self._absorb_inbox() or failure
            case Wake.TIMER:
                return None
            case other:
                assert_never(other)

    async def _tell_customer(self, kind: Literal["retry_link", "reminder"], reason: str) -> None:
        """Issue a fresh retry link and e-mail it; the e-mail is sent (and retried while the
        SMTP server defers it) in the background, while the recovery goes on waiting."""
        link = await self._bookkeep(
            NotificationActivityDefs.issue_retry_link,
            LinkRequest(
                merchant_id=self._state.merchant_id,
                payment_ref=self._state.payment_ref,
                reason=reason,
                kind=kind,
                send_email=self._policy.email_customers,
            ),
        )
        self._state.links.append(link)
        if link.notification_id is not None:
            self._sending = [h for h in self._sending if not h.done()]
            self._sending.append(
                workflow.start_activity_method(
                    NotificationActivityDefs.send_customer_email,
                    SendNotification(notification_id=link.notification_id),
                    start_to_close_timeout=names.EMAIL_TRY_TIMEOUT,
                    heartbeat_timeout=names.EMAIL_HEARTBEAT_TIMEOUT,
                    retry_policy=names.EMAIL_RETRY_POLICY,
                )
            )

    async def _send_links_until_news(self, reason: str, failure: Failure) -> Failure | Ending:
        """Before EMAIL_PATCH: a link every LINK_REMINDER_EVERY (from LINKS_PATCH on), each
        sent by the activity that issues it."""
        wakes = CUSTOMER_WAKES if self._exact else ENDING_WAKES
        send_link = self._links
        next_link_at = workflow.now()
        while workflow.now() < (deadline := self._started_at + self._policy.window):
            wait = deadline - workflow.now()
            if send_link:
                link = await workflow.execute_activity_method(
                    NotificationActivityDefs.issue_retry_link,
                    LinkRequest(
                        merchant_id=self._state.merchant_id,
                        payment_ref=self._state.payment_ref,
                        reason=reason,
                    ),
                    **STORE,
                )
                self._state.links.append(link)
                next_link_at = workflow.now() + LINK_REMINDER_EVERY
            if self._links:
                wait = min(wait, next_link_at - workflow.now())
            wake = await self._sleep(wait, wakes)
            send_link = self._links and wake is Wake.TIMER  # a reminder is due
            if (step := await self._customer_news(wake, reason, failure)) is not None:
                return step
        return Ending(RecoveryStatus.EXHAUSTED, "recovery window closed awaiting the customer")

    async def _await_pending(
        self, until: datetime, reason: str, failure: Failure
    ) -> Failure | Ending:
        """A payment may still complete: wait for it (polling our own pending charge at the
        PSP) and never charge while it may."""
        self._set_status(RecoveryStatus.ACTIVE)
        self._stage = Stage.AWAITING_PENDING
        await self._show_next_attempt(None, reason)
        pending, self._pending_payment = self._pending_payment, None
        if pending is None and self._bounded:  # the failure itself may be a pending payment
            pending = self._current_event().psp_payment_id
        try:
            if pending and self._has(POLLING_PATCH):
                return await self._poll_until_settled(pending, until, reason, failure)
            while True:
                wake = await self._sleep(until - workflow.now(), self._pending_wakes())
                if wake is not Wake.PAUSE_CHANGED:
                    break
                await self._show_next_attempt(None, reason)  # waiting is no attempt: show it, go on
            if wake is Wake.TIMER:
                return PENDING_EXPIRED
            return self._absorb_inbox() or failure
        finally:
            self._stage = Stage.DECIDING

    async def _poll_until_settled(
        self, pending: str, until: datetime, reason: str, failure: Failure
    ) -> Failure | Ending:
        """Ask the PSP about `pending` until it settles, news arrives, or `until`; what it
        ended as, for the main loop (one still unsettled is checked again before any charge)."""
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
        if self._bounded and (ending := ending_of(outcome, "the pending payment")):
            return ending
        return failure_of(outcome, patient=self._patient)

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
                    await self._show_next_attempt(None, "resumed: attempting now")
                    break
            self._stage = Stage.COOLDOWN  # from here an expedite has an attempt to act on
            await self._show_next_attempt(at, reason)
            wake = await self._sleep(
                at - workflow.now(), COOLDOWN_WAKES if self._exact else LEGACY_COOLDOWN_WAKES
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

    # ---- the end -----------------------------------------------------------------------------

    async def _end(self, status: RecoveryStatus, reason: str) -> RecoveryState:
        self._stage = Stage.ENDING
        for sending in self._sending:  # no e-mail after the end
            if not sending.done():
                sending.cancel()
        self._state.next_attempt_at = None
        self._state.next_attempt_reason = None
        self._state.ended_reason = reason
        self._set_status(status)
        self._show(names.SA_NEXT_ATTEMPT_AT.value_unset())
        pending = self._still_pending()
        paid = self._succeeded.psp_payment_id if self._succeeded else None
        late = {
            p: t
            for p, t in self._late.items()
            if p not in pending and p != paid and workflow.now() < t
        }
        while True:
            done = await self._bookkeep(
                RecoveryActivityDefs.finish_recovery,
                FinishRequest(
                    state=self._state,
                    seen_event_ids=sorted(self._seen),
                    pending_payments=pending,
                    late_payments=late,
                    revoke_links=self._lean,
                ),
            )
            if done.finished:
                break
            # Failures that joined while we decided to end: record them as seen; the end
            # state stands (a recovered or cancelled payment is not charged again).
            for ev in done.unseen_events:
                self._seen.add(ev.event_id)
            self._state.events_seen = len(self._seen)
        # (a lean run's links were revoked as it ended: only a PSP's open checkout is left)
        if self._links and (not self._lean or done.open_checkouts):
            self._flush()
            await workflow.execute_activity_method(
                RecoveryActivityDefs.revoke_retry_links,
                RevokeLinks(recovery_id=self._state.recovery_id or "", reason=status.value),
                **STORE,
            )
        return await self._close_run()

    def _still_pending(self) -> list[str]:
        """PSP ids of this recovery's payments that may still complete as it ends: each is
        watched after the end (`WATCH_PENDING_PATCH`)."""
        if not self._patient:
            return []
        paid = self._succeeded.psp_payment_id if self._succeeded else None
        pending = [p for p in dict.fromkeys([*self._unsettled, self._pending_payment]) if p]
        pending = [p for p in pending if p != paid]
        return pending if pending and self._has(WATCH_PENDING_PATCH) else []

    async def _close_run(self) -> RecoveryState:
        self._flush()
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
                memo=memo_of(self._later[0]) if self._exact else None,
            )
        return self._state
