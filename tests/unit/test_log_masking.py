"""Log masking by value: the configured secrets (every `SecretStr` in `Settings`) and the
merchants' own PSP secrets are masked in every line, whatever they look like."""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from recovery.logs import JsonFormatter, TextFormatter, mask_secrets_in
from recovery.psp.credentials import parse_credentials
from recovery.settings import Settings


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("test.masking")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        log.removeHandler(handler)


def no_prefix() -> str:
    """A secret no pattern knows: random letters and digits, no `sk_`, `whsec_`, `rk_`..."""
    return "Zq" + secrets.token_hex(16)


def test_every_secret_setting_is_masked_by_value(captured: io.StringIO) -> None:
    values = {
        name: no_prefix()
        for name, field in Settings.model_fields.items()
        if SecretStr in (field.annotation, *getattr(field.annotation, "__args__", ()))
    }
    assert {"link_signing_secret", "stripe_api_key", "razorpay_key_secret"} <= set(values)
    for name in ("credentials_key", "credentials_keys_old"):  # these must be real keys
        values[name] = base64.b64encode(secrets.token_bytes(32)).decode()
    smtp_password = no_prefix()  # the SMTP login's password shows up on its own, too
    values["smtp_url"] = f"smtps://mailer:{smtp_password}@smtp.example.com"
    settings = Settings(environment="test", mail_from="pay@example.com", **values)  # type: ignore[arg-type]
    values["smtp_password"] = smtp_password
    mask_secrets_in(settings)
    log = logging.getLogger("test.masking")
    for name, value in values.items():
        log.info("configured %s=%s", name, value)
        log.info("quoted %s", json.dumps({"v": value}))
        try:
            raise RuntimeError(f"boom with {value}")
        except RuntimeError:
            log.exception("failed")
    out = captured.getvalue()
    for value in values.values():
        assert value not in out
    assert out.count("[redacted]") >= 3 * len(values)


def test_a_merchants_psp_secret_is_masked_once_parsed(captured: io.StringIO) -> None:
    own = no_prefix()
    parse_credentials("razorpay", {"key_id": "rzp_test_1", "key_secret": own})
    logging.getLogger("test.masking").warning("razorpay said no to %s", own)
    assert own not in captured.getvalue() and "[redacted]" in captured.getvalue()


def test_text_lines_are_masked_too() -> None:
    value = no_prefix()
    mask_secrets_in(Settings(environment="development", stripe_api_key=value))
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "key %s", (value,), None)
    line = TextFormatter().format(record)
    assert value not in line and "[redacted]" in line


def test_short_values_are_not_masked() -> None:
    """A short "secret" would mask ordinary words everywhere; settings refuse short ones."""
    mask_secrets_in(Settings(environment="development", stripe_api_key="abc"))
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "abcdef", (), None)
    assert "abcdef" in JsonFormatter().format(record)
