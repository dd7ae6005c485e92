"""The console's recoveries: the list (search, filters, cursor pages), one recovery's whole
story, and the actions on it (`POST /console/recoveries/{ref}/<action>`).

Actions call the same functions as the JSON API (`api/actions.py`): the role is checked
there (a merchant-role session's forged post is refused and audited like the API's), the
audit log gets the actor and the reason, and the workflow gets the signal.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, get_args

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from temporalio.client import Client

from api import actions
from api.console.story import story
from api.console.web import (
    Console,
    ConsoleDep,
    ConsoleRoute,
    PostDep,
    console_page,
    form_text,
    redirect,
)
from api.deps import ClientDep, RelayDep, SettingsDep, StoreDep
from api.relay import OutboxRelay
from recovery.errors import InvalidInput, NotFound, RecoveryError
from recovery.models import Category, PspName, RecoveryStatus
from recovery.periods import parse_instant
from recovery.settings import Settings
from recovery.store import Store

router = APIRouter(prefix="/console/recoveries", include_in_schema=False, route_class=ConsoleRoute)

RefPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")]
PAGE = 25
MAX_REASON = 500

DONE = {
    "cancel": "Cancelled: no attempt starts after this.",
    "expedite": "Expedited: the next attempt runs now.",
    "pause": "Paused: no attempt until it is resumed.",
    "resume": "Resumed.",
    "retry": "Retried: a new run with a fresh attempt budget has started.",
    "apply_policy": "The current retry policy now applies to this recovery.",
}


STATUSES = [s.value for s in RecoveryStatus]
CATEGORIES = [c.value for c in Category]
PSPS = list(get_args(PspName))


def _one_of(value: str, allowed: list[str], field: str) -> None:
    if value and value not in allowed:
        raise InvalidInput(f"{field} must be one of {', '.join(allowed)}", field=field)


def _day(text: str | None, field: str, plus: int = 0) -> datetime | None:
    if not text:
        return None
    return parse_instant(text, field) + timedelta(days=plus)


@router.get("")
async def list_recoveries(
    request: Request,
    console: ConsoleDep,
    store: StoreDep,
    q: Annotated[str, Query(max_length=254)] = "",
    status: Annotated[str, Query(max_length=40)] = "",
    category: Annotated[str, Query(max_length=40)] = "",
    psp: Annotated[str, Query(max_length=40)] = "",
    started_from: Annotated[str, Query(alias="from", max_length=10)] = "",
    started_to: Annotated[str, Query(alias="to", max_length=10)] = "",
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    """Newest first. `q`: a payment ref (or its beginning), a customer id or e-mail."""
    q = q.strip()
    _one_of(status, STATUSES, "status")
    _one_of(category, CATEGORIES, "category")
    _one_of(psp, PSPS, "psp")
    items, next_cursor = await store.search_recoveries(
        console.merchant_id,
        q=q or None,
        status=status or None,
        category=category or None,
        psp=psp or None,
        started_from=_day(started_from, "from"),
        started_to=_day(started_to, "to", plus=1),  # the "to" day included
        limit=PAGE,
        cursor=cursor,
    )
    filters = {
        "q": q,
        "status": status,
        "category": category,
        "psp": psp,
        "from": started_from,
        "to": started_to,
    }
    return await console_page(
        request,
        console,
        store,
        "console/recoveries.html",
        nav="recoveries",
        items=items,
        next_cursor=next_cursor,
        first_page=cursor is None,
        filters=filters,
        statuses=STATUSES,
        categories=CATEGORIES,
        psps=PSPS,
        now=datetime.now(UTC),
    )


@router.get("/{ref}")
async def recovery_page(
    ref: RefPath, request: Request, console: ConsoleDep, store: StoreDep, settings: SettingsDep
) -> Response:
    s = await story(store, settings, console.merchant_id, ref)
    return await console_page(
        request,
        console,
        store,
        "console/recovery.html",
        nav="recoveries",
        story=s,
        actions=s.actions(console.can("support")),
        now=datetime.now(UTC),
        max_reason=MAX_REASON,
    )


@router.post("/{ref}/{action}")
async def act(
    ref: RefPath,
    action: str,
    request: Request,
    console: PostDep,
    store: StoreDep,
    client: ClientDep,
    relay: RelayDep,
    settings: SettingsDep,
) -> Response:
    """One action on the recovery, then back to its page with what came of it."""
    page_url = f"/console/recoveries/{ref}"
    if action not in DONE and action != "link":
        raise NotFound(f"no action {action!r}")
    reason = await form_text(request, "reason")
    try:
        if len(reason) > MAX_REASON:
            raise InvalidInput(f"a reason may be at most {MAX_REASON} characters")
        if action == "cancel" and not reason and console.can("support"):
            raise InvalidInput("say why you cancel: a reason is required")
        message = await _run(action, ref, reason, console, store, client, relay, settings)
    except RecoveryError as e:
        if e.status in (401, 403, 404):
            raise  # refused outright: its own page
        await console.flash(store, "error", f"Not done: {e.message}.")
        return redirect(page_url)
    await console.flash(store, "link" if action == "link" else "ok", message)
    return redirect(page_url)


async def _run(
    action: str,
    ref: str,
    reason: str,
    console: Console,
    store: Store,
    client: Client,
    relay: OutboxRelay,
    settings: Settings,
) -> str:
    scope = console.scope
    match action:
        case "cancel":
            await actions.cancel(store, client, scope, ref, reason, relay=relay)
        case "expedite":
            await actions.expedite(store, client, scope, ref, reason or None, relay=relay)
        case "pause":
            await actions.pause(store, client, scope, ref, reason, relay=relay)
        case "resume":
            await actions.resume(store, client, scope, ref, reason or None, relay=relay)
        case "retry":
            await actions.retry(store, scope, ref, reason or None)
        case "apply_policy":
            await actions.apply_policy(store, client, scope, ref, reason or None, relay=relay)
        case "link":
            link = await actions.create_link(store, settings, scope, ref)
            return f"{link.url}\n{link.expires_at.astimezone(UTC):%Y-%m-%d %H:%M UTC}"
    return DONE[action]
