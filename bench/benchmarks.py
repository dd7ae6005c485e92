"""The benchmarks. Each takes the run context and returns a JSON-ready dict."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus

from bench import load
from bench.analytics import bench_analytics
from bench.common import (
    Ctx,
    count_scheduled,
    failure_body,
    ingest,
    outbox_lag,
    per_recovery,
    post_failure,
    temporal_actions,
    wait_for,
    wait_scheduled,
)
from bench.notify import bench_notify
from bench.stats import summary
from recovery.classifier import classify
from recovery.models import ClassifyRequest, Failure, FailureEvent, PaymentMethod
from recovery.temporal import deliver_failure

NETWORK_BASE_COOLDOWN = 300  # seconds: `processing_error` is a network failure (5 min)
CELERY = (
    "The previous Celery design polled its queue every 60 s, so an attempt ran 0-60 s after "
    "its due time by construction (uniform: p50 ~30 s, p99 ~59.4 s, max 60 s), before any "
    "worker queueing."
)


# ---- 1. ingest ----------------------------------------------------------------------------


async def bench_ingest(ctx: Ctx) -> dict[str, Any]:
    sizes = ctx.sizes
    client = ctx.stack.client
    assert client is not None

    # Baseline: the Temporal client alone, signal-with-start as the relay does it, on a task
    # queue no worker polls (so the worker's CPU does not compete with the measurement).
    baseline = []
    task_queue = f"bench-baseline-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    for concurrency, count in sizes.baseline_levels:

        async def signal_with_start(i: int, c: int = concurrency) -> tuple[str, bool, str]:
            event = FailureEvent(
                event_id=f"evt_base_{c}_{i}",
                recovery_id=f"rec_base_{c}_{i}",
                merchant_id="mer_baseline",
                payment_ref=f"base{c}-{i}",
                psp="simulator",
                amount=4999,
                currency="usd",
                payment_method=PaymentMethod(id=f"pm_base_{i}"),
                failure=Failure(code="card_declined", decline_code="insufficient_funds"),
                occurred_at=now,
            )
            await deliver_failure(
                client, event, task_queue=task_queue, rpc_timeout=timedelta(seconds=10)
            )
            return "ok", True, ""

        cpu = ctx.cpu()
        r = await load.run_load(
            signal_with_start,
            count=count,
            concurrency=concurrency,
            seconds=sizes.baseline_seconds,
        )
        baseline.append({**r.as_dict(), "cpu_pct": cpu.done()})

    merchant_id, key = await ctx.merchant("ingest")
    levels = []
    accepted = 0
    for index, (concurrency, count, rate) in enumerate(sizes.ingest_levels):
        prefix = f"ing{index}-"

        def body(i: int, p: str = prefix) -> dict[str, Any]:
            return failure_body(f"{p}{i}", pm=f"pm_bench_{p}{i}")

        cpu = ctx.cpu()
        async with ctx.http(key, concurrency) as http:
            r = await load.run_load(
                load.http_request(post_failure(http, body), (202,)),
                count=count,
                concurrency=concurrency,
                seconds=sizes.ingest_seconds,
                rate=rate,
            )
        cpu_pct = cpu.done()
        accepted += r.ok
        t_end = time.monotonic()

        async def relayed(p: str = prefix) -> bool:
            return (await outbox_lag(ctx, merchant_id, p))["pending"] == 0

        drained = await wait_for(ctx, relayed, 120)
        relay_done = round(time.monotonic() - t_end, 2) if drained else None
        worker_done = None
        if sizes.ingest_wait_for_worker:
            # Let the worker finish this level before the next one starts.
            if await wait_scheduled(ctx, merchant_id, accepted, 1800) is not None:
                worker_done = round(time.monotonic() - t_end, 2)
                ctx.schedule_rate = r.ok / (r.elapsed + worker_done)
        levels.append(
            {
                **r.as_dict(),
                "paced_per_second": rate,
                "cpu_pct": cpu_pct,
                "outbox_lag": await outbox_lag(ctx, merchant_id, prefix),
                "relay_drained_after_s": relay_done,
                "worker_caught_up_after_s": worker_done,
            }
        )
        server_errors = sum(n for s, n in r.statuses.items() if s.startswith("5"))
        if server_errors or r.ok < r.sent:
            ctx.findings.append(
                f"ingest at concurrency {concurrency}: {r.sent - r.ok} of {r.sent} requests "
                f"failed ({dict(r.statuses)}); first errors: {r.errors[:3]}"
            )
    return {
        "body": "card_declined/insufficient_funds (funds, ~1 day cooldown), Idempotency-Key set",
        "baseline_task_queue": "a queue no worker polls (Temporal server cost only)",
        "baseline": baseline,
        "levels": levels,
    }


# ---- 2. timers ----------------------------------------------------------------------------


async def bench_timers(ctx: Ctx) -> dict[str, Any]:
    runs = [await _timers(ctx, n) for n in ctx.sizes.timers]
    return {"runs": runs, "comparison": CELERY}


async def _timers(ctx: Ctx, n: int) -> dict[str, Any]:
    client = ctx.stack.client
    assert client is not None
    # Fire ~30 s after scheduling (the policy's minimum multiplier 0.1 x the 5-min network
    # cooldown), or later when starting n recoveries takes longer, so that all n sleep at
    # once: the rate the worker starts recoveries at was measured by the ingest benchmark
    # (8/s, about what the quick run sees, when it was not).
    rate = ctx.schedule_rate or 8.0
    fill_estimate = n / rate
    target = max(30.0, 1.5 * fill_estimate + 20)
    multiplier = min(10.0, max(0.1, round(target / NETWORK_BASE_COOLDOWN, 3)))
    policy: dict[str, Any] = {"cooldown_multiplier": multiplier}
    jitter = 0.2  # the policy's default
    if ctx.sizes.timer_jitter is not None:
        jitter = policy["jitter"] = ctx.sizes.timer_jitter
    merchant_id, key = await ctx.merchant(f"timers{n}", policy)

    captured: dict[str, tuple[datetime, datetime, str]] = {}  # id: (due, scheduled, wf id)
    stop = asyncio.Event()

    async def capture() -> None:
        """Remember each recovery's due time as the workflow wrote it, before its attempt."""
        since = datetime(2000, 1, 1, tzinfo=UTC)
        while not stop.is_set():
            rows = await ctx.pool.fetch(
                "SELECT id, next_attempt_at, updated_at, workflow_id FROM recoveries"
                " WHERE merchant_id = $1 AND next_attempt_at IS NOT NULL AND attempt_count = 0"
                " AND updated_at >= $2",
                merchant_id,
                since,
            )
            for row in rows:
                captured.setdefault(
                    row["id"], (row["next_attempt_at"], row["updated_at"], row["workflow_id"])
                )
            if rows:  # only what changed lately next time (commits may land out of order)
                since = max(since, max(row["updated_at"] for row in rows) - timedelta(seconds=10))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    capturing = asyncio.create_task(capture())
    cpu = ctx.cpu()
    try:
        t0 = time.monotonic()
        r = await ingest(
            ctx,
            key,
            n,
            lambda i: failure_body(
                f"tmr-{i}", pm=f"pm_bench_tmr_{i}", code="processing_error", decline_code=None
            ),
            seconds=max(120.0, 4 * fill_estimate),
        )
        ingest_s = time.monotonic() - t0

        async def all_captured() -> bool:
            return len(captured) >= r.ok

        await wait_for(ctx, all_captured, max(60.0, 3 * fill_estimate))
    finally:
        stop.set()
        await capturing
    scheduled_s = time.monotonic() - t0
    last_due = max((due for due, _, _ in captured.values()), default=datetime.now(UTC))

    async def attempts_made() -> bool:
        made = await ctx.pool.fetchval(
            "SELECT count(*) FROM attempts a JOIN recoveries r ON r.id = a.recovery_id"
            " WHERE r.merchant_id = $1 AND a.number = 1",
            merchant_id,
        )
        return made >= len(captured)

    wait = (last_due - datetime.now(UTC)).total_seconds() + 180 + n / 4
    await wait_for(ctx, attempts_made, max(wait, 30.0), interval=1.0)
    cpu_pct = cpu.done()

    rows = await ctx.pool.fetch(
        "SELECT a.recovery_id, a.created_at, a.status FROM attempts a"
        " JOIN recoveries r ON r.id = a.recovery_id WHERE r.merchant_id = $1 AND a.number = 1",
        merchant_id,
    )
    late = []
    events: list[tuple[datetime, int]] = []
    for row in rows:
        if row["recovery_id"] in captured:
            due, scheduled_at, _ = captured[row["recovery_id"]]
            late.append((row["created_at"] - due).total_seconds())
            events += [(scheduled_at, 1), (row["created_at"], -1)]
    sleeping = peak = 0
    for _, delta in sorted(events):
        sleeping += delta
        peak = max(peak, sleeping)
    first_due = min((due for due, _, _ in captured.values()), default=None)
    last_scheduled = max((s for _, s, _ in captured.values()), default=None)

    # Server side: when Temporal fired each timer (TimerFired event) vs the due time.
    sample = random.sample(sorted(captured), min(ctx.sizes.history_sample, len(captured)))
    fired, history = await _timer_fired_lateness(
        ctx, [(captured[i][2], captured[i][0]) for i in sample]
    )
    return {
        "recoveries": n,
        "ingested": r.ok,
        "ingest_seconds": round(ingest_s, 1),
        "all_scheduled_after_s": round(scheduled_s, 1),
        "cooldown_multiplier": multiplier,
        "nominal_delay_s": round(NETWORK_BASE_COOLDOWN * multiplier, 1),
        "jitter": f"+-{100 * jitter:g}%",
        "schedule_rate_estimate": round(rate, 1),
        "peak_sleeping_at_once": peak,
        "all_sleeping_at_once": bool(first_due and last_scheduled and last_scheduled < first_due),
        "attempts_measured": len(late),
        "attempt_statuses": dict(Counter(row["status"] for row in rows)),
        "attempt_late_ms": summary(late, scale=1000),
        "timer_fired_late_ms": fired,
        "history_events_per_recovery": history,
        "cpu_pct": cpu_pct,
        "measures": (
            "attempt_late = attempts.created_at (the charge activity's first write) - the "
            "next_attempt_at the workflow saved when it scheduled the attempt; "
            "timer_fired_late = TimerFired event time in the workflow history - that same "
            "next_attempt_at (a sample)"
        ),
    }


async def _timer_fired_lateness(ctx: Ctx, sample: list[tuple[str, datetime]]) -> dict[str, Any]:
    client = ctx.stack.client
    assert client is not None
    gate = asyncio.Semaphore(8)

    lengths: list[float] = []

    async def one(workflow_id: str, due: datetime) -> float | None:
        async with gate:
            history = await client.get_workflow_handle(workflow_id).fetch_history()
        lengths.append(len(history.events))
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_TIMER_FIRED:
                at = event.event_time.ToDatetime(tzinfo=UTC)
                return (at - due).total_seconds()
        return None

    values = await asyncio.gather(*(one(w, d) for w, d in sample), return_exceptions=True)
    return (
        summary([v for v in values if isinstance(v, float)], scale=1000),
        summary(lengths, digits=0),
    )


# ---- 3. scale -----------------------------------------------------------------------------


async def bench_scale(ctx: Ctx) -> dict[str, Any]:
    sizes = ctx.sizes
    client = ctx.stack.client
    assert client is not None
    merchant_id, key = await ctx.merchant("scale")
    budget_end = time.monotonic() + sizes.scale_budget_seconds
    created = 0
    posted = 0  # the next payment ref's number: a request that failed keeps its ref unused
    levels = []
    for level in sizes.scale:
        cpu = ctx.cpu()
        actions_before, created_before = await temporal_actions(ctx), created
        runs = []
        t_fill = time.monotonic()
        # Post in chunks, letting the worker catch up to within one chunk between them.
        while created < level and time.monotonic() < budget_end:
            r = await ingest(
                ctx,
                key,
                min(sizes.scale_chunk, level - created),
                lambda i, base=posted: failure_body(
                    f"scl-{base + i}", pm=f"pm_bench_scl_{base + i}"
                ),
                seconds=max(budget_end - time.monotonic(), 10.0),
            )
            runs.append(r)
            created += r.ok
            posted += r.sent
            if r.ok == 0:
                break
            await wait_scheduled(
                ctx,
                merchant_id,
                created - sizes.scale_chunk,
                max(budget_end - time.monotonic(), 0.0),
            )
        t0 = time.monotonic()
        caught_up = await wait_scheduled(
            ctx, merchant_id, created, max(120.0, budget_end - time.monotonic())
        )
        fill_s = time.monotonic() - t_fill
        fill_cpu = cpu.done()
        fill_actions = per_recovery(
            actions_before, await temporal_actions(ctx), created - created_before
        )
        scheduled = await count_scheduled(ctx, merchant_id)
        merged = load.merge(runs)
        entry: dict[str, Any] = {
            "target": level,
            "created": created,
            "reached": created >= level and caught_up is not None,
            "ingest": {k: v for k, v in merged.as_dict().items() if k != "errors"},
            "ingest_errors": merged.errors[:3],
            "fill_seconds": round(fill_s, 1),
            "scheduled": scheduled,
            "fill_cpu_pct": fill_cpu,
            "temporal_actions_per_new_recovery": fill_actions,
        }
        if created < level:
            ctx.findings.append(
                f"scale: created {created} of {level} recoveries within the time budget "
                f"({sizes.scale_budget_seconds:.0f} s for all levels)"
            )
        if caught_up is None:
            ctx.findings.append(
                f"scale {level}: the worker had scheduled only {scheduled} of {created} "
                f"recoveries {time.monotonic() - t0:.0f} s after ingest ended"
            )
        await asyncio.sleep(2)  # let the last activities settle before reading memory
        entry["rss_mb"] = ctx.stack.rss_mb()
        entry["open_in_postgres"] = await ctx.pool.fetchval(
            "SELECT count(*) FROM recoveries WHERE merchant_id = $1 AND ended_at IS NULL",
            merchant_id,
        )
        try:
            counted = await client.count_workflows(
                f'MerchantId="{merchant_id}" AND ExecutionStatus="Running"'
            )
            entry["running_in_temporal"] = counted.count
        except Exception as e:
            entry["running_in_temporal"] = f"{type(e).__name__}: {e}"
        entry["pg_database_mb"] = round(
            await ctx.pool.fetchval("SELECT pg_database_size(current_database())") / 2**20, 1
        )
        entry["temporal_db_mb"] = round(
            sum(p.stat().st_size for p in ctx.stack.root.glob("temporal.db*")) / 2**20, 1
        )
        entry["reads"] = await _reads(ctx, key, created)
        levels.append(entry)
        if created < level:
            break
    return {
        "body": "card_declined/insufficient_funds, default policy (first retry ~1 day away)",
        "levels": levels,
    }


async def _reads(ctx: Ctx, key: str, created: int) -> dict[str, Any]:
    reads = ctx.sizes.reads
    seconds = ctx.sizes.read_seconds
    out: dict[str, Any] = {}
    rng = random.Random(7)
    cases = (
        ("by_ref c=1", 1, reads, lambda: f"/v1/recoveries/by_ref/scl-{rng.randrange(created)}"),
        ("by_ref c=8", 8, 2 * reads, lambda: f"/v1/recoveries/by_ref/scl-{rng.randrange(created)}"),
        ("list limit=20 c=1", 1, reads, lambda: "/v1/recoveries?limit=20"),
        ("list limit=20 c=8", 8, 2 * reads, lambda: "/v1/recoveries?limit=20"),
        (
            "list status=active&category=funds limit=100 c=1",
            1,
            reads // 2,
            lambda: "/v1/recoveries?status=active&category=funds&limit=100",
        ),
    )
    for name, concurrency, count, path in cases:
        async with ctx.http(key, concurrency) as http:

            async def get(_i: int, http: Any = http, path: Any = path) -> Any:
                return await http.get(path())

            r = await load.run_load(
                load.http_request(get), count=count, concurrency=concurrency, seconds=seconds
            )
        out[name] = r.as_dict()
        if r.ok < r.sent:
            ctx.findings.append(f"scale read {name}: {dict(r.statuses)}; {r.errors[:2]}")
    return out


# ---- 4. worker throughput ----------------------------------------------------------------


async def bench_throughput(ctx: Ctx) -> dict[str, Any]:
    n = ctx.sizes.throughput
    concurrency = 32
    merchant_id, key = await ctx.merchant("tput", {"cooldown_multiplier": 0.1})
    retries = Counter[str]()
    async with ctx.http(key, concurrency) as http:

        async def one(i: int) -> tuple[str, bool, str]:
            ref = f"tp-{i}"
            body = failure_body(
                ref, pm=f"pm_bench_tp_{i}", code="processing_error", decline_code=None
            )
            r = await http.post(
                "/v1/events/payment_failed",
                json=body,
                headers={"Idempotency-Key": f"idem-{body['event_id']}"},
            )
            if r.status_code != 202:
                return f"ingest {r.status_code}", False, r.text[:200]
            deadline = time.monotonic() + 60
            while True:
                e = await http.post(f"/v1/recoveries/by_ref/{ref}/expedite")
                if e.status_code == 200:
                    return "expedited", True, ""
                if e.status_code == 503 and time.monotonic() < deadline:
                    retries["503 recovery still starting"] += 1
                    await asyncio.sleep(0.25)
                    continue
                return f"expedite {e.status_code}", False, e.text[:200]

        cpu = ctx.cpu()
        actions_before = await temporal_actions(ctx)
        t0 = datetime.now(UTC)
        r = await load.run_load(one, count=n, concurrency=concurrency, seconds=max(600.0, n))

    async def all_ended() -> bool:
        ended = await ctx.pool.fetchval(
            "SELECT count(*) FROM recoveries WHERE merchant_id = $1 AND ended_at IS NOT NULL",
            merchant_id,
        )
        return ended >= r.ok

    finished = await wait_for(ctx, all_ended, max(600.0, n / 2), interval=0.5)
    cpu_pct = cpu.done()
    actions_after = await temporal_actions(ctx)
    rows = await ctx.pool.fetch(
        "SELECT status, started_at, ended_at FROM recoveries WHERE merchant_id = $1",
        merchant_id,
    )
    ended = [row for row in rows if row["ended_at"] is not None]
    last = max((row["ended_at"] for row in ended), default=None)
    total_s = (last - t0).total_seconds() if last else None
    if not finished:
        ctx.findings.append(
            f"throughput: only {len(ended)} of {r.ok} recoveries ended within 600 s"
        )
    return {
        "recoveries": n,
        "path": (
            "POST failure (processing_error, a payment method the simulator charges on the "
            "first attempt; policy cooldown_multiplier 0.1) then POST .../expedite, "
            f"{concurrency} such pipelines at once"
        ),
        "requests": r.as_dict(),
        "expedite_retries": dict(retries),
        "ended": len(ended),
        "statuses": dict(Counter(row["status"] for row in rows)),
        "seconds_first_post_to_last_end": round(total_s, 2) if total_s else None,
        "recoveries_per_second": round(len(ended) / total_s, 1) if total_s else None,
        "post_to_end_ms": summary(
            ((row["ended_at"] - row["started_at"]).total_seconds() for row in ended), scale=1000
        ),
        "cpu_pct": cpu_pct,
        "temporal_actions_per_recovery": per_recovery(actions_before, actions_after, len(ended)),
    }


# ---- 5. support actions -------------------------------------------------------------------


async def bench_support(ctx: Ctx) -> dict[str, Any]:
    n = ctx.sizes.cancels
    client = ctx.stack.client
    assert client is not None
    levels = (1, 8)
    merchant_id, key = await ctx.merchant("support")
    total = n * len(levels)
    r = await ingest(ctx, key, total, lambda i: failure_body(f"sup-{i}", pm=f"pm_bench_sup_{i}"))
    await wait_scheduled(ctx, merchant_id, r.ok, 300)
    out = []
    for index, concurrency in enumerate(levels):
        refs = [f"sup-{index * n + i}" for i in range(n)]
        out.append(await _cancel_level(ctx, merchant_id, key, refs, concurrency))
    return {"levels": out, "sleeping_recoveries_before": r.ok}


async def _cancel_level(
    ctx: Ctx, merchant_id: str, key: str, refs: list[str], concurrency: int
) -> dict[str, Any]:
    client = ctx.stack.client
    assert client is not None
    sent: dict[str, float] = {}
    answered: Counter[str] = Counter()
    async with ctx.http(key, concurrency) as http:

        async def cancel(i: int) -> Any:
            sent[refs[i]] = time.time()
            response = await http.post(
                f"/v1/recoveries/by_ref/{refs[i]}/cancel", json={"reason": "bench"}
            )
            if response.status_code == 200:
                answered[response.json()["status"]] += 1
            return response

        res = await load.run_load(
            load.http_request(cancel), count=len(refs), concurrency=concurrency, seconds=120
        )
    gate = asyncio.Semaphore(16)

    async def stopped_after(ref: str) -> tuple[float | None, str]:
        async with gate:
            d = await client.get_workflow_handle(f"recovery/{merchant_id}/{ref}").describe()
        status = d.status.name if d.status else "?"
        if d.close_time is None:
            return None, status
        return d.close_time.timestamp() - sent[ref], status

    stops = await asyncio.gather(*(stopped_after(ref) for ref in sent))
    if any(s != WorkflowExecutionStatus.COMPLETED.name for _, s in stops):
        ctx.findings.append(
            f"cancel c={concurrency}: workflow states {Counter(s for _, s in stops)}"
        )
    return {
        "concurrency": concurrency,
        "requests": res.as_dict(),
        "answered_status": dict(answered),
        "workflow_status": dict(Counter(s for _, s in stops)),
        "post_to_workflow_closed_ms": summary((t for t, _ in stops if t is not None), scale=1000),
        "not_closed": sum(1 for t, _ in stops if t is None),
    }


# ---- 6. classifier ------------------------------------------------------------------------

CORPUS = [
    {"psp": "stripe", "code": "card_declined", "decline_code": "insufficient_funds"},
    {"psp": "stripe", "code": "card_declined", "decline_code": "do_not_honor"},
    {"psp": "stripe", "code": "card_declined", "decline_code": "stolen_card"},
    {"psp": "stripe", "code": "expired_card"},
    {"psp": "stripe", "code": "processing_error"},
    {"psp": "stripe", "code": "authentication_required"},
    {"psp": "stripe", "code": "card_declined", "network_advice_code": "03"},
    {"psp": "stripe", "message": "Your card has insufficient funds."},
    {"psp": "stripe", "code": "card_declined", "message": "The issuer timed out"},
    {"psp": "razorpay", "code": "BAD_REQUEST_ERROR", "decline_code": "insufficient_balance"},
    {"psp": "razorpay", "code": "GATEWAY_ERROR", "decline_code": "payment_pending"},
    {"psp": "razorpay", "code": "SERVER_ERROR"},
    {"psp": "razorpay", "message": "UPI collect request expired", "payment_method_type": "upi"},
    {"psp": "simulator", "code": "card_declined", "decline_code": "insufficient_funds"},
    {"psp": "simulator", "code": "something_we_have_never_seen"},
    {"psp": "stripe", "code": "card_declined", "decline_code": "try_again_later", "attempt": 3},
]


async def bench_classifier(ctx: Ctx) -> dict[str, Any]:
    requests = [ClassifyRequest(**c) for c in CORPUS]
    # In-process: the pure function, in this (benchmark) process, while the stack idles.
    n = 0
    t0 = time.perf_counter()
    end = t0 + ctx.sizes.classify_seconds
    while time.perf_counter() < end:
        for req in requests:
            classify(req)
        n += len(requests)
    elapsed = time.perf_counter() - t0
    in_process = {
        "classifications": n,
        "seconds": round(elapsed, 2),
        "per_second": round(n / elapsed),
        "us_per_call": round(1e6 * elapsed / n, 1),
    }
    _, key = await ctx.merchant("classify")
    api = []
    for concurrency, count in ctx.sizes.classify_levels:
        async with ctx.http(key, concurrency) as http:

            async def post(i: int, http: Any = http) -> Any:
                return await http.post("/v1/classify", json=CORPUS[i % len(CORPUS)])

            cpu = ctx.cpu()
            r = await load.run_load(
                load.http_request(post),
                count=count,
                concurrency=concurrency,
                seconds=max(3.0, 3 * ctx.sizes.classify_seconds),
            )
            api.append({**r.as_dict(), "cpu_pct": cpu.done()})
    return {"corpus": len(CORPUS), "in_process": in_process, "api": api}


BENCHMARKS = {
    "analytics": bench_analytics,
    "notify": bench_notify,
    "ingest": bench_ingest,
    "timers": bench_timers,
    "scale": bench_scale,
    "throughput": bench_throughput,
    "support": bench_support,
    "classifier": bench_classifier,
}
