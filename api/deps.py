"""Dependencies shared by the routes: created once in the app's lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from temporalio.client import Client

from recovery.auth import Principal, authenticate
from recovery.settings import Settings
from recovery.store import Store


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_client(request: Request) -> Client:
    return request.app.state.temporal


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


StoreDep = Annotated[Store, Depends(get_store)]
ClientDep = Annotated[Client, Depends(get_client)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def current_principal(
    store: StoreDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    return await authenticate(store, authorization)


PrincipalDep = Annotated[Principal, Depends(current_principal)]
