"""Structured logs: one JSON object per line, with the ids that say what a line is about.

`bind(merchant_id=..., payment_ref=..., workflow_id=...)` attaches ids to every line logged
in the current task; Temporal's activity and workflow loggers contribute the workflow id
themselves. Secrets never leave: API keys, bearer tokens and JWTs are masked in every line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from temporalio import activity

_context: ContextVar[dict[str, Any] | None] = ContextVar("log_context", default=None)

ID_FIELDS = ("merchant_id", "payment_ref", "workflow_id", "recovery_id", "event_id", "attempt")

_SECRETS = re.compile(
    r"(rk_(?:live|test)_[A-Za-z0-9_\-]{8,}"  # our API keys
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]+"  # Authorization values
    r"|eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+"  # JWTs (retry link tokens)
    r"|(?:sk|rk|whsec)_(?:live|test)?_?[A-Za-z0-9]{8,})"  # PSP secret keys
)


def redact(text: str) -> str:
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
