"""Dependencies shared by the routes: created once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from temporalio.client import Client

from api.ratelimit import FailedAuthLimiter
from api.relay import OutboxRelay
from recovery.auth import Principal, authenticate
from recovery.errors import NotFound, RateLimited, Unauthorized
from recovery.psp.dispatcher import PSPDispatcher
from recovery.settings import Settings
from recovery.store import Store


# Dependencies are coroutines: FastAPI runs a plain `def` dependency in a worker thread, a
# hop that cost more than the whole of a request's own work.
async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_client(request: Request) -> Client:
    return request.app.state.temporal


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_psps(request: Request) -> PSPDispatcher:
    return request.app.state.psps


async def get_relay(request: Request) -> OutboxRelay:
    return request.app.state.relay


StoreDep = Annotated[Store, Depends(get_store)]
PSPsDep = Annotated[PSPDispatcher, Depends(get_psps)]
ClientDep = Annotated[Client, Depends(get_client)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RelayDep = Annotated[OutboxRelay, Depends(get_relay)]


async def current_principal(request: Request) -> Principal:
    """The key's principal. Failed authentications are counted per client address, and an
    address over its limit gets 429 for every key that fails; a valid key is never refused,
    so one client guessing behind a shared address (NAT, office) locks out nobody else.

    It reads the header and the app's state itself, with no dependencies of its own: each
    one FastAPI solves is a cost on every request."""
    state = request.app.state
    limiter: FailedAuthLimiter = state.auth_limiter
    client = request.client.host if request.client else "unknown"
    try:
        return await authenticate(
            state.store, request.headers.get("authorization"), state.verified_keys
        )
    except Unauthorized:
        if (wait := limiter.retry_after(client)) is not None:
            raise RateLimited("too many failed authentications; retry later", wait) from None
        limiter.failed(client)
        raise


PrincipalDep = Annotated[Principal, Depends(current_principal)]


@dataclass(frozen=True)
class Scope:
    """Whose data a request reads or acts on: the key's merchant; admins may name another."""

    principal: Principal
    merchant_id: str


async def merchant_scope(
    principal: PrincipalDep,
    merchant_id: Annotated[
        str | None, Query(max_length=64, description="Admin keys only: act for this merchant.")
    ] = None,
) -> Scope:
    if merchant_id is None or merchant_id == principal.merchant_id:
        return Scope(principal, principal.merchant_id)
    if principal.role != "admin":
        raise NotFound("no such merchant")
    return Scope(principal, merchant_id)


ScopeDep = Annotated[Scope, Depends(merchant_scope)]
