"""Which PSPs this deployment can charge through (checked at ingest: a clear 422, never a
crash in a worker)."""

from __future__ import annotations

from recovery.settings import Settings

# PSPs with an adapter in this build. Stripe and Razorpay adapters are not built yet: their
# events are refused at ingest rather than accepted and then failing in the worker.
IMPLEMENTED = frozenset({"simulator"})


def psp_available(settings: Settings, psp: str) -> tuple[bool, str]:
    """(available, reason when not)."""
    if psp not in IMPLEMENTED:
        return False, f"PSP {psp!r} is not available on this deployment yet"
    return True, ""
