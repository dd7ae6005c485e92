"""Templates, security headers, sessions and CSRF for the console.

Sessions: sign-in exchanges an API key for a random session id (32 bytes) in a cookie that is
HttpOnly, SameSite=Strict, Path=/ and, outside ENVIRONMENT=development, Secure with the
`__Host-` prefix; the store keeps only its SHA-256. The API key itself is never kept in the
browser. Every POST carries the session's CSRF token (compared in constant time) and is
refused when the browser says it comes from another site (`Sec-Fetch-Site: cross-site`).
The role shown (`Console.can`) is the role enforced: actions check it again on the server.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from api.deps import Scope, SettingsDep, StoreDep
from recovery.auth import ROLE_RANK, Principal
from recovery.currencies import format_amount
from recovery.errors import RecoveryError
from recovery.mail import mask_address
from recovery.settings import Settings
from recovery.store import ConsoleSession, Store

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
LOGIN_COOKIE = "console_login"  # the sign-in form's CSRF token (double submit)

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


# ---- templates --------------------------------------------------------------------------------


NONE = "\N{EN DASH}"  # shown where there is no value


def _money(amount: int | None, currency: str | None) -> str:
    if amount is None or not currency:
        return NONE
    return format_amount(amount, currency)


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else NONE


def _duration(seconds: float | None) -> str:
    """`93784` -> "1 d 2 h"; a person's reading of a span, two units at most."""
    if seconds is None:
        return NONE
    s = int(abs(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if s >= size or (unit == "s" and not parts):
            parts.append(f"{s // size} {unit}")
            s %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def _relative(at: datetime | None, now: datetime | None = None) -> str:
    if at is None:
        return NONE
    delta = (at - (now or datetime.now(UTC))).total_seconds()
    return f"in {_duration(delta)}" if delta >= 0 else f"{_duration(-delta)} ago"


def _percent(value: float | None) -> str:
    return NONE if value is None else f"{100 * value:.1f} %"


def _label(text: str | None) -> str:
    return (text or NONE).replace("_", " ")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        money=_money,
        when=_when,
        duration=_duration,
        relative=_relative,
        percent=_percent,
        label=_label,
        masked=mask_address,
    )
    return env


templates = Jinja2Templates(env=environment())


def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, ctx, status_code=status, headers=HEADERS)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=HEADERS)


# ---- errors as pages -------------------------------------------------------------------------


class SignInRequired(Exception):
    """No live session: the browser is sent to the sign-in page."""

    def __init__(self, why: str = "") -> None:
        super().__init__(why)
        self.why = why


class Refused(RecoveryError):
    """A console request refused before it reached anything (CSRF, cross-site)."""

    status = 403
    code = "forbidden"


def _error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    ctx: dict[str, Any] = {"title": title, "message": message}
    if (console := getattr(request.state, "console", None)) is not None:
        ctx["console"] = console
    return page(request, "console/error.html", status, **ctx)


_TITLES = {
    400: "Not possible",
    403: "Not allowed",
    404: "Not found",
    409: "Not possible now",
    422: "Check what you entered",
    429: "Too many tries",
    503: "Unavailable",
}


class ConsoleRoute(APIRoute):
    """Errors on console routes are pages, not JSON: no session is a redirect to sign in,
    a domain error its status with its message, a bad parameter a 422 page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired as e:
                return redirect("/console/login" + (f"?why={e.why}" if e.why else ""))
            except RecoveryError as e:
                response = _error_page(
                    request, e.status, _TITLES.get(e.status, "Error"), _sentence(e.message)
                )
                if e.status in (429, 503):
                    retry_after = getattr(e, "retry_after_seconds", 2)
                    response.headers["Retry-After"] = str(retry_after)
                return response
            except RequestValidationError as e:
                fields = ", ".join(
                    str(err.get("loc", ["?"])[-1]) for err in e.errors() if err.get("loc")
                )
                return _error_page(
                    request, 422, _TITLES[422], f"These values are not valid: {fields or '?'}."
                )

        return handle


def _sentence(message: str) -> str:
    message = message.strip()
    if not message:
        return "Something went wrong."
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else message + "."


# ---- sessions and CSRF ----------------------------------------------------------------------


def cookie_name(settings: Settings) -> str:
    return "console_session" if settings.environment == "development" else "__Host-console"


def secure_cookies(settings: Settings) -> bool:
    return settings.environment != "development"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_session_id(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True)
class Console:
    """The signed-in session of this request."""

    session: ConsoleSession
    id_hash: bytes

    @property
    def scope(self) -> Scope:
        s = self.session
        return Scope(Principal(s.key_id, s.key_merchant_id, s.role), s.merchant_id)

    @property
    def merchant_id(self) -> str:
        return self.session.merchant_id

    @property
    def role(self) -> str:
        return self.session.role

    @property
    def csrf(self) -> str:
        return self.session.csrf_token

    def can(self, role: str) -> bool:
        return ROLE_RANK[self.session.role] >= ROLE_RANK[role]

    async def flash(self, store: Store, kind: str, message: str) -> None:
        await store.set_console_flash(self.id_hash, kind, message)


async def signed_in(request: Request, store: StoreDep, settings: SettingsDep) -> Console:
    session_id = request.cookies.get(cookie_name(settings))
    if not session_id or len(session_id) > 100:
        raise SignInRequired()
    id_hash = hash_session_id(session_id)
    session = await store.console_session(id_hash, timedelta(seconds=settings.console_idle_seconds))
    if session is None:
        raise SignInRequired("expired")
    console = Console(session, id_hash)
    request.state.console = console
    return console


ConsoleDep = Annotated[Console, Depends(signed_in)]


async def checked_post(request: Request, console: ConsoleDep) -> Console:
    """A form post of the signed-in session: from this site, with the session's CSRF token."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Refused("this form was sent from another site")
    form = await request.form()
    token = form.get("csrf_token")
    if not same_token(token if isinstance(token, str) else None, console.csrf):
        raise Refused("this form has expired or did not come from this console: reload the page")
    return console


PostDep = Annotated[Console, Depends(checked_post)]


async def form_text(request: Request, name: str) -> str:
    """A text field of the posted form, stripped ("" when absent)."""
    value = (await request.form()).get(name)
    return value.strip() if isinstance(value, str) else ""


async def console_page(
    request: Request,
    console: Console,
    store: Store,
    name: str,
    status: int = 200,
    **ctx: Any,
) -> HTMLResponse:
    """A signed-in page: the session (role, merchant, CSRF token), its waiting message, and
    for an admin the merchants it may switch to."""
    flash = await store.take_console_flash(console.id_hash)
    merchants = await store.list_merchants() if console.can("admin") else []
    return page(request, name, status, console=console, flash=flash, merchants=merchants, **ctx)
