"""Run the whole stack on one machine: `make dev` (`python -m scripts.dev`).

The pieces are built by `scripts/stack.py` (the benchmarks and tests start theirs there too):
embedded PostgreSQL under `<data dir>/pg` (unless `DATABASE_URL` is set), the Temporal dev
server with its state in `<data dir>/temporal.db` and its Web UI on `TEMPORAL_UI_PORT`
(unless `TEMPORAL_ADDRESS` is set), migrations and search attributes, the demo merchant
`mer_demo` with one `support` API key, the worker, and the API on `API_PORT`, logging readable
text lines (`LOG_FORMAT=json` for the production format).

It then prints a banner with the API key on a line of its own (`API key: rk_test_...`), writes
`<data dir>/dev-stack.json` so that the operator CLI finds this stack's database, and runs
until Ctrl-C (or SIGTERM), which stops everything it started. If a piece dies on its own,
everything is stopped and the exit code is 1. A second Ctrl-C skips the grace period.

Configuration is `recovery.settings.Settings`: the data dir is `RECOVERY_DATA_DIR` (default
`.data/` in the checkout); ports `API_PORT` (8000), `TEMPORAL_PORT` (7233), `TEMPORAL_UI_PORT`
(8233); the Prometheus metrics listeners `METRICS_ADDRESS` (API, 127.0.0.1:9464) and
`WORKER_METRICS_ADDRESS` (worker, 127.0.0.1:9465), both printed in the banner. The API key,
the link signing secret and the `CREDENTIALS_KEY` (which seals merchants' PSP credentials) are
kept in the data dir (mode 0600), so a restart on the same data dir prints the same key
and still opens what it sealed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr, ValidationError

from recovery import devstack
from recovery.mail import SmtpServer
from recovery.settings import Settings
from scripts.mail_sink import MailSink
from scripts.stack import (
    DEMO_KEY_ROLE,
    DEMO_MERCHANT_ID,
    HOST,
    REPO_ROOT,
    Stack,
    StackError,
    free_port,
    read_or_create_secret,
)

API_KEY_FILE = "dev-api-key"
LINK_SECRET_FILE = "link-signing-secret"
METRICS_ADDRESS = f"{HOST}:9464"
WORKER_METRICS_ADDRESS = f"{HOST}:9465"
DEV_MAIL_FROM = "Payments (dev) <payments@recovery.localhost>"


def say(message: str) -> None:
    """One status line of our own, in the same column layout as the children's output."""
    sys.stdout.write(f"{'dev':<9}| {message}\n")
    sys.stdout.flush()


def mail_line(line: str) -> None:
    """The SMTP sink's line for each message it keeps."""
    sys.stdout.write(f"{'mail':<9}| {line}\n")
    sys.stdout.flush()


def complain(message: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"{'dev':<9}| error: {message}\n")
    sys.stderr.flush()


def redact(dsn: str) -> str:
    """A database URL fit for a message: the password replaced by `***`."""
    parts = urlsplit(dsn)
    if not parts.password:
        return dsn
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def ensure_port_free(port: int, what: str, env_name: str, host: str = HOST) -> None:
    """Fail early, and clearly, when a port we are about to listen on is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT counts as free
        try:
            sock.bind((host, port))
        except OSError:
            raise StackError(
                f"port {port} ({what}) on {host} is already in use: stop whatever holds it "
                f"(an earlier `make dev`?) or set {env_name} to another port"
            ) from None


def ensure_address_free(address: str, what: str, env_name: str) -> None:
    host, _, port = address.rpartition(":")
    ensure_port_free(int(port), what, env_name, host or HOST)


def dev_stack() -> DevStack:
    """The stack `make dev` runs, from the environment."""
    given = Settings(environment="development")
    data_dir = (given.recovery_data_dir or REPO_ROOT / ".data").expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    own_temporal = "temporal_address" not in given.model_fields_set
    ensure_port_free(given.api_port, "API", "API_PORT")
    if own_temporal:
        ensure_port_free(given.temporal_port, "Temporal frontend", "TEMPORAL_PORT")
        ensure_port_free(given.temporal_ui_port, "Temporal Web UI", "TEMPORAL_UI_PORT")
    metrics = given.metrics_address or METRICS_ADDRESS
    worker_metrics = given.worker_metrics_address or WORKER_METRICS_ADDRESS
    ensure_address_free(metrics, "API metrics", "METRICS_ADDRESS")
    ensure_address_free(worker_metrics, "worker metrics", "WORKER_METRICS_ADDRESS")
    keep = given.model_fields_set
    # without SMTP_URL, e-mail goes to a local sink that keeps it in <data dir>/mail
    own_mail = given.smtp_url is None
    mail = (
        {"smtp_url": SecretStr(f"smtp://{HOST}:{free_port()}"), "mail_from": DEV_MAIL_FROM}
        if own_mail
        else {}
    )
    settings = given.model_copy(
        update={
            "credentials_key": given.credentials_key
            or SecretStr(
                read_or_create_secret(
                    data_dir / devstack.CREDENTIALS_KEY_FILE,
                    lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
                )
            ),
            # the demo charges the simulator; ALLOW_SIMULATOR=false turns it off here too
            "allow_simulator": given.allow_simulator if "allow_simulator" in keep else True,
            "metrics_address": metrics,
            "worker_metrics_address": worker_metrics,
            "api_host": HOST,
            "recovery_data_dir": data_dir,
            "log_format": given.log_format if "log_format" in keep else "text",
            # (not `keep`: a development Settings makes up a secret when none is given)
            "link_signing_secret": given.link_signing_secret
            if os.environ.get("LINK_SIGNING_SECRET")
            else SecretStr(
                read_or_create_secret(
                    data_dir / LINK_SECRET_FILE, lambda: secrets.token_urlsafe(32)
                )
            ),
            "public_base_url": given.public_base_url
            if "public_base_url" in keep
            else f"http://{HOST}:{given.api_port}",
            # the console links each recovery to its workflow in the dev server's Web UI
            "temporal_ui_url": given.temporal_ui_url
            or (f"http://{HOST}:{given.temporal_ui_port}" if own_temporal else None),
            **mail,
        }
    )
    return DevStack(
        data_dir=data_dir,
        settings=settings,
        own_postgres=not given.database_url,
        own_temporal=own_temporal,
        ui_port=given.temporal_ui_port,
        demo_key_file=data_dir / API_KEY_FILE,
        say=say,
        mail_dir=data_dir / "mail" if own_mail else None,
    )


@dataclass
class DevStack(Stack):
    """The stack, with the local SMTP sink that keeps e-mail in `mail_dir` (None: the
    e-mail goes to the SMTP_URL given)."""

    mail_dir: Path | None = None
    mail_sink: MailSink | None = None

    async def start(self) -> None:
        if self.mail_dir is not None and self.settings.smtp_url is not None:
            port = SmtpServer.from_url(self.settings.smtp_url.get_secret_value()).port
            self.mail_sink = MailSink(self.mail_dir, port=port, say=mail_line).start()
            self.say(f"keeping e-mail in {self.mail_dir} (SMTP sink on {self.mail_sink.url})")
        await super().start()

    async def stop(self, hurry: asyncio.Event | None = None) -> None:
        await super().stop(hurry)
        if self.mail_sink is not None:
            self.mail_sink.stop()


def banner(stack: DevStack) -> str:
    api = stack.api_url
    s = stack.settings
    own = stack.temporal is not None
    ui = f"http://{HOST}:{stack.ui_port}" if own else f"that of {s.temporal_address}"
    body = {
        "event_id": "evt_demo_1",
        "payment_ref": "order_42",
        "psp": "simulator",
        "amount": 4999,
        "currency": "usd",
        "customer": {"id": "cus_1", "email": "a@example.com"},
        "payment_method": {"type": "card", "id": "pm_sim_succeed_on_2"},
        "failure": {"code": "card_declined", "decline_code": "insufficient_funds"},
        "occurred_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "metadata": {"plan": "pro"},
    }
    auth = f'-H "Authorization: Bearer {stack.api_key}"'
    mail = (
        f"kept in {stack.mail_dir}/<message id>.eml (a `mail |` line for each)"
        if stack.mail_sink is not None
        else f"sent through {s.smtp_server()}"
    )
    rule = "=" * 78
    return "\n".join(
        [
            "",
            rule,
            "Payment recovery dev stack is running.  Ctrl-C stops it all.",
            "",
            f"  API:          {api}   (OpenAPI docs: {api}/docs)",
            f"  Temporal UI:  {ui}",
            f"  Metrics:      http://{s.metrics_address}/metrics (API), "
            f"http://{s.worker_metrics_address}/metrics (worker)",
            f"  Temporal:     {s.temporal_address} (namespace {s.temporal_namespace})",
            f"  PostgreSQL:   {redact(s.database_url)}",
            f"  Data dir:     {stack.data_dir}   (the `recovery` CLI finds this stack by itself)",
            f"  E-mail:       {mail}",
            "",
            f"Demo merchant {DEMO_MERCHANT_ID}, key role {DEMO_KEY_ROLE}:",
            f"API key: {stack.api_key}",
            "",
            "Post a failed payment (the simulator declines attempt 1, attempt 2 succeeds):",
            "",
            f"  curl -sS -X POST {api}/v1/events/payment_failed \\",
            f"    {auth} \\",
            '    -H "Content-Type: application/json" \\',
            f"    -d '{json.dumps(body)}'",
            "",
            "Then watch it; expedite skips the cooldown (twice, and it is recovered):",
            "",
            f"  curl -sS {api}/v1/recoveries/by_ref/order_42 {auth}",
            f"  curl -sS -X POST {api}/v1/recoveries/by_ref/order_42/expedite {auth}",
            rule,
            "",
        ]
    )


async def run(stack: DevStack) -> int:
    stop, hurry = asyncio.Event(), asyncio.Event()

    def request_stop() -> None:
        if stop.is_set():
            hurry.set()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, request_stop)
    code = 0
    try:
        starting = asyncio.ensure_future(stack.start())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not starting.done():  # Ctrl-C while starting
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, StackError):
                await starting
            return 0
        starting.result()
        devstack.write_state(
            stack.data_dir,
            devstack.DevStackState(
                database_url=stack.settings.database_url,
                temporal_address=stack.settings.temporal_address,
                api_url=stack.api_url,
                pid=os.getpid(),
            ),
        )
        sys.stdout.write(banner(stack) + "\n")
        sys.stdout.flush()
        if (gone := await stack.watch(stop)) is not None:
            complain(f"{gone} stopped on its own; stopping everything")
            code = 1
    except StackError as e:
        complain(str(e))
        code = 1
    finally:
        devstack.clear_state(stack.data_dir)
        await stack.stop(hurry)
        say("stopped")
    return code


def main() -> None:
    try:
        stack = dev_stack()
    except (StackError, ValidationError) as e:
        complain(str(e))
        sys.exit(2)
    sys.exit(asyncio.run(run(stack)))


if __name__ == "__main__":
    main()
