"""How `recovery.mail.send` reaches a real SMTP server (aiosmtpd) that wants TLS and a login:
STARTTLS and implicit TLS with the server's certificate checked, the login refused, and a
server that offers no STARTTLS when it is required (nothing is sent in the clear)."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from recovery.mail import (
    Email,
    MailDeferred,
    SmtpServer,
    build_message,
    send,
    sender_address,
)
from tests.helpers import free_port

USER, PASSWORD = "mailer", "s3cret-login"
# the implicit-TLS server's AUTH is under TLS (the whole connection is), which aiosmtpd's
# STARTTLS-minded check does not see
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


class Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.original_content or envelope.content)
        return "250 OK"


def check_login(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 on a failure


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    return context


def serve(inbox: Inbox, **kwargs: Any) -> Iterator[int]:
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@pytest.fixture
def starttls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    for port in serve(
        inbox,
        tls_context=server_context(certificate),
        require_starttls=True,
        auth_required=True,
        authenticator=check_login,
    ):
        yield inbox, port


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    # implicit TLS (smtps): the whole conversation is encrypted from the first byte; with
    # a context for the whole connection, aiosmtpd's TLS check for AUTH is met by it
    for port in serve(
        inbox,
        ssl_context=server_context(certificate),
        auth_required=True,
        auth_require_tls=False,
        authenticator=check_login,
    ):
        yield inbox, port


@pytest.fixture
def plain_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    yield from ((inbox, port) for port in serve(inbox))


def message() -> Any:
    email = Email(
        kind="retry_link",
        to="alice@example.com",
        merchant_name="Acme",
        reply_to=None,
        payment_ref="order_1",
        amount=100,
        currency="usd",
        url="https://pay.example/pay/retry/t",
        link_expires_at=datetime.now(UTC),
    )
    return build_message(
        email, sender=sender_address("pay@example.com"), notification_key="k", now=datetime.now(UTC)
    )


async def test_starttls_with_a_login_and_the_certificate_checked(
    starttls_server: tuple[Inbox, int], certificate: tuple[Path, Path]
) -> None:
    inbox, port = starttls_server
    url = f"smtp+starttls://{USER}:{PASSWORD}@127.0.0.1:{port}"
    await send(SmtpServer.from_url(url), message(), seconds_per_step=5, ca_file=certificate[0])
    assert len(inbox.messages) == 1


async def test_implicit_tls_with_a_login(
    tls_server: tuple[Inbox, int], certificate: tuple[Path, Path]
) -> None:
    inbox, port = tls_server
    url = f"smtps://{USER}:{PASSWORD}@127.0.0.1:{port}"
    await send(SmtpServer.from_url(url), message(), seconds_per_step=5, ca_file=certificate[0])
    assert len(inbox.messages) == 1


async def test_a_certificate_nobody_we_trust_signed_is_refused(
    starttls_server: tuple[Inbox, int],
) -> None:
    inbox, port = starttls_server
    url = f"smtp+starttls://{USER}:{PASSWORD}@127.0.0.1:{port}"
    with pytest.raises(MailDeferred, match="CERTIFICATE_VERIFY_FAILED"):
        await send(SmtpServer.from_url(url), message(), seconds_per_step=5)
    assert inbox.messages == []


async def test_a_refused_login_is_deferred_not_a_refusal_of_the_message(
    starttls_server: tuple[Inbox, int], certificate: tuple[Path, Path]
) -> None:
    inbox, port = starttls_server
    url = f"smtp+starttls://{USER}:wrong@127.0.0.1:{port}"
    with pytest.raises(MailDeferred, match="refused our login"):
        await send(SmtpServer.from_url(url), message(), seconds_per_step=5, ca_file=certificate[0])
    assert inbox.messages == []


async def test_starttls_required_and_not_offered_sends_nothing_in_the_clear(
    plain_server: tuple[Inbox, int],
) -> None:
    inbox, port = plain_server
    with pytest.raises(MailDeferred):
        await send(
            SmtpServer.from_url(f"smtp+starttls://127.0.0.1:{port}"), message(), seconds_per_step=5
        )
    assert inbox.messages == []
    # plain smtp:// (loopback relays, development) does send without TLS
    await send(SmtpServer.from_url(f"smtp://127.0.0.1:{port}"), message(), seconds_per_step=5)
    assert len(inbox.messages) == 1
