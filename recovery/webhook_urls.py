"""Where merchant webhooks may go (SSRF): outside development only `https` URLs whose host
resolves to public addresses only.

Checked when an endpoint is created (a 422 naming `url`) and again at every delivery try,
which then connects to an address it checked (never resolving the name a second time), so a
name that resolves to a public address at the check and to a private one a moment later (DNS
rebinding) cannot reach inside. Refused: loopback, private, link-local (169.254.169.254, the
cloud metadata address), shared (100.64/10), multicast, reserved and unspecified addresses,
IPv4 and IPv6 alike, and IPv6 addresses that carry an IPv4 one (IPv4-mapped, NAT64, 6to4,
Teredo) whose IPv4 address is any of those.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from recovery.errors import RecoveryError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_LENGTH = 2048
RESOLVE_WITHIN = 5.0  # seconds
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UrlNotAllowed(RecoveryError):
    status = 422
    code = "url_not_allowed"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="url")


def is_public(ip: IPAddress) -> bool:
    """Whether a webhook may connect to `ip`."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # the IPv4 address itself, written as IPv6
            return is_public(ip.ipv4_mapped)
        embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not is_public(embedded):
            return False
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def parse(url: str, *, development: bool) -> SplitResult:
    """The URL's parts, or `UrlNotAllowed` saying why it cannot be an endpoint."""
    if len(url) > MAX_URL_LENGTH or any(c.isspace() or ord(c) < 0x20 for c in url):
        raise UrlNotAllowed(f"must be a URL of at most {MAX_URL_LENGTH} characters, no spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise UrlNotAllowed(f"is not a valid URL: {e}") from None
    schemes = ("https", "http") if development else ("https",)
    if parts.scheme not in schemes:
        raise UrlNotAllowed(
            "must be an https URL" if not development else "must be an http or https URL"
        )
    if not parts.hostname:
        raise UrlNotAllowed("must name a host")
    if parts.username is not None or parts.password is not None:
        raise UrlNotAllowed("must not carry credentials (user:password@)")
    if parts.fragment:
        raise UrlNotAllowed("must not have a #fragment")
    if port == 0:
        raise UrlNotAllowed("must not name port 0")
    return parts


@dataclass(frozen=True)
class Destination:
    """A URL checked, and the addresses its host resolved to (each one allowed)."""

    url: str
    parts: SplitResult
    addresses: tuple[IPAddress, ...]

    @property
    def host(self) -> str:
        assert self.parts.hostname is not None  # parse() checked it
        return self.parts.hostname

    @property
    def port(self) -> int:
        return self.parts.port or (443 if self.parts.scheme == "https" else 80)

    def url_for(self, address: IPAddress) -> str:
        """The URL with its host replaced by `address` (the Host header and TLS server
        name keep the host's name)."""
        literal = f"[{address}]" if address.version == 6 else str(address)
        netloc = f"{literal}:{self.parts.port}" if self.parts.port else literal
        return self.parts._replace(netloc=netloc).geturl()

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.parts.port}" if self.parts.port else host


async def check(url: str, *, development: bool) -> None:
    """An endpoint's URL as it is created: outside development it must resolve, to public
    addresses only; in development any http(s) URL is taken (local receivers are the point),
    and a name that does not resolve fails its tries instead."""
    if development:
        parse(url, development=True)
    else:
        await resolve(url, development=False)


async def resolve(url: str, *, development: bool) -> Destination:
    """Check `url` and resolve its host; outside development every address it resolves to
    must be public (one private address among public ones is refused too)."""
    parts = parse(url, development=development)
    host = parts.hostname or ""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: tuple[IPAddress, ...] = (literal,)
    else:
        addresses = await _lookup(host, parts.port or 443)
    if not development:
        for address in addresses:
            if not is_public(address):
                raise UrlNotAllowed(
                    f"must not reach a private, loopback, link-local or reserved address "
                    f"({host} is {address})"
                )
    return Destination(url, parts, addresses)


async def _lookup(host: str, port: int) -> tuple[IPAddress, ...]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_WITHIN):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError) as e:
        raise UrlNotAllowed(f"names a host that does not resolve ({host}): {e}") from None
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise UrlNotAllowed(f"names a host that does not resolve ({host})")
    return tuple(found)
