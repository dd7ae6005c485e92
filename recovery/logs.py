"""Structured logs: one JSON object per line, with the ids that say what a line is about.

`bind(merchant_id=..., payment_ref=..., workflow_id=...)` attaches ids to every line logged
in the current task; Temporal's activity and workflow loggers contribute the workflow id
themselves. Secrets never leave: API keys, bearer tokens and JWTs are masked in every line by
their shape, and the configured secrets by their value, whatever they look like:
`mask_secrets_in(settings)` (the API and the worker call it) registers every `SecretStr` of a
model, as `parse_credentials` does for a merchant's own PSP credentials.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr
from temporalio import activity

_context: ContextVar[dict[str, Any] | None] = ContextVar("log_context", default=None)

ID_FIELDS = ("merchant_id", "payment_ref", "workflow_id", "recovery_id", "event_id", "attempt")

_SECRETS = re.compile(
    r"(rk_(?:live|test)_[A-Za-z0-9_\-]{8,}"  # our API keys
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]+"  # Authorization values
    r"|eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+"  # JWTs (retry link tokens)
    r"|(?:sk|rk|whsec)_(?:live|test)?_?[A-Za-z0-9]{8,})"  # PSP secret keys
)


# Secrets masked by value. Shorter values are not registered: they would mask ordinary words
# (and the settings refuse secrets that short where it matters).
MIN_MASKED_LENGTH = 8
_masked: frozenset[str] = frozenset()
_masked_values: re.Pattern[str] | None = None


def mask_values(values: Iterable[str]) -> None:
    """Mask each of `values` (as written and as JSON escapes it) in every line from now on."""
    global _masked, _masked_values
    forms = set()
    for value in values:
        if len(value) >= MIN_MASKED_LENGTH:
            forms |= {value, json.dumps(value)[1:-1]}
    if forms <= _masked:
        return
    _masked = _masked | forms
    # longest first, so a secret that contains another is masked whole
    ordered = sorted(_masked, key=len, reverse=True)
    _masked_values = re.compile("|".join(re.escape(v) for v in ordered))


def mask_secrets_in(model: BaseModel) -> None:
    """Mask the value of every `SecretStr` field of `model` (settings, PSP credentials), and
    of the password in one that is a URL (`SMTP_URL`), which may show up on its own."""
    secrets = [
        value.get_secret_value()
        for name in type(model).model_fields
        if isinstance(value := getattr(model, name), SecretStr)
    ]
    mask_values([*secrets, *(_url_password(s) for s in secrets if "://" in s)])


def _url_password(url: str) -> str:
    try:
        return unquote(urlsplit(url).password or "")
    except ValueError:
        return ""


def redact(text: str) -> str:
    if (by_value := _masked_values) is not None:
        text = by_value.sub("[redacted]", text)
    return _SECRETS.sub("[redacted]", text)


def bind(**fields: Any) -> None:
    """Add ids to every log line of the current task (and tasks it starts)."""
    _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_context.get() or {})
        for key in ID_FIELDS:
            if (value := getattr(record, key, None)) is not None:
                out[key] = value
        # Temporal's loggers attach their context as dicts
        for attr in ("temporal_activity", "temporal_workflow"):
            info = getattr(record, attr, None)
            if isinstance(info, dict):
                out.setdefault("workflow_id", info.get("workflow_id"))
                if "activity_type" in info:
                    out["activity"] = info["activity_type"]
                    out["activity_attempt"] = info.get("attempt")
                if "workflow_type" in info:
                    out["workflow_type"] = info["workflow_type"]
        if activity.in_activity():
            info = activity.info()
            out.setdefault("workflow_id", info.workflow_id)
            out.setdefault("activity", info.activity_type)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str))


class TextFormatter(JsonFormatter):
    """For people at a terminal (`make dev`): the same fields, one readable line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = json.loads(super().format(record))
        head = f"{entry.pop('ts')[11:23]} {entry.pop('level'):<7} {entry.pop('msg')}"
        entry.pop("logger")
        exc = entry.pop("exc", None)
        tail = " ".join(f"{k}={v}" for k, v in entry.items())
        return f"{head}  {tail}".rstrip() + (f"\n{exc}" if exc else "")


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(TextFormatter() if fmt == "text" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our middleware logs requests
