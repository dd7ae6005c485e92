"""One exception hierarchy for the domain; the API maps it to the JSON error envelope."""

from __future__ import annotations


class RecoveryError(Exception):
    """Base class. `status` and `code` are what the API answers with."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(RecoveryError):
    status = 404
    code = "not_found"


class RecoveryFinished(RecoveryError):
    status = 409
    code = "recovery_finished"


class IdempotencyKeyReused(RecoveryError):
    status = 409
    code = "idempotency_key_reused"


class Unauthorized(RecoveryError):
    status = 401
    code = "unauthorized"


class Forbidden(RecoveryError):
    status = 403
    code = "forbidden"


class Unavailable(RecoveryError):
    """A dependency (Postgres, Temporal) cannot answer now; the client should retry."""

    status = 503
    code = "unavailable"
    retry_after_seconds = 2


class NothingToExpedite(RecoveryError):
    """No attempt waits on a cooldown (awaiting the customer, pending, paused, in flight)."""

    status = 409
    code = "nothing_to_expedite"


class RecoveryNotExhausted(RecoveryError):
    status = 409
    code = "recovery_not_exhausted"


class RateLimited(RecoveryError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class InvalidInput(RecoveryError):
    """A request the API understood but whose values it refuses (422, like a body or query
    parameter that fails validation)."""

    status = 422
    code = "validation_error"
