"""The stack a benchmark run measures, started on fresh temp dirs and free ports.

Built by `scripts/stack.py`, as `make dev` is: embedded PostgreSQL (deleted at the end), the
Temporal dev server (headless, state in a temporary SQLite file, our search attributes
registered), `python -m worker` and `python -m api`, each in its own process session with
its output in `<root>/logs/<name>.log`. This module adds what the benchmarks look at: memory
and CPU of each piece and the error lines in the logs. `stop()` stops what was started,
newest first, and always runs (the runner calls it in a `finally`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import secrets
import time
from pathlib import Path
from typing import Any

import psutil
from pydantic import SecretStr

from recovery.mail import SmtpServer
from recovery.settings import Settings
from scripts import stack
from scripts.mail_sink import MailSink
from scripts.stack import StackError

__all__ = ["TASK_QUEUE", "Stack", "StackError"]

TASK_QUEUE = "payment-recovery-bench"


class Stack(stack.Stack):
    def __init__(
        self,
        root: Path,
        child_env: dict[str, str] | None = None,
        log_level: str = "INFO",
        temporal_args: list[str] | None = None,
    ) -> None:
        settings = Settings(
            environment="development",
            api_host=stack.HOST,
            api_port=stack.free_port(),
            temporal_port=0,
            temporal_task_queue=TASK_QUEUE,
            link_signing_secret=SecretStr(secrets.token_urlsafe(32)),
            allow_simulator=True,
            log_format="json",
            log_level=log_level,
            credentials_key=SecretStr(base64.b64encode(secrets.token_bytes(32)).decode()),
            smtp_url=SecretStr(f"smtp://{stack.HOST}:{stack.free_port()}"),
            mail_from="Payments (bench) <payments@bench.localhost>",
        )
        settings.public_base_url = f"http://{stack.HOST}:{settings.api_port}"
        # the dev server's Prometheus metrics on a known port: its `action` counter is what
        # Temporal Cloud bills (Temporal's "Estimate Actions for migration" guide)
        metrics_port = stack.free_port()
        self.temporal_metrics_url = f"http://{stack.HOST}:{metrics_port}/metrics"
        super().__init__(
            data_dir=root,
            settings=settings,
            keep_data=False,
            log_dir=root / "logs",
            child_env=dict(child_env or {}),
            temporal_args=["--metrics-port", str(metrics_port), *(temporal_args or [])],
            pool_size=8,
        )
        self.root = root
        self.startup_seconds = 0.0
        self.mail_sink: MailSink | None = None

    async def start(self) -> None:
        t0 = time.monotonic()
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        # e-mail goes to an SMTP sink in this process (the notify benchmark reads its times)
        assert self.settings.smtp_url is not None
        port = SmtpServer.from_url(self.settings.smtp_url.get_secret_value()).port
        self.mail_sink = MailSink(self.root / "mail", port=port, say=lambda _line: None).start()
        await super().start()
        self.startup_seconds = time.monotonic() - t0

    async def stop(self, hurry: asyncio.Event | None = None) -> None:
        try:
            await super().stop(hurry)
        finally:
            if self.mail_sink is not None:
                self.mail_sink.stop()

    def check_alive(self) -> None:
        for child in self.processes:
            if child.returncode is not None:
                raise StackError(
                    f"{child.name} exited with code {child.returncode}; "
                    f"its log ends with:\n{child.tail()}"
                )

    # ---- what the benchmarks look at --------------------------------------------------------

    def pieces(self) -> dict[str, list[psutil.Process]]:
        """The processes of each piece (PostgreSQL: the postmaster and its backends)."""
        found: dict[str, list[psutil.Process]] = {}
        for c in self.processes:
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(c.popen.pid)
                found[c.name] = [p, *p.children(recursive=True)]
        # The Temporal dev server is a child of ours (WorkflowEnvironment.start_local).
        for p in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                if p.name() == "temporal":
                    found["temporal"] = [p, *p.children(recursive=True)]
        if self.postgres is not None:
            with contextlib.suppress(psutil.Error, AssertionError):
                pm = psutil.Process(self.postgres.get_pid())
                found["postgres"] = [pm, *pm.children(recursive=True)]
        found["bench"] = [psutil.Process()]
        return found

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of each piece, in MiB (PostgreSQL: summed over its processes,
        which counts shared buffers once per process that touched them: an upper bound)."""
        out: dict[str, float] = {}
        for name, procs in self.pieces().items():
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            out[name] = round(total / 2**20, 1)
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by each piece's live processes."""
        out: dict[str, float] = {}
        for name, procs in self.pieces().items():
            total = 0.0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    total += t.user + t.system
            out[name] = total
        return out

    def log_problems(self) -> dict[str, Any]:
        """Counts of ERROR/CRITICAL lines and tracebacks in each child's log, with samples."""
        out: dict[str, Any] = {}
        pattern = re.compile(rb'"level": ?"(error|critical)"|Traceback', re.IGNORECASE)
        for c in self.processes:
            if c.log is None:
                continue
            with contextlib.suppress(OSError):
                lines = [ln for ln in c.log.read_bytes().splitlines() if pattern.search(ln)]
                out[c.name] = {
                    "error_lines": len(lines),
                    "samples": [ln.decode(errors="replace")[:400] for ln in lines[:5]],
                }
        return out
