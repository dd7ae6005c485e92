"""The console's retry policy page: the merchant's current policy, and a form that publishes
a new version through the same validation as `PUT /v1/policy` (`PolicyUpdate`), with each
problem shown beside its field and the values entered kept."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from api.console.web import ConsoleDep, ConsoleRoute, PostDep, console_page, redirect
from api.deps import StoreDep
from recovery.card_networks import HIGHEST_PER_30_DAYS, HIGHEST_PER_DAY
from recovery.policy import PolicyUpdate, RetryPolicy

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
