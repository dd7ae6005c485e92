"""Prometheus metrics at `/metrics`: HTTP traffic, ingest outcomes, and business totals
read from Postgres at scrape time (so every API replica reports the same truth)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from api.deps import StoreDep
from recovery.store import MetricsSnapshot, Store

log = logging.getLogger("recovery.api.http")
router = APIRouter(tags=["health"])


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "recovery_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "recovery_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
        )
        self.ingested = Counter(
            "recovery_events_ingested",
            "payment_failed events by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self._snapshot: MetricsSnapshot | None = None
        self.registry.register(self)

    async def refresh(self, store: Store) -> None:
        self._snapshot = await store.metrics_snapshot()

    def collect(self):  # prometheus_client collector protocol
        snap = self._snapshot
        if snap is None:
            return
        by_status = GaugeMetricFamily(
            "recovery_recoveries", "Recoveries by status (all time)", labels=["status"]
        )
        for status, n in sorted(snap.by_status.items()):
            by_status.add_metric([status], n)
        yield by_status
        amounts = GaugeMetricFamily(
            "recovery_recovered_amount_minor",
            "Amount recovered, in minor units",
            labels=["currency"],
        )
        for currency, total in sorted(snap.recovered_amounts.items()):
            amounts.add_metric([currency], total)
        yield amounts
        yield GaugeMetricFamily(
            "recovery_outbox_pending",
            "Events not yet handed to their workflow",
            value=snap.outbox_pending,
        )
        yield GaugeMetricFamily(
            "recovery_outbox_lag_seconds",
            "Age of the oldest event not yet handed over",
            value=snap.outbox_lag_seconds,
        )


def install_request_metrics(app: FastAPI, metrics: Metrics) -> None:
    @app.middleware("http")
    async def _observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(request.scope.get("route"), "path", "unmatched")
            metrics.requests.labels(request.method, route, str(status)).inc()
            metrics.latency.labels(request.method, route).observe(elapsed)
            # the route template, never the raw path: paths may carry tokens
            log.info(
                "%s %s %s",
                request.method,
                route,
                status,
                extra={"status": status, "duration_ms": round(elapsed * 1000, 1)},
            )


@router.get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request, store: StoreDep) -> Response:
    metrics: Metrics = request.app.state.metrics
    try:
        await metrics.refresh(store)
    except Exception:  # Postgres away: still serve the in-process metrics
        log.warning("metrics: business totals unavailable")
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
