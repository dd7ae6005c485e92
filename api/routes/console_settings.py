"""The console's settings pages.

- Retry policy: the merchant's current policy, and a form that publishes a new version
  through the same validation as `PUT /v1/policy` (`PolicyUpdate`), with each problem shown
  beside its field and the values entered kept.
- Webhook endpoints: the merchant's endpoints and their delivery log; create (the secret is
  shown once, in that answer only, never kept in the session), rotate the secret (the
  previous one signs for 24 h more, or stops at once if it leaked), delete. The same
  functions as `/v1/webhook_endpoints`, audited alike; any role of the merchant, as there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import ValidationError

from api.console.web import Console, ConsoleDep, ConsoleRoute, PostDep, console_page, redirect
from api.deps import SettingsDep, StoreDep
from api.routes import webhook_endpoints
from recovery import webhook_urls
from recovery.card_networks import HIGHEST_PER_30_DAYS, HIGHEST_PER_DAY
from recovery.errors import RecoveryError
from recovery.merchant_events import EventType
from recovery.policy import PolicyUpdate, RetryPolicy
from recovery.store import Store

router = APIRouter(prefix="/console", include_in_schema=False, route_class=ConsoleRoute)


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    help: str
    kind: str = "number"  # number, checkbox, text
    step: str = "1"
    optional: bool = False


FIELDS = (
    Field("max_attempts", "Attempts per recovery", "Charges we make ourselves in one run (1-15)."),
    Field(
        "max_unknown_attempts",
        "Attempts for unknown failures",
        "Failures the classifier does not know get fewer tries (0-15).",
    ),
    Field(
        "window_days",
        "Recovery window (days)",
        "No attempt is scheduled later than this after the recovery started (1-60).",
    ),
    Field(
        "cooldown_multiplier",
        "Cooldown multiplier",
        "Scales every cooldown the classifier proposes (0.1-10).",
        step="0.1",
    ),
    Field(
        "jitter",
        "Jitter",
        "Each delay is stretched or shrunk by up to this fraction (0-0.5).",
        step="0.01",
    ),
    Field(
        "payday_snap_days",
        "Payday snap (days)",
        "Funds retries landing this many days before the 1st or the 15th wait for that "
        "payday morning (0-7).",
    ),
    Field(
        "card_attempts_per_30_days",
        "Card attempts per 30 days",
        f"Lowers every card network's ceiling (at most {HIGHEST_PER_30_DAYS}); empty: the "
        "networks' own.",
        optional=True,
    ),
    Field(
        "card_attempts_per_day",
        "Card attempts per 24 hours",
        f"Likewise, per rolling day (at most {HIGHEST_PER_DAY}); empty: the networks' own.",
        optional=True,
    ),
    Field(
        "email_customers",
        "E-mail customers their retry link",
        "Off: links are still issued, for you to pass on.",
        kind="checkbox",
    ),
    Field(
        "reminder_days",
        "Reminder days",
        "Days after the first e-mail on which a reminder goes out, e.g. 3, 7 (empty: none).",
        kind="text",
    ),
    Field(
        "email_receipts",
        "E-mail a receipt when the customer paid",
        "When a customer pays through their link or your PSP's checkout.",
        kind="checkbox",
    ),
)


def _values(policy: RetryPolicy) -> dict[str, str]:
    out = {}
    for f in FIELDS:
        value = getattr(policy, f.name)
        if f.kind == "checkbox":
            out[f.name] = "on" if value else ""
        elif f.name == "reminder_days":
            out[f.name] = ", ".join(str(d) for d in value)
        elif isinstance(value, float):
            out[f.name] = f"{value:g}"
        else:
            out[f.name] = "" if value is None else str(value)
    return out


def _body(form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The PUT body the form means, and the problems found before validation."""
    body: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in FIELDS:
        raw = form.get(f.name, "").strip()
        if f.kind == "checkbox":
            body[f.name] = bool(raw)
        elif f.name == "reminder_days":
            days = [d for d in re.split(r"[,\s]+", raw) if d]
            body[f.name] = days
        elif raw:
            body[f.name] = raw
        elif not f.optional:
            errors[f.name] = "Enter a value."
    return body, errors


@router.get("/policy")
async def policy_page(request: Request, console: ConsoleDep, store: StoreDep) -> Response:
    policy = await store.current_policy(console.merchant_id)
    return await console_page(
        request,
        console,
        store,
        "console/policy.html",
        nav="policy",
        policy=policy,
        fields=FIELDS,
        values=_values(policy),
        errors={},
    )


@router.post("/policy")
async def publish_policy(request: Request, console: PostDep, store: StoreDep) -> Response:
    """Publish a new version (any role of the merchant may, as with `PUT /v1/policy`)."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    body, errors = _body(form)
    update = None
    if not errors:
        try:
            update = PolicyUpdate.model_validate(body)
        except ValidationError as e:
            for err in e.errors():
                loc = [str(p) for p in err.get("loc", ())]
                name = loc[0] if loc else "policy"
                errors.setdefault(name, str(err.get("msg", "")).removeprefix("Value error, "))
    if update is None:
        current = await store.current_policy(console.merchant_id)
        return await console_page(
            request,
            console,
            store,
            "console/policy.html",
            422,
            nav="policy",
            policy=current,
            fields=FIELDS,
            values={f.name: form.get(f.name, "") for f in FIELDS},
            errors=errors,
        )
    policy = RetryPolicy.model_validate(update.model_dump(exclude={"version"}))
    saved = await store.save_policy(console.merchant_id, policy, console.scope.principal.actor)
    await console.flash(
        store,
        "ok",
        f"Published policy v{saved.version}. New recoveries use it; running ones keep theirs "
        "unless support applies it.",
    )
    return redirect("/console/policy")


# ---- webhook endpoints -----------------------------------------------------------------------

ALL_EVENTS = [e.value for e in EventType]


async def _webhooks_page(
    request: Request,
    console: Console,
    store: Store,
    status: int = 200,
    *,
    secret: tuple[str, str] | None = None,
    error: str | None = None,
    entered: dict[str, Any] | None = None,
) -> Response:
    endpoints = await store.list_webhook_endpoints(console.merchant_id)
    deliveries, _ = await store.list_webhook_deliveries(
        console.merchant_id, endpoint_id=None, event_id=None, limit=50, cursor=None
    )
    return await console_page(
        request,
        console,
        store,
        "console/webhooks.html",
        status,
        nav="webhooks",
        endpoints=endpoints,
        deliveries=deliveries,
        all_events=ALL_EVENTS,
        secret=secret,
        error=error,
        entered=entered or {"url": "", "description": "", "events": []},
    )


@router.get("/webhooks")
async def webhooks_page(request: Request, console: ConsoleDep, store: StoreDep) -> Response:
    return await _webhooks_page(request, console, store)


@router.post("/webhooks")
async def create_webhook(
    request: Request, console: PostDep, store: StoreDep, settings: SettingsDep
) -> Response:
    """A new endpoint; its secret is in this answer only (never stored in the session)."""
    form = await request.form()
    url = str(form.get("url") or "").strip()
    description = str(form.get("description") or "").strip() or None
    events = [str(e) for e in form.getlist("events") if str(e) in ALL_EVENTS]
    entered = {"url": url, "description": description or "", "events": events}
    if not url or len(url) > webhook_urls.MAX_URL_LENGTH:
        return await _webhooks_page(
            request, console, store, 422, error="Enter the endpoint's URL.", entered=entered
        )
    if description and len(description) > 500:
        return await _webhooks_page(
            request, console, store, 422, error="A description is 500 characters at most.",
            entered=entered,
        )  # fmt: skip
    try:
        endpoint, secret = await webhook_endpoints.create(
            store, settings, console.scope, url=url, events=events or None, description=description
        )
    except RecoveryError as e:
        return await _webhooks_page(
            request, console, store, e.status, error=e.message, entered=entered
        )
    return await _webhooks_page(request, console, store, 201, secret=(endpoint.url, secret))


@router.post("/webhooks/{endpoint_id}/rotate")
async def rotate_webhook(
    endpoint_id: Annotated[str, PathParam(min_length=1, max_length=64)],
    request: Request,
    console: PostDep,
    store: StoreDep,
    settings: SettingsDep,
) -> Response:
    leaked = bool((await request.form()).get("leaked"))
    endpoint, secret = await webhook_endpoints.rotate(
        store,
        settings,
        console.scope,
        endpoint_id,
        timedelta(0) if leaked else webhook_endpoints.PREVIOUS_SECRET_SIGNS_FOR,
    )
    return await _webhooks_page(request, console, store, secret=(endpoint.url, secret))


@router.post("/webhooks/{endpoint_id}/delete")
async def delete_webhook(
    endpoint_id: Annotated[str, PathParam(min_length=1, max_length=64)],
    console: PostDep,
    store: StoreDep,
) -> Response:
    await webhook_endpoints.delete(store, console.scope, endpoint_id)
    await console.flash(store, "ok", "Endpoint deleted: nothing more is delivered to it.")
    return redirect("/console/webhooks")
