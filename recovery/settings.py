"""Settings from the environment (pydantic-settings). Workflows never read these."""

from __future__ import annotations

import base64
import binascii
import secrets
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from recovery import devstack
from recovery.constants import DEFAULT_TASK_QUEUE, WEBHOOK_TRY_TIMEOUT
from recovery.mail import SmtpServer, sender_address

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "dev-secret"})
MIN_SECRET_BYTES = 32


class DatabaseNotConfigured(RuntimeError):
    """No `DATABASE_URL`, and no running dev stack to use instead."""


class DatabaseSettings(BaseSettings):
    """What every process that opens the store reads (the operator CLI reads only this)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    database_url: str = ""
    """empty: not configured (there is no default server: see `resolve_database_url`)"""
    database_pool_min: int = 1
    # Connections each API or worker process may hold. 20: ingest at 16 concurrent clients
    # waited for a connection at 10 (bench/RESULTS.md, 2026-12-06); Postgres' default
    # max_connections (100) leaves room for two API and two worker processes.
    database_pool_max: int = 20
    recovery_data_dir: Path | None = None
    """the `make dev` data dir (default: `.data/` in the checkout)"""

    def resolve_database_url(self, cwd: Path | None = None) -> str:
        """`DATABASE_URL`, else the database of the `make dev` stack running in this checkout
        (found from `cwd`, see `recovery.devstack`), else `DatabaseNotConfigured`."""
        if self.database_url:
            return self.database_url
        here = (cwd or Path.cwd()).resolve()
        data_dir = self.recovery_data_dir or devstack.find_data_dir(here)
        state = devstack.read_state(data_dir) if data_dir is not None else None
        if state is not None:
            return state.database_url
        where = f"in {data_dir}" if data_dir is not None else f"in {here} or above it"
        raise DatabaseNotConfigured(
            f"DATABASE_URL is not set and no running `make dev` stack was found {where}: "
            "set DATABASE_URL (or pass --database-url), or start `make dev` in this checkout"
        )


CREDENTIALS_KEY_HINT = (
    "32 random bytes in base64, e.g. `openssl rand -base64 32` (see README, PSP credentials)"
)


def decode_credentials_key(text: str) -> bytes:
    """A `CREDENTIALS_KEY` value (standard or URL-safe base64 of 32 bytes) as bytes."""
    try:
        key = base64.b64decode(text.strip().replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ValueError(f"a credentials key must be {CREDENTIALS_KEY_HINT}")
    return key


class CredentialsSettings(BaseSettings):
    """The keys that seal merchants' PSP credentials at rest (`recovery.psp.sealing`)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore")

    credentials_key: SecretStr | None = None
    """the current key: seals every write"""
    credentials_keys_old: SecretStr | None = None
    """earlier keys, comma-separated: still open what they sealed (until `recovery psp reseal`)"""

    def credentials_keys(self) -> list[bytes]:
        """The current key first, then the old ones; [] without a current key."""
        if not self.credentials_key:
            return []
        old = self.credentials_keys_old.get_secret_value() if self.credentials_keys_old else ""
        texts = [self.credentials_key.get_secret_value(), *old.split(",")]
        return [decode_credentials_key(t) for t in texts if t.strip()]


class Settings(DatabaseSettings, CredentialsSettings):
    environment: Literal["development", "test", "production"] = "production"

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = DEFAULT_TASK_QUEUE

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    # The Temporal dev server `make dev` starts (when TEMPORAL_ADDRESS is not set).
    temporal_port: int = Field(default=7233, ge=0, le=65535)
    temporal_ui_port: int = Field(default=8233, ge=0, le=65535)
    metrics_address: str | None = None
    """host:port of the API's Prometheus metrics listener, e.g. 127.0.0.1:9464 (unset: none);
    never the API's own port, since the metrics hold every merchant's totals"""
    request_body_timeout_seconds: float = 10.0
    """A request body must arrive within this (else 408): no slow-body connections held."""
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    # Worker tuning: defaults sized for a 2-core machine (see bench/RESULTS.md).
    worker_max_concurrent_activities: int = 100
    worker_max_concurrent_workflow_tasks: int = 100
    worker_max_cached_workflows: int = 1000
    worker_graceful_shutdown_seconds: float = 30.0
    worker_metrics_address: str | None = None
    """host:port for the worker's Prometheus metrics (Temporal SDK metrics), e.g. 0.0.0.0:9464"""

    public_base_url: str = "http://127.0.0.1:8000"
    link_signing_secret: SecretStr = SecretStr("")
    link_ttl_seconds: int = Field(default=900, ge=60)
    """links issued through `POST /v1/recoveries/by_ref/{ref}/link`"""
    email_link_ttl_seconds: int = Field(default=7 * 86400, ge=3600, le=30 * 86400)
    """links the recovery e-mails to the customer (each reminder carries a fresh one)"""

    # E-mail to customers (`recovery.mail`). Without SMTP_URL nothing is e-mailed: each
    # notification is recorded `suppressed`, saying so.
    smtp_url: SecretStr | None = None
    """smtps://, smtp+starttls:// or smtp:// (loopback only outside development), with
    user:password@ when the server wants a login (see `recovery.mail`)"""
    mail_from: str | None = None
    """the sender, e.g. `Payments <payments@example.com>` (the merchant's name is shown)"""
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    smtp_ca_file: Path | None = None
    """a CA bundle for an SMTP server whose certificate a private CA signed"""

    # The console (`/console`): a signed-in session lasts this long at most, and ends sooner
    # when unused for the idle time; TEMPORAL_UI_URL (e.g. http://127.0.0.1:8233) makes each
    # recovery's page link to its workflow in the Temporal Web UI.
    console_session_seconds: int = Field(default=8 * 3600, ge=60, le=7 * 86400)
    console_idle_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    temporal_ui_url: str | None = None

    webhook_timeout_seconds: float = Field(default=WEBHOOK_TRY_TIMEOUT.total_seconds(), gt=0, le=60)
    """how long one merchant webhook try waits for the endpoint's answer (then it is retried)"""

    allow_simulator: bool = False
    """the built-in simulator PSP (moves no money): `make dev` and the tests turn it on;
    off, an event naming it is a 422 and no worker charges through it"""

    # Secrets are SecretStr: they never print, and logs mask their values (recovery.logs).
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    razorpay_key_id: str | None = None
    razorpay_key_secret: SecretStr | None = None
    razorpay_webhook_secret: SecretStr | None = None
    razorpay_api_base: str | None = None

    # Failed authentications allowed per client address: a burst, then this many per second.
    auth_failure_burst: int = 20
    auth_failure_refill_per_second: float = 0.2
    # How long an API process keeps a key it verified before asking Postgres again: a
    # revoked key stops working on every replica within this (0: ask on every request).
    api_key_cache_seconds: float = Field(default=2.0, ge=0, le=5)

    # Outbox relay: how often the sweep runs even without a NOTIFY, and the batch it takes.
    outbox_sweep_seconds: float = 2.0
    outbox_batch_size: int = 100
    # How long an answer from Temporal may take before the relay retries later.
    temporal_rpc_timeout_seconds: float = 5.0

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        link_secret = self.link_signing_secret.get_secret_value()
        if self.environment == "development" and not link_secret:
            # links then live as long as this process; `make dev` sets a lasting secret
            self.link_signing_secret = SecretStr(secrets.token_urlsafe(32))
        if self.environment != "development" and (
            link_secret.strip().lower() in PLACEHOLDER_SECRETS
            or len(link_secret.encode()) < MIN_SECRET_BYTES
        ):
            raise ValueError(
                f"LINK_SIGNING_SECRET must be a random secret of at least {MIN_SECRET_BYTES} "
                "bytes outside ENVIRONMENT=development (e.g. `openssl rand -hex 32`)"
            )
        if self.environment != "development" and not self.credentials_key:
            raise ValueError(
                "CREDENTIALS_KEY must be set outside ENVIRONMENT=development (it seals the "
                f"merchants' PSP credentials in Postgres): {CREDENTIALS_KEY_HINT}"
            )
        try:
            self.credentials_keys()
        except ValueError as e:
            raise ValueError(f"CREDENTIALS_KEY / CREDENTIALS_KEYS_OLD: {e}") from None
        if self.smtp_url is not None:
            server = SmtpServer.from_url(self.smtp_url.get_secret_value())
            if self.environment != "development":
                server.check_safe()
            if not self.mail_from:
                raise ValueError("MAIL_FROM must be set with SMTP_URL (the sender's address)")
            sender_address(self.mail_from)
        return self

    def smtp_server(self) -> SmtpServer | None:
        """The SMTP server customers' e-mail goes through (None: e-mail is off)."""
        if self.smtp_url is None:
            return None
        return SmtpServer.from_url(self.smtp_url.get_secret_value())


@lru_cache
def get_settings() -> Settings:
    return Settings()


def settings_or_exit() -> Settings:
    """`get_settings()` for a process's entry point: a configuration it must refuse ends the
    process with exit code 2 and one readable line per problem on stderr, not a traceback."""
    try:
        return get_settings()
    except ValidationError as e:
        problems = []
        for error in e.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            where = ".".join(str(part) for part in error["loc"]).upper()
            problems.append(f"{where}: {message}" if where else message)
        sys.stderr.write("".join(f"configuration error: {p}\n" for p in problems))
        raise SystemExit(2) from None
