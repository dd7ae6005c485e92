"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ClientDep, StoreDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


@router.get("/readyz")
async def readyz(store: StoreDep, client: ClientDep) -> JSONResponse:
    postgres = temporal = False
    with contextlib.suppress(Exception):
        await asyncio.wait_for(store.ping(), timeout=2)
        postgres = True
    with contextlib.suppress(Exception):
        temporal = await asyncio.wait_for(client.service_client.check_health(), timeout=2)
    ok = postgres and temporal
    return JSONResponse(
        {"ok": ok, "postgres": postgres, "temporal": bool(temporal)},
        status_code=200 if ok else 503,
    )
