"""A bounded load generator: `concurrency` loops, each sending one request at a time (back
to back, or paced to a target rate), until `count` requests were sent or `seconds` have
passed, whichever comes first."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.stats import summary


@dataclass
class LoadResult:
    concurrency: int
    sent: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    statuses: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # the first few non-2xx answers/exceptions
    stopped_by: str = "count"

    @property
    def ok(self) -> int:
        return len(self.latencies)

    def as_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "sent": self.sent,
            "ok": self.ok,
            "seconds": round(self.elapsed, 2),
            "per_second": round(self.ok / self.elapsed, 1) if self.elapsed else None,
            "latency_ms": summary(self.latencies, scale=1000),
            "statuses": dict(self.statuses),
            "errors": self.errors[:5],
            "stopped_by": self.stopped_by,
        }


# One request: returns a status label ("202", "TimeoutError", ...) and whether it succeeded.
Request = Callable[[int], Awaitable[tuple[str, bool, str]]]


async def run_load(
    request: Request,
    *,
    count: int,
    concurrency: int,
    seconds: float,
    rate: float | None = None,
) -> LoadResult:
    """With `rate`, request i starts no earlier than i / rate seconds in (paced, open loop
    as long as `concurrency` loops keep up); without, each loop sends back to back."""
    result = LoadResult(concurrency=concurrency)
    next_index = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def loop() -> None:
        nonlocal next_index
        while next_index < count:
            if time.perf_counter() >= deadline:
                result.stopped_by = "time"
                return
            i = next_index
            next_index += 1
            if rate is not None:
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            t0 = time.perf_counter()
            try:
                label, ok, detail = await request(i)
            except Exception as e:  # a failed request is a result, not a crash
                label, ok, detail = type(e).__name__, False, str(e)[:200]
            dt = time.perf_counter() - t0
            result.sent += 1
            result.statuses[label] += 1
            if ok:
                result.latencies.append(dt)
            elif len(result.errors) < 20:
                result.errors.append(f"{label}: {detail}")

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - start
    return result


def merge(results: list[LoadResult]) -> LoadResult:
    """Several runs as one (their times added up)."""
    out = LoadResult(concurrency=max((r.concurrency for r in results), default=0))
    for r in results:
        out.sent += r.sent
        out.elapsed += r.elapsed
        out.latencies += r.latencies
        out.statuses.update(r.statuses)
        out.errors += r.errors
        if r.stopped_by == "time":
            out.stopped_by = "time"
    return out


def http_request(
    call: Callable[[int], Awaitable[httpx.Response]], ok_statuses: tuple[int, ...] = (200,)
) -> Request:
    """Adapt an httpx call to `run_load`: the status code is the label."""

    async def request(i: int) -> tuple[str, bool, str]:
        response = await call(i)
        ok = response.status_code in ok_statuses
        return str(response.status_code), ok, "" if ok else response.text[:300]

    return request


def client(base_url: str, key: str, concurrency: int, timeout: float = 30.0) -> httpx.AsyncClient:
    """A keep-alive client with one connection per concurrent loop."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=timeout,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    )
