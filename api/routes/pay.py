"""The customer's retry page (`GET/POST /pay/retry/{token}`) and the simulator PSP's hosted
checkout page.

Server-rendered, nothing loaded from elsewhere, no inline script or style (the CSP says so).
The token never appears in a log line, a response body or a Referer header; bad tokens get a
friendly page with 400 (not ours) or 410 (expired, used, revoked), never a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.deps import PSPsDep, SettingsDep, StoreDep
from recovery.currencies import format_amount
from recovery.link_tokens import ExpiredLink, InvalidLink, decode_token
from recovery.logs import bind
from recovery.models import Customer
from recovery.psp.base import CheckoutRequest
from recovery.settings import Settings
from recovery.store import LinkView, new_id

router = APIRouter(prefix="/pay", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
log = logging.getLogger("recovery.api.pay")

_checkout_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
CHECKOUT_ORIGINS = ("https://checkout.stripe.com", "https://rzp.io", "https://*.razorpay.com")


def security_headers(settings: Settings) -> dict[str, str]:
    base = urlsplit(settings.public_base_url)
    own = f"{base.scheme}://{base.netloc}"
    return {
        "Content-Security-Policy": (
            "default-src 'none'; style-src 'self'; img-src 'self'; "
            f"form-action 'self' {own} {' '.join(CHECKOUT_ORIGINS)}; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }


def page(request: Request, settings: Settings, name: str, status: int, **ctx: Any) -> Response:
    return templates.TemplateResponse(
        request, name, ctx, status_code=status, headers=security_headers(settings)
    )


def message(
    request: Request,
    settings: Settings,
    status: int,
    heading: str,
    text: str,
    tone: str = "warn",
    merchant: str | None = None,
) -> Response:
    return page(
        request,
        settings,
        "message.html",
        status,
        heading=heading,
        message=text,
        tone=tone,
        merchant=merchant,
    )


async def _payable_link(
    request: Request, token: str, store: StoreDep, settings: Settings
) -> LinkView | Response:
    """The link's view when it can still be paid, else the page that says why not."""
    try:
        claims = decode_token(settings.link_signing_secret.get_secret_value(), token)
    except ExpiredLink:
        return message(
            request,
            settings,
            410,
            "This link has expired",
            "Ask the merchant for a new payment link.",
        )
    except InvalidLink:
        return message(
            request,
            settings,
            400,
            "This link is not valid",
            "Check that you opened the whole link from your message.",
        )
    view = await store.link_page(claims.link_id)
    if view is None or (view.merchant_id, view.payment_ref) != (
        claims.merchant_id,
        claims.payment_ref,
    ):
        return message(
            request,
            settings,
            400,
            "This link is not valid",
            "Check that you opened the whole link from your message.",
        )
    bind(merchant_id=view.merchant_id, payment_ref=view.payment_ref)
    merchant = view.merchant_name
    if view.used_at or view.recovery_status == "recovered":
        return message(
            request,
            settings,
            410,
            "Already paid",
            "This payment has been completed. Thank you!",
            "ok",
            merchant,
        )
    if view.revoked_at or view.recovery_status in ("exhausted", "cancelled"):
        return message(
            request,
            settings,
            410,
            "This link is no longer valid",
            "Contact the merchant if you still want to pay.",
            merchant=merchant,
        )
    return view


@router.get("/retry/{token}")
async def retry_page(
    token: str, request: Request, store: StoreDep, settings: SettingsDep
) -> Response:
    view = await _payable_link(request, token, store, settings)
    if isinstance(view, Response):
        return view
    await store.mark_link_opened(view.id)
    return page(
        request,
        settings,
        "pay.html",
        200,
        merchant=view.merchant_name,
        amount=format_amount(view.amount, view.currency),
        payment_ref=view.payment_ref,
        action=f"/pay/retry/{token}",
    )


@router.post("/retry/{token}")
async def pay(
    token: str, request: Request, store: StoreDep, settings: SettingsDep, psps: PSPsDep
) -> Response:
    """Create the link's one checkout (or reuse it) and send the customer there."""
    view = await _payable_link(request, token, store, settings)
    if isinstance(view, Response):
        return view
    base = settings.public_base_url.rstrip("/")

    async def create() -> tuple[str, str, str]:
        if view.psp == "simulator":
            await psps.for_merchant(view.merchant_id, view.psp)  # refused unless allowed
            checkout_id = new_id("simco")
            return "simulator", checkout_id, f"{base}/pay/simulator/{checkout_id}"
        adapter = await psps.for_merchant(view.merchant_id, view.psp)
        checkout = await adapter.create_checkout_session(
            CheckoutRequest(
                merchant_id=view.merchant_id,
                recovery_id=view.recovery_id,
                payment_ref=view.payment_ref,
                link_id=view.id,
                amount=view.amount,
                currency=view.currency,
                customer=Customer(id=view.customer_id, email=view.customer_email),
                description=f"{view.merchant_name} · {view.payment_ref}",
                success_url=f"{base}/pay/done/{view.id}",
                cancel_url=f"{base}/pay/retry/{token}",
                idempotency_key=f"checkout:{view.id}",
                expires_at=view.expires_at,
            )
        )
        return view.psp, checkout.psp_checkout_id, checkout.url

    # Redemptions of one link queue here without holding database connections; across API
    # replicas the link's row lock (in the store) makes the same guarantee.
    lock = _checkout_locks.setdefault(view.id, asyncio.Lock())
    async with lock:
        url = await store.link_checkout(
            view.id, create, simulator_return_url=f"{base}/pay/done/{view.id}"
        )
    return RedirectResponse(url, status_code=303, headers=security_headers(settings))


@router.get("/done/{link_id}")
async def done(link_id: str, request: Request, settings: SettingsDep) -> Response:
    return message(
        request,
        settings,
        200,
        "Thank you",
        "Your payment is being confirmed. You can close this page.",
        "ok",
    )


@router.get("/simulator/{checkout_id}")
async def simulator_checkout(
    checkout_id: str, request: Request, store: StoreDep, settings: SettingsDep, psps: PSPsDep
) -> Response:
    co = await store.simulator_checkout_view(checkout_id) if psps.simulator_allowed else None
    if co is None:
        return message(request, settings, 404, "Unknown checkout", "This checkout does not exist.")
    return page(
        request,
        settings,
        "simulator.html",
        200,
        merchant=co.merchant_name,
        amount=format_amount(co.amount, co.currency),
        checkout_id=checkout_id,
        paid=co.paid_at is not None,
    )


@router.post("/simulator/{checkout_id}")
async def simulator_pay(
    checkout_id: str, request: Request, store: StoreDep, settings: SettingsDep, psps: PSPsDep
) -> Response:
    # without the simulator its checkouts do not exist: nobody "pays" without money
    co = await store.simulator_checkout_view(checkout_id) if psps.simulator_allowed else None
    if co is None:
        return message(request, settings, 404, "Unknown checkout", "This checkout does not exist.")
    outcome = await store.pay_simulator_checkout(checkout_id)
    if outcome == "closed":
        return message(
            request,
            settings,
            409,
            "This checkout is closed",
            "Its link was revoked or expired, or the payment no longer needs you: nothing "
            "was charged.",
        )
    if outcome == "paid":
        log.info("simulator checkout paid", extra={"payment_ref": co.payment_ref})
    return RedirectResponse(co.return_url, status_code=303, headers=security_headers(settings))
