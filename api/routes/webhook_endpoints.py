"""A merchant's outgoing webhook endpoints (Standard Webhooks) and their delivery log.

Any key manages its own merchant's endpoints; an admin key any merchant's (`?merchant_id=`).
An endpoint of another merchant is a 404, like anything else of theirs. Creating, deleting,
rotating and redelivering are recorded in the audit log.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from api.deps import Scope, ScopeDep, SettingsDep, StoreDep
from recovery import webhook_urls
from recovery.merchant_events import EventType
from recovery.settings import Settings
from recovery.store import Store, WebhookEndpointRecord, new_id
from recovery.webhook_signing import SecretSealer, new_secret

router = APIRouter(prefix="/v1/webhook_endpoints", tags=["merchant webhooks"])
deliveries_router = APIRouter(prefix="/v1/webhook_deliveries", tags=["merchant webhooks"])

PREVIOUS_SECRET_SIGNS_FOR = timedelta(hours=24)
EndpointId = Annotated[str, Path(min_length=1, max_length=64)]
ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, StringConstraints(min_length=1, max_length=webhook_urls.MAX_URL_LENGTH)]
    events: Annotated[list[EventType], Field(min_length=1, max_length=50)] | None = None
    """the event types it receives; leave it out for every type (new ones included)"""
    description: Annotated[str, StringConstraints(max_length=500)] | None = None

    @field_validator("events")
    @classmethod
    def _once_each(cls, v: list[EventType] | None) -> list[EventType] | None:
        return list(dict.fromkeys(v)) if v is not None else None


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expire_previous_in_seconds: Annotated[
        int, Field(ge=0, le=int(PREVIOUS_SECRET_SIGNS_FOR.total_seconds()))
    ] = int(PREVIOUS_SECRET_SIGNS_FOR.total_seconds())
    """how long the secret it replaces keeps signing too (default 24 h; 0 if it leaked)"""


class RedeliverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: ObjectId


class EndpointOut(BaseModel):
    id: str
    url: str
    events: list[str] | None
    description: str | None
    created_at: datetime
    rotated_at: datetime | None
    previous_secret_expires_at: datetime | None
    """while set, deliveries are signed with the previous secret too"""


class EndpointWithSecret(EndpointOut):
    secret: str
    """shown once: `whsec_` and the base64 of the HMAC key"""


class EndpointList(BaseModel):
    data: list[EndpointOut]


class EndpointDeleted(BaseModel):
    id: str
    deleted: bool = True


class RedeliveryQueued(BaseModel):
    endpoint_id: str
    event_id: str
    workflow_id: str


class DeliveryOut(BaseModel):
    id: str
    endpoint_id: str
    event_id: str
    type: str
    attempt: int
    manual: bool
    status_code: int | None
    attempted_at: datetime
    next_retry_at: datetime | None
    error: str | None
    duration_ms: int | None


class DeliveryList(BaseModel):
    data: list[DeliveryOut]
    next_cursor: str | None


def _out(e: WebhookEndpointRecord) -> EndpointOut:
    return EndpointOut(
        id=e.id,
        url=e.url,
        events=e.events,
        description=e.description,
        created_at=e.created_at,
        rotated_at=e.rotated_at,
        previous_secret_expires_at=e.previous_expires_at,
    )


def _with_secret(e: WebhookEndpointRecord, secret: str) -> EndpointWithSecret:
    return EndpointWithSecret(**_out(e).model_dump(), secret=secret)


async def _audit(store: Store, scope: Scope, action: str, reason: str) -> None:
    await store.audit(
        merchant_id=scope.merchant_id,
        actor_key_id=scope.principal.key_id,
        actor_role=scope.principal.role,
        action=action,
        payment_ref=None,
        recovery_id=None,
        reason=reason,
        result="accepted",
    )


def _sealer(settings: Settings) -> SecretSealer:
    return SecretSealer(settings.credentials_keys())


@router.post("", response_model=EndpointWithSecret, status_code=201)
async def create_endpoint(
    body: EndpointIn, scope: ScopeDep, store: StoreDep, settings: SettingsDep
) -> EndpointWithSecret:
    """A new endpoint and its signing secret, shown only in this answer. Outside
    development the URL must be https and resolve to public addresses only (422 `url`)."""
    endpoint, secret = await create(
        store,
        settings,
        scope,
        url=body.url,
        events=[e.value for e in body.events] if body.events is not None else None,
        description=body.description,
    )
    return _with_secret(endpoint, secret)


async def create(
    store: Store,
    settings: Settings,
    scope: Scope,
    *,
    url: str,
    events: list[str] | None,
    description: str | None,
) -> tuple[WebhookEndpointRecord, str]:
    """Create an endpoint (the URL checked), audited; the endpoint and its secret (shown
    once). Shared with the console."""
    await webhook_urls.check(url, development=settings.environment == "development")
    endpoint_id = new_id("we")
    secret = new_secret()
    endpoint = await store.create_webhook_endpoint(
        endpoint_id=endpoint_id,
        merchant_id=scope.merchant_id,
        url=url,
        description=description,
        events=events,
        secret=_sealer(settings).seal(scope.merchant_id, endpoint_id, secret),
    )
    await _audit(store, scope, "webhook_endpoint.create", endpoint_id)
    return endpoint, secret


@router.get("", response_model=EndpointList)
async def list_endpoints(scope: ScopeDep, store: StoreDep) -> EndpointList:
    """The merchant's endpoints (never their secrets)."""
    return EndpointList(
        data=[_out(e) for e in await store.list_webhook_endpoints(scope.merchant_id)]
    )


@router.delete("/{endpoint_id}", response_model=EndpointDeleted)
async def delete_endpoint(
    endpoint_id: EndpointId, scope: ScopeDep, store: StoreDep
) -> EndpointDeleted:
    """Nothing more is delivered to it, retries in flight included (each try checks)."""
    await delete(store, scope, endpoint_id)
    return EndpointDeleted(id=endpoint_id)


async def delete(store: Store, scope: Scope, endpoint_id: str) -> None:
    """Delete an endpoint (404 unknown), audited. Shared with the console."""
    await store.delete_webhook_endpoint(scope.merchant_id, endpoint_id)
    await _audit(store, scope, "webhook_endpoint.delete", endpoint_id)


@router.post("/{endpoint_id}/rotate_secret", response_model=EndpointWithSecret)
async def rotate_secret(
    endpoint_id: EndpointId,
    scope: ScopeDep,
    store: StoreDep,
    settings: SettingsDep,
    body: RotateIn | None = None,
) -> EndpointWithSecret:
    """A new signing secret, shown only in this answer. The one it replaces keeps signing
    alongside it for 24 h (both signatures in `webhook-signature`), or as long as
    `expire_previous_in_seconds` says."""
    body = body or RotateIn()
    endpoint, secret = await rotate(
        store, settings, scope, endpoint_id, timedelta(seconds=body.expire_previous_in_seconds)
    )
    return _with_secret(endpoint, secret)


async def rotate(
    store: Store, settings: Settings, scope: Scope, endpoint_id: str, previous_signs_for: timedelta
) -> tuple[WebhookEndpointRecord, str]:
    """A new signing secret for the endpoint, audited; the endpoint and the secret (shown
    once). Shared with the console."""
    secret = new_secret()
    endpoint = await store.rotate_webhook_secret(
        scope.merchant_id,
        endpoint_id,
        _sealer(settings).seal(scope.merchant_id, endpoint_id, secret),
        previous_signs_for,
    )
    seconds = int(previous_signs_for.total_seconds())
    await _audit(
        store,
        scope,
        "webhook_endpoint.rotate_secret",
        f"{endpoint_id}; previous secret signs for {seconds} s",
    )
    return endpoint, secret


@router.post("/{endpoint_id}/redeliver", response_model=RedeliveryQueued, status_code=202)
async def redeliver(
    endpoint_id: EndpointId, body: RedeliverIn, scope: ScopeDep, store: StoreDep
) -> RedeliveryQueued:
    """Deliver one event to the endpoint again (after an outage, or for one it was not
    subscribed to): a new delivery with the same `webhook-id`, retried like the first."""
    workflow_id = await store.queue_webhook_redelivery(
        scope.merchant_id, endpoint_id, body.event_id
    )
    await _audit(store, scope, "webhook_endpoint.redeliver", f"{endpoint_id} {body.event_id}")
    return RedeliveryQueued(
        endpoint_id=endpoint_id, event_id=body.event_id, workflow_id=workflow_id
    )


@deliveries_router.get("", response_model=DeliveryList)
async def list_deliveries(
    scope: ScopeDep,
    store: StoreDep,
    endpoint_id: Annotated[str | None, Query(max_length=64)] = None,
    event_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> DeliveryList:
    """Every delivery try of the merchant's webhooks, newest first."""
    items, next_cursor = await store.list_webhook_deliveries(
        scope.merchant_id, endpoint_id=endpoint_id, event_id=event_id, limit=limit, cursor=cursor
    )
    return DeliveryList(
        data=[DeliveryOut.model_validate(d, from_attributes=True) for d in items],
        next_cursor=next_cursor,
    )
