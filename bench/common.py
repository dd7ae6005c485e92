"""What every benchmark shares: sizes, the run context, merchants, bodies, waiting."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench import load
from bench.stack import Stack
from bench.stats import summary
from recovery.auth import generate_key, register_key


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does. `quick` fits the whole run in under two minutes."""

    name: str
    run_order: tuple[str, ...]
    # ingest: (concurrency, max requests, paced rate per second or None); seconds per level
    ingest_levels: tuple[tuple[int, int, float | None], ...]
    ingest_seconds: float
    ingest_wait_for_worker: bool  # let the worker catch up between levels
    baseline_levels: tuple[tuple[int, int], ...]
    baseline_seconds: float
    timers: tuple[int, ...]
    timer_jitter: float | None  # None: the policy's default (0.2)
    scale: tuple[int, ...]
    scale_chunk: int  # recoveries posted before waiting for the worker to catch up
    scale_budget_seconds: float  # to create (and schedule) all of the scale recoveries
    throughput: int
    cancels: int  # per concurrency level (1 and 8)
    classify_seconds: float
    classify_levels: tuple[tuple[int, int], ...]
    reads: int  # API reads per case in the scale benchmark
    read_seconds: float
    history_sample: int  # workflows whose history the timer benchmark reads
    api_seconds: float  # wrk's time per case of the API benchmark, bare app and ours each
    analytics_recoveries: int = 100_000  # rows the analytics summary reads over
    analytics_requests: int = 200  # summary requests per case
    notify_rate: float = 20.0  # hard declines posted per second (each e-mails its customer)
    notify_recoveries: int = 100

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            name="quick",
            # ingest last: the recoveries it creates keep the worker busy for a while
            run_order=(
                "api",
                "classifier",
                "timers",
                "throughput",
                "support",
                "scale",
                "ingest",
                "notify",
                "analytics",
            ),
            ingest_levels=((8, 40, 20.0), (1, 80, None), (8, 150, None), (32, 200, None)),
            ingest_seconds=2,
            ingest_wait_for_worker=False,
            baseline_levels=((1, 150), (8, 250), (32, 300)),
            baseline_seconds=2,
            timers=(50,),
            timer_jitter=0.0,
            scale=(100,),
            scale_chunk=100,
            scale_budget_seconds=40,
            throughput=60,
            cancels=10,
            classify_seconds=1,
            classify_levels=((1, 200), (16, 500)),
            reads=100,
            read_seconds=2,
            history_sample=50,
            api_seconds=5,
        )

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            name="full",
            run_order=(
                "api",
                "classifier",
                "ingest",
                "timers",
                "throughput",
                "support",
                "scale",
                "notify",
                "analytics",
            ),
            ingest_levels=((8, 600, 20.0), (1, 1000, None), (8, 2000, None), (32, 3000, None)),
            ingest_seconds=30,
            ingest_wait_for_worker=True,
            baseline_levels=((1, 2000), (8, 4000), (32, 4000)),
            baseline_seconds=20,
            timers=(10000,),
            timer_jitter=None,
            scale=(10000, 100000),
            scale_chunk=2000,
            scale_budget_seconds=2400,
            throughput=1000,
            cancels=200,
            classify_seconds=5,
            classify_levels=((1, 3000), (16, 10000)),
            reads=1000,
            read_seconds=20,
            history_sample=200,
            api_seconds=10,
            analytics_requests=1000,
            notify_rate=100.0,
            notify_recoveries=2000,
        )


@dataclass
class Ctx:
    stack: Stack
    sizes: Sizes
    findings: list[str] = field(default_factory=list)
    schedule_rate: float | None = None  # new recoveries/s the worker schedules, once measured
    py_spy: str | None = None  # a py-spy binary: the API benchmark profiles our app with it

    @property
    def pool(self) -> Any:
        assert self.stack.store is not None
        return self.stack.store.pool

    async def merchant(self, name: str, policy: dict[str, Any] | None = None) -> tuple[str, str]:
        """A fresh merchant with a `support` key (and a retry policy): (merchant id, key)."""
        store = self.stack.store
        assert store is not None
        merchant_id = f"mer_{name}_{uuid.uuid4().hex[:6]}"
        await store.ensure_merchant(merchant_id, f"bench {name}")
        key = generate_key("test")
        await register_key(store, merchant_id, "support", key)
        if policy is not None:
            async with self.http(key, 1) as http:
                r = await http.put("/v1/policy", json=policy)
                if r.status_code != 200:
                    raise RuntimeError(f"PUT /v1/policy answered {r.status_code}: {r.text}")
        return merchant_id, key

    def http(self, key: str, concurrency: int, timeout: float = 30.0) -> httpx.AsyncClient:
        return load.client(self.stack.api_url, key, concurrency, timeout)

    def cpu(self) -> CpuWindow:
        return CpuWindow(self.stack)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0)


class CpuWindow:
    """CPU used by each piece between its creation and `done()`, in % of one core;
    `other` is what the rest of the machine used meanwhile (other jobs on a shared box)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.t0 = time.perf_counter()
        self.c0 = stack.cpu_seconds()
        self.m0 = machine_busy_seconds()

    def done(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        if wall <= 0:
            return {}
        c1 = self.stack.cpu_seconds()
        out = {k: round(100 * (c1[k] - self.c0.get(k, 0.0)) / wall) for k in c1}
        machine = 100 * (machine_busy_seconds() - self.m0) / wall
        out["other"] = max(0, round(machine - sum(out.values())))
        return out


def failure_body(
    ref: str,
    *,
    pm: str,
    code: str | None = "card_declined",
    decline_code: str | None = "insufficient_funds",
    message: str | None = None,
) -> dict[str, Any]:
    """A valid ingest body for the simulator PSP (as `tests/helpers.failure_body`)."""
    return {
        "event_id": f"evt_{uuid.uuid4().hex[:16]}",
        "payment_ref": ref,
        "psp": "simulator",
        "amount": 4999,
        "currency": "usd",
        "customer": {"id": "cus_bench", "email": "bench@example.com"},
        "payment_method": {"type": "card", "id": pm},
        "failure": {"code": code, "decline_code": decline_code, "message": message},
        "occurred_at": datetime.now(UTC).isoformat(),
        "metadata": {"bench": True},
    }


def post_failure(
    http: httpx.AsyncClient, body_of: Callable[[int], dict[str, Any]]
) -> Callable[[int], Awaitable[httpx.Response]]:
    async def call(i: int) -> httpx.Response:
        body = body_of(i)
        return await http.post(
            "/v1/events/payment_failed",
            json=body,
            headers={"Idempotency-Key": f"idem-{body['event_id']}"},
        )

    return call


async def ingest(
    ctx: Ctx,
    key: str,
    count: int,
    body_of: Callable[[int], dict[str, Any]],
    *,
    concurrency: int = 32,
    seconds: float = 600,
) -> load.LoadResult:
    """Post `count` failures through the API (bounded by `seconds`)."""
    async with ctx.http(key, concurrency) as http:
        return await load.run_load(
            load.http_request(post_failure(http, body_of), (202,)),
            count=count,
            concurrency=concurrency,
            seconds=seconds,
        )


async def wait_for(
    ctx: Ctx, probe: Callable[[], Awaitable[bool]], within: float, interval: float = 0.5
) -> bool:
    """Poll `probe` until true (True) or `within` seconds pass (False)."""
    deadline = time.monotonic() + within
    while True:
        ctx.stack.check_alive()
        if await probe():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)


async def temporal_actions(ctx: Ctx, within: float = 30.0) -> Counter[str]:
    """The Temporal server's `action` counter in our namespace, by action type: what Temporal
    Cloud bills (server 1.22.3+, local activities metered as Cloud does). The server exports
    its counters a little after the fact: read until two readings 2 s apart agree (or
    `within` seconds pass)."""
    deadline = time.monotonic() + within
    last = await _read_actions(ctx)
    while time.monotonic() < deadline:
        await asyncio.sleep(2)
        now = await _read_actions(ctx)
        if now == last:
            break
        last = now
    return last


async def _read_actions(ctx: Ctx) -> Counter[str]:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(ctx.stack.temporal_metrics_url)).text
    out = Counter[str]()
    namespace = ctx.stack.settings.temporal_namespace
    for family in text_string_to_metric_families(text):
        if family.name != "action":  # its samples are `action_total`
            continue
        for sample in family.samples:
            if sample.labels.get("namespace") == namespace:
                kind = sample.labels["action_type"].removeprefix("command_").removeprefix("grpc_")
                out[kind] += int(sample.value)
    return out


def per_recovery(before: Counter[str], after: Counter[str], recoveries: int) -> dict[str, Any]:
    """Actions per recovery between two readings of `temporal_actions`, by type."""
    spent = after - before
    if not recoveries:
        return {}
    return {
        "total": round(sum(spent.values()) / recoveries, 2),
        "by_type": {k: round(v / recoveries, 2) for k, v in spent.most_common()},
    }


async def settle(ctx: Ctx, within: float) -> float | None:
    """Wait until the work an earlier benchmark left behind is done: every event handed to
    Temporal and every open recovery's workflow past its first step (an ingest of thousands
    keeps the worker busy for minutes after the last answer, and would weigh on whatever runs
    next). Seconds it took; None if `within` passed first."""
    t0 = time.monotonic()

    async def idle() -> bool:
        return not await ctx.pool.fetchval(
            "SELECT (SELECT count(*) FROM outbox WHERE delivered_at IS NULL)"
            " + (SELECT count(*) FROM recoveries WHERE ended_at IS NULL AND status = 'active'"
            "    AND next_attempt_at IS NULL AND attempt_count = 0)"
        )

    return round(time.monotonic() - t0, 1) if await wait_for(ctx, idle, within, 1.0) else None


async def count_scheduled(ctx: Ctx, merchant_id: str) -> int:
    """Recoveries of the merchant whose workflow has got as far as scheduling (or past)."""
    return await ctx.pool.fetchval(
        "SELECT count(*) FROM recoveries WHERE merchant_id = $1"
        " AND (next_attempt_at IS NOT NULL OR attempt_count > 0 OR ended_at IS NOT NULL"
        "      OR status <> 'active')",
        merchant_id,
    )


async def wait_scheduled(ctx: Ctx, merchant_id: str, n: int, within: float) -> float | None:
    """Seconds until `n` recoveries of the merchant are scheduled; None if `within` passed."""
    t0 = time.monotonic()

    async def probe() -> bool:
        return await count_scheduled(ctx, merchant_id) >= n

    return round(time.monotonic() - t0, 2) if await wait_for(ctx, probe, within) else None


async def outbox_lag(ctx: Ctx, merchant_id: str, ref_prefix: str) -> dict[str, Any]:
    """Per event: `delivered_at - created_at` of its outbox row (commit to Temporal accepted)."""
    rows = await ctx.pool.fetch(
        "SELECT extract(epoch FROM delivered_at - created_at) AS lag FROM outbox"
        " WHERE workflow_id LIKE $1 AND delivered_at IS NOT NULL",
        f"recovery/{merchant_id}/{ref_prefix}%",
    )
    pending = await ctx.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE workflow_id LIKE $1 AND delivered_at IS NULL",
        f"recovery/{merchant_id}/{ref_prefix}%",
    )
    return {
        "delivered": len(rows),
        "pending": pending,
        "ms": summary((float(r["lag"]) for r in rows), scale=1000),
    }
