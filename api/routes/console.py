"""The console's sign-in, sign-out, overview and (admins) merchant switch.

`POST /console/login` takes the form field `api_key` and answers with a session cookie (the
key is never stored in the browser); the sign-in form carries its own CSRF token in a
short-lived cookie (double submit), every later form the session's. Failed sign-ins count
against the same per-address limit as failed API authentications.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.console.charts import bar_chart
from api.console.web import (
    LOGIN_COOKIE,
    ConsoleDep,
    ConsoleRoute,
    PostDep,
    Refused,
    SignInRequired,
    console_page,
    cookie_name,
    form_text,
    hash_session_id,
    new_token,
    page,
    redirect,
    same_token,
    secure_cookies,
    signed_in,
)
from api.deps import SettingsDep, StoreDep
from api.ratelimit import FailedAuthLimiter
from recovery.auth import authenticate
from recovery.currencies import format_amount
from recovery.errors import RateLimited, Unauthorized

router = APIRouter(prefix="/console", include_in_schema=False, route_class=ConsoleRoute)

PERIODS = (7, 30, 90)
WHY = {"expired": "Your session has ended. Sign in again.", "signed_out": "You are signed out."}


def _login_page(request: Request, status: int, error: str | None, why: str | None) -> Response:
    token = request.cookies.get(LOGIN_COOKIE)
    if not token or len(token) > 100:
        token = new_token()
    response = page(
        request,
        "console/login.html",
        status,
        csrf_token=token,
        error=error,
        notice=WHY.get(why or ""),
    )
    settings = request.app.state.settings
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path="/console/login",
        httponly=True,
        samesite="strict",
        secure=secure_cookies(settings),
    )
    return response


@router.get("/login")
async def login_form(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    why: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    try:
        await signed_in(request, store, settings)
        return redirect("/console")
    except SignInRequired:
        return _login_page(request, 200, None, why)


@router.post("/login")
async def login(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Refused("this form was sent from another site")
    token = await form_text(request, "csrf_token")
    if not same_token(token, request.cookies.get(LOGIN_COOKIE) or ""):
        return _login_page(request, 403, "The sign-in form expired. Please try again.", None)
    limiter: FailedAuthLimiter = request.app.state.auth_limiter
    client = request.client.host if request.client else "unknown"
    key = await form_text(request, "api_key")
    try:
        principal = await authenticate(store, f"Bearer {key}")
    except Unauthorized:
        if (wait := limiter.retry_after(client)) is not None:
            raise RateLimited(
                "too many failed sign-ins; wait a moment and try again", wait
            ) from None
        limiter.failed(client)
        return _login_page(request, 401, "That API key is not valid (or was revoked).", None)
    session_id = new_token()
    lifetime = timedelta(seconds=settings.console_session_seconds)
    await store.create_console_session(
        id_hash=hash_session_id(session_id),
        key_id=principal.key_id,
        merchant_id=principal.merchant_id,
        csrf_token=new_token(),
        expires_at=datetime.now(UTC) + lifetime,
    )
    response = redirect("/console")
    response.set_cookie(
        cookie_name(settings),
        session_id,
        max_age=int(lifetime.total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure_cookies(settings),
    )
    response.delete_cookie(LOGIN_COOKIE, path="/console/login")
    return response


@router.post("/logout")
async def logout(console: PostDep, store: StoreDep, settings: SettingsDep) -> Response:
    await store.end_console_session(console.id_hash)
    response = redirect("/console/login?why=signed_out")
    response.delete_cookie(
        cookie_name(settings),
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure_cookies(settings),
    )
    return response


@router.post("/merchant")
async def switch_merchant(request: Request, console: PostDep, store: StoreDep) -> Response:
    """Admins only: show another merchant's data in this session."""
    console.scope.principal.require("admin")
    merchant_id = await form_text(request, "merchant_id")
    if not await store.switch_console_merchant(console.id_hash, merchant_id[:64]):
        await console.flash(store, "error", f"No merchant {merchant_id[:64]!r}.")
    return redirect("/console")


def _amounts_in(currency: str) -> Callable[[float], str]:
    def fmt(value: float) -> str:
        return format_amount(round(value), currency)

    return fmt


@router.get("")
async def overview(
    request: Request,
    console: ConsoleDep,
    store: StoreDep,
    days: Annotated[Literal["7", "30", "90"], Query()] = "30",
) -> Response:
    n = int(days)
    now = datetime.now(UTC)
    start = datetime.combine(now.date() - timedelta(days=n - 1), time(0), UTC)
    merchant = console.merchant_id
    summary = await store.analytics_summary(merchant, start, now)
    series = await store.analytics_days(merchant, start, now)
    labels = [d.day.strftime("%b %d") for d in series]
    counts = bar_chart(
        "Recoveries started and recovered per day",
        f"Last {n} days, UTC days: recoveries started (first bar) and recovered (second bar).",
        labels,
        [
            ("started", [d.started for d in series]),
            ("recovered", [d.recovered for d in series]),
        ],
    )
    currencies = sorted(
        summary.recovered_amount, key=lambda c: summary.recovered_amount[c], reverse=True
    )
    revenue = [
        bar_chart(
            f"Recovered revenue per day, {currency.upper()}",
            f"Last {n} days: amounts recovered in {currency.upper()} each UTC day.",
            labels,
            [(currency.upper(), [d.recovered_amount.get(currency, 0) for d in series])],
            fmt=_amounts_in(currency),
        )
        for currency in currencies
    ]
    return await console_page(
        request,
        console,
        store,
        "console/overview.html",
        nav="overview",
        days=n,
        periods=PERIODS,
        summary=summary,
        counts=counts,
        revenue=revenue,
        open_now=await store.open_by_category(merchant),
        upcoming=await store.upcoming_attempts(merchant, 10),
        activity=await store.recent_activity(merchant, 15),
        now=now,
    )
