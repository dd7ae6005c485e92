"""The redrive rule: only an exhausted recovery starts again, as a new run with a fresh
attempt budget, re-sent its latest failure."""

from __future__ import annotations

from recovery.errors import NotFound, RecoveryNotExhausted
from recovery.models import FailureEvent, RecoveryStatus


def check_redrivable(payment_ref: str, latest_status: str | None) -> None:
    """Raise unless the payment's latest recovery (`None`: it has none) may be redriven."""
    if latest_status is None:
        raise NotFound(f"no recovery for payment_ref {payment_ref!r}")
    if latest_status != RecoveryStatus.EXHAUSTED:
        raise RecoveryNotExhausted(
            f"only an exhausted recovery can be retried; this one is {latest_status}"
        )


def redrive_event(last: FailureEvent, recovery_id: str) -> FailureEvent:
    """The latest failure of the exhausted run, as the first event of run `recovery_id`."""
    return last.model_copy(
        update={"event_id": f"redrive_{recovery_id}", "recovery_id": recovery_id}
    )
