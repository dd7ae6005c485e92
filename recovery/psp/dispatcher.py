"""Pick the adapter for a payment's PSP."""

from __future__ import annotations

from collections.abc import Mapping

from recovery.errors import RecoveryError
from recovery.psp.base import PSPAdapter


class PSPNotConfigured(RecoveryError):
    status = 422
    code = "psp_not_configured"


class PSPDispatcher:
    def __init__(self, adapters: Mapping[str, PSPAdapter]) -> None:
        self._adapters = dict(adapters)

    def configured(self, psp: str) -> bool:
        return psp in self._adapters

    def for_psp(self, psp: str) -> PSPAdapter:
        try:
            return self._adapters[psp]
        except KeyError:
            raise PSPNotConfigured(
                f"no credentials are configured for PSP {psp!r}", field="psp"
            ) from None
