"""The FastAPI application: `uvicorn --factory api.app:create_app`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.docs import install_docs
from api.errors import install_error_handlers
from api.guards import RejectNul
from api.metrics import Metrics, MetricsServer, RequestMetrics
from api.ratelimit import FailedAuthLimiter
from api.relay import OutboxRelay
from api.routes import (
    analytics,
    audit,
    classify,
    console,
    console_recoveries,
    console_settings,
    events,
    health,
    notifications,
    pay,
    policy,
    recoveries,
    webhook_endpoints,
    webhooks,
)
from api.server import uvicorn_config
from recovery.auth import VerifiedKeys
from recovery.dbsetup import open_store
from recovery.logs import mask_secrets_in, setup_logging
from recovery.psp.dispatcher import PSPDispatcher
from recovery.settings import Settings, get_settings, settings_or_exit
from recovery.temporal import connect_client


def create_app(settings: Settings | None = None, *, run_relay: bool = True) -> FastAPI:
    settings = settings or get_settings()
    mask_secrets_in(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await open_store(settings.database_url, max_size=settings.database_pool_max)
        # Lazy: the API starts, and keeps taking events, while Temporal is unreachable.
        client = await connect_client(settings, lazy=True)
        relay = OutboxRelay(
            store,
            client,
            dsn=settings.database_url,
            task_queue=settings.temporal_task_queue,
            sweep_seconds=settings.outbox_sweep_seconds,
            batch_size=settings.outbox_batch_size,
            rpc_timeout=timedelta(seconds=settings.temporal_rpc_timeout_seconds),
        )
        app.state.settings = settings
        app.state.store = store
        app.state.temporal = client
        app.state.relay = relay
        app.state.psps = PSPDispatcher(store, settings)
        app.state.auth_limiter = FailedAuthLimiter(
            settings.auth_failure_burst, settings.auth_failure_refill_per_second
        )
        app.state.verified_keys = VerifiedKeys(settings.api_key_cache_seconds)
        metrics: Metrics = app.state.metrics
        metrics.read_totals_from(store, asyncio.get_running_loop())
        metrics_server = (
            MetricsServer(metrics, settings.metrics_address) if settings.metrics_address else None
        )
        app.state.metrics_server = metrics_server
        if run_relay:
            relay.start()
        try:
            yield
        finally:
            if metrics_server is not None:
                await metrics_server.stop()
            await relay.stop()
            await store.close()

    app = FastAPI(
        title="Payment recovery",
        version="0.1.0",
        description="Recovers failed payments with durable Temporal workflows.",
        lifespan=lifespan,
        docs_url=None,  # install_docs: served without a CDN
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(RejectNul, body_timeout_seconds=settings.request_body_timeout_seconds)
    app.state.metrics = Metrics()
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)  # outermost: sees them all
    # A request is matched against the routes in the order they were added, one by one:
    # the busiest go first (healthz, ingest, classify, recoveries), the docs and files last.
    for module in (
        health,
        events,
        classify,
        recoveries,
        policy,
        audit,
        notifications,
        webhooks,
        webhook_endpoints,
        pay,
        analytics,
        console,
        console_recoveries,
        console_settings,
    ):
        app.include_router(module.router)
    app.include_router(webhook_endpoints.deliveries_router)
    install_docs(app)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    return app


def main() -> None:
    """`python -m api`: the API with JSON logs on API_HOST:API_PORT (127.0.0.1:8000)."""
    import uvicorn

    settings = settings_or_exit()
    setup_logging(settings.log_level, settings.log_format)
    uvicorn.Server(uvicorn_config(create_app(settings), settings.api_host, settings.api_port)).run()
