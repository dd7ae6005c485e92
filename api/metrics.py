"""Prometheus metrics: HTTP traffic, ingest outcomes, and business totals read from Postgres
at scrape time (so every API replica reports the same truth).

They are every merchant's totals, so they are never served on the public API port: the
listener on `METRICS_ADDRESS` (`MetricsServer`, a thread of prometheus_client's) serves them,
reading the totals through the API's event loop and pool.

The analytics figures per merchant (`recovery_merchant_*`) have a `merchant` label bounded
by `MERCHANT_LABELS`: the merchants with the most recoveries open now or started in the last
24 hours are named, every other merchant is summed under `merchant="(other)"`. Their other
labels are bounded sets too (status, category, currency, attempt number up to the policy's
15, disposition and refund status, histogram bounds), so a scrape has at most a few hundred
series per named merchant, whatever the number of merchants or recoveries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recovery.store import MerchantFigures, MetricsSnapshot, Store
from recovery.store.analytics import RECOVERY_SECONDS_BUCKETS

log = logging.getLogger("recovery.api.http")
SNAPSHOT_TIMEOUT_SECONDS = 5.0
MERCHANT_LABELS = 20
"""Merchants named in the `recovery_merchant_*` metrics; the rest are `merchant="(other)"`."""
MERCHANT_WINDOW = timedelta(hours=24)
"""The window of the `recovery_merchant_*_24h` figures, ending at the scrape."""


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

    def _snapshot(self) -> tuple[MetricsSnapshot, MerchantFigures] | None:
        if self._store is None or self._loop is None:
            return None
        future = asyncio.run_coroutine_threadsafe(_read(self._store), self._loop)
        try:
            return future.result(timeout=SNAPSHOT_TIMEOUT_SECONDS)
        except Exception:  # Postgres away: still serve the in-process metrics
            future.cancel()
            log.warning("metrics: business totals unavailable")
            return None

    def collect(self) -> Iterator[Metric]:  # prometheus_client collector protocol
        read = self._snapshot()
        if read is None:
            return
        snap, per_merchant = read
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
        yield from merchant_metrics(per_merchant)


async def _read(store: Store) -> tuple[MetricsSnapshot, MerchantFigures]:
    since = datetime.now(UTC) - MERCHANT_WINDOW
    return await store.metrics_snapshot(), await store.merchant_figures(since, MERCHANT_LABELS)


def merchant_metrics(f: MerchantFigures) -> Iterator[Metric]:
    """The analytics figures per merchant label (see the module docstring); the `_24h` ones
    count what happened since `f.since` (runs by start, end or payment received)."""

    def gauge(
        name: str, doc: str, labels: list[str], values: Iterable[tuple[tuple[str, ...], int]]
    ) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=["merchant", *labels])
        for key, value in sorted(values):
            family.add_metric(list(key), value)
        return family

    yield gauge(
        "recovery_merchant_recoveries_open",
        "Recoveries open now",
        [],
        (((merchant,), n) for merchant, n in f.open.items()),
    )
    yield gauge(
        "recovery_merchant_open_amount_minor",
        "Amount of the recoveries open now, in minor units",
        ["currency"],
        f.open_amount.items(),
    )
    yield gauge(
        "recovery_merchant_recoveries_started_24h",
        "Recoveries started in the last 24 hours, by failure category",
        ["category"],
        f.started.items(),
    )
    yield gauge(
        "recovery_merchant_recoveries_ended_24h",
        "Recoveries ended in the last 24 hours, by how (recovered, exhausted, cancelled)",
        ["status"],
        f.ended.items(),
    )
    yield gauge(
        "recovery_merchant_recovered_amount_minor_24h",
        "Amount of the recoveries recovered in the last 24 hours, in minor units",
        ["currency"],
        f.recovered_amount.items(),
    )
    yield gauge(
        "recovery_merchant_recovered_by_attempt_24h",
        "Recoveries recovered in the last 24 hours, by the number of our attempt that"
        " recovered them (0: the customer paid)",
        ["attempt"],
        (((merchant, str(attempt)), n) for (merchant, attempt), n in f.by_attempt.items()),
    )
    yield gauge(
        "recovery_merchant_payments_received_24h",
        "Payments received in the last 24 hours for an ended recovery (paid_after_end) or"
        " paid twice (duplicate, by refund status)",
        ["disposition", "refund_status"],
        f.payments.items(),
    )
    seconds = GaugeHistogramMetricFamily(
        "recovery_merchant_seconds_to_recover_24h",
        "Time from start to recovery of the recoveries recovered in the last 24 hours",
        labels=["merchant"],
    )
    bounds = [*(floatToGoString(b) for b in RECOVERY_SECONDS_BUCKETS), "+Inf"]
    for merchant, (cumulative, total) in sorted(f.seconds_to_recover.items()):
        seconds.add_metric([merchant], list(zip(bounds, cumulative, strict=True)), total)
    yield seconds


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
