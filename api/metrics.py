"""Prometheus metrics: HTTP traffic, ingest outcomes, and business totals read from Postgres
at scrape time (so every API replica reports the same truth).

They are every merchant's totals, so they are never served on the public API port: the
listener on `METRICS_ADDRESS` (`MetricsServer`, a thread of prometheus_client's) serves them,
reading the totals through the API's event loop and pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recovery.store import MetricsSnapshot, Store

log = logging.getLogger("recovery.api.http")
SNAPSHOT_TIMEOUT_SECONDS = 5.0


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
        self._store: Store | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.registry.register(self)

    def read_totals_from(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        """Scrapes (in the listener's thread) read the business totals from `store` on `loop`."""
        self._store, self._loop = store, loop

    def _snapshot(self) -> MetricsSnapshot | None:
        if self._store is None or self._loop is None:
            return None
        future = asyncio.run_coroutine_threadsafe(self._store.metrics_snapshot(), self._loop)
        try:
            return future.result(timeout=SNAPSHOT_TIMEOUT_SECONDS)
        except Exception:  # Postgres away: still serve the in-process metrics
            future.cancel()
            log.warning("metrics: business totals unavailable")
            return None

    def collect(self) -> Iterator[Metric]:  # prometheus_client collector protocol
        snap = self._snapshot()
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
        payments = GaugeMetricFamily(
            "recovery_payments_received",
            "Payments customers made, by what became of them (recovered, paid_after_end:"
            " an ended recovery was paid after all, duplicate: refunded) and refund status",
            labels=["disposition", "refund_status"],
        )
        for (disposition, refund), n in sorted(snap.payments.items()):
            payments.add_metric([disposition, refund], n)
        yield payments
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


class RequestMetrics:
    """Counts, times and logs every HTTP request by its route template (never the raw path:
    paths may carry tokens). Pure ASGI: it only watches the response's start go by."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # unless a response starts: an exception becomes ServerErrorMiddleware's 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            elapsed = time.perf_counter() - start
            method = scope["method"]
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(method, route, status).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            log.info(
                "%s %s %s",
                method,
                route,
                status,
                extra={"status": status, "duration_ms": round(elapsed * 1000, 1)},
            )


class MetricsServer:
    """The metrics listener on `host:port` (its own thread), apart from the API's port."""

    def __init__(self, metrics: Metrics, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._httpd: WSGIServer
        self._httpd, _ = start_http_server(int(port), host or "127.0.0.1", metrics.registry)
        self.port = int(self._httpd.server_address[1])
        log.info("metrics on http://%s:%s/metrics", host, self.port)

    async def stop(self) -> None:
        # a scrape in flight may be waiting on the event loop: do not block it
        await asyncio.to_thread(self._httpd.shutdown)
        self._httpd.server_close()
