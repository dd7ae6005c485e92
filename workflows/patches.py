"""The recovery workflow's behaviour versions, as `workflow.patched()` ids.

Each id marks a change of what `PaymentRecoveryWorkflow` does. A recovery that started before
a change replays its stored history without the marker and keeps the old behaviour; one that
started after records the marker and gets the new one. So: never rename or remove an id while
a recovery that recorded it may still run (the replay tests in `tests/workflow/test_replay.py`
fail if one is), and give every new behaviour its own id, its comment here, and a stored
history in `tests/histories/`.
"""

from __future__ import annotations

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
# Recoveries after this patch count every attempt on the card the PSP will charge (the
# customer's default card included, one card under several payment-method ids once), reserve
# it on that card before charging, and wait (shown as the next attempt) when a card-network
# limit is reached until the rolling window allows the attempt, ending `exhausted` only when
# that is after the recovery window.
CARD_WINDOW_PATCH = "card-limits-rolling-window"
# Recoveries after this patch wait for a pending payment as long as its PSP says it can take
# (a Razorpay recurring debit waits out a 24 h pre-debit notice: the result's own failure
# code, e.g. `recurring_debit_pending`, names the wait, where it used to read as a 30-minute
# `payment_pending`), poll it less often the longer it takes (5 minutes, doubling, at most
# PENDING_POLL_MAX), and check earlier pending payments before reserving an attempt on the
# card, so a debit still pending never takes a place in the card-network limits.
PATIENT_PENDING_PATCH = "patient-pending-debits"
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
# Recoveries after this patch e-mail the customer while waiting for them: a retry link as the
# wait begins and a reminder with a fresh link on each of the policy's `reminder_days`
# (`RetryPolicy.email_customers` off: the links only), none while paused (a reminder due
# meanwhile goes out on resume), and stop sending when they end. Before it, a link was issued
# every 3 days and its message was sent, once, by the activity that issued it.
EMAIL_PATCH = "email-customers"
# Recoveries after this patch cost Temporal a third of the history: they have every behaviour
# above without a marker of each (one marker, this one); their bookkeeping (classification,
# the recovery's state, card reservations, links, the end) runs as local activities (one
# marker each, no task of their own) and their start is one (`begin_recovery`: still open?
# the policy, the first classification); their search attributes are written once per
# workflow task, only what changed (the start already set merchant, payment, PSP, amount,
# status); their links are revoked in the transaction that ends them, and checkouts are
# closed at a PSP only when one is open.
LEAN_HISTORY_PATCH = "lean-history"
