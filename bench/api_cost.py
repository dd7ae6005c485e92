"""7. Cost per request: our API against a bare FastAPI app on the same uvicorn, with wrk.

Each case runs on the bare app (`bench.bare_app`) and then on ours, in the same run, for the
same time, with the same wrk settings (16 connections, one wrk thread). With a py-spy binary
(`--py-spy PATH`), each case of ours runs once more under `py-spy record` (a separate pass, so
the sampler's own CPU does not lower the measured figures) and the profile's top frames, by
own time and by total time, go in the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench import wrk
from bench.benchmarks import CORPUS
from bench.common import Ctx, failure_body, wait_for
from scripts.stack import HOST, Process, free_port, wait_until

CONNECTIONS = 16
ROUNDS = 2


def _combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds as one: requests and time added up; each latency figure and the CPU shares
    the median of the rounds' (wrk gives no samples to merge)."""

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[(len(ordered) - 1) // 2]

    seconds = sum(r["seconds"] for r in runs)
    ok = sum(r["ok"] for r in runs)
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for r in runs:
        statuses.update(r["statuses"])
        errors.update(r["socket_errors"])
    out: dict[str, Any] = {
        "rounds": len(runs),
        "connections": runs[0]["connections"],
        "seconds": round(seconds, 2),
        "requests": sum(r["requests"] for r in runs),
        "ok": ok,
        "per_second": round(ok / seconds, 1) if seconds else None,
        "per_second_by_round": [r["per_second"] for r in runs],
        "latency_ms": {
            k: median([r["latency_ms"][k] for r in runs]) for k in ("p50", "p90", "p99", "mean")
        }
        | {"max": max(r["latency_ms"]["max"] for r in runs), "n": sum(r["requests"] for r in runs)},
        "statuses": dict(statuses),
        "socket_errors": dict(errors),
        "wrk_cpu_pct": median([r["wrk_cpu_pct"] or 0 for r in runs]),
    }
    if all("cpu_pct" in r for r in runs):
        out["cpu_pct"] = {
            k: median([r["cpu_pct"].get(k, 0) for r in runs]) for k in runs[0]["cpu_pct"]
        }
    return out


def _cases(key: str) -> list[dict[str, Any]]:
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    ingest_body = failure_body("@ID@", pm="pm_sim_succeed_on_1")
    ingest_body["event_id"] = "evt_@ID@"
    return [
        {"name": "healthz", "path": "/healthz", "method": "GET", "headers": {}, "bodies": []},
        {
            "name": "classify",
            "path": "/v1/classify",
            "method": "POST",
            "headers": auth,
            "bodies": [json.dumps(c) for c in CORPUS],
        },
        {
            "name": "ingest",
            "path": "/v1/events/payment_failed",
            "method": "POST",
            "headers": auth,
            "bodies": [json.dumps(ingest_body)],
            "unique": True,
        },
    ]


async def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(f"{url}/healthz")).status_code == 200
    return False


def top_frames(raw: str, limit: int = 12, *, main_thread_only: bool = True) -> dict[str, Any]:
    """Top frames of a py-spy `--format raw --threads` profile (collapsed stacks) of the
    main thread (the event loop's), or of every thread: by own samples (the frame was
    running) and by total samples (it was on the stack; frames on every stack, such as
    `main`, left out), in % of those samples; `other_threads_pct`: samples of the threads
    left out, in % of all."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    loop_samples = other = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        parts = stack.split(";")
        main = any(p.startswith("thread ") and p.endswith(": MainThread") for p in parts)
        if main_thread_only and not main:
            other += n
            continue
        frames = [f for f in parts if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        loop_samples += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n

    def pct(c: Counter[str]) -> list[list[Any]]:
        return [
            [f, round(100 * n / loop_samples, 1)] for f, n in c.most_common() if n < loop_samples
        ][:limit]

    everything = loop_samples + other
    return {
        "samples": loop_samples,
        "other_threads_pct": round(100 * other / everything, 1) if everything else None,
        "own": pct(own),
        "total": pct(total),
    }


async def _profile(
    ctx: Ctx, py_spy: str, pid: int, case: dict[str, Any], seconds: float, out_dir: Path
) -> dict[str, Any]:
    raw_file = out_dir / "logs" / f"py-spy-{case['name']}.txt"
    spy = await asyncio.create_subprocess_exec(
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--rate",
        "200",
        "--duration",
        str(round(seconds)),
        "--format",
        "raw",
        "--nolineno",
        "--threads",
        "--nonblocking",
        "--output",
        str(raw_file),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(0.5)  # let it attach
    await _wrk(ctx, ctx.stack.api_url, case, seconds, f"spy{uuid.uuid4().hex[:6]}-")
    _, err = await spy.communicate()
    if spy.returncode != 0 or not raw_file.exists():
        return {"error": err.decode(errors="replace")[-300:]}
    return top_frames(raw_file.read_text())


async def _wrk(
    ctx: Ctx, base_url: str, case: dict[str, Any], seconds: float, prefix: str
) -> dict[str, Any]:
    return await wrk.run_wrk(
        base_url + case["path"],
        script_dir=ctx.stack.root,
        name=case["name"],
        method=case["method"],
        headers=case["headers"],
        bodies=case["bodies"],
        unique_prefix=prefix if case.get("unique") else None,
        connections=CONNECTIONS,
        seconds=seconds,
    )


async def bench_api(ctx: Ctx) -> dict[str, Any]:
    seconds = ctx.sizes.api_seconds
    port = free_port()
    bare_url = f"http://{HOST}:{port}"
    bare = Process(
        "bare",
        [sys.executable, "-m", "bench.bare_app", str(port)],
        {**os.environ, "PYTHONUNBUFFERED": "1"},
        log=ctx.stack.root / "logs" / "bare.log",
    )
    try:
        await wait_until("the bare app to answer", lambda: _answers(bare_url), watch=[bare])
        _, key = await ctx.merchant("api")
        cases = []
        for case in _cases(key):
            prefix = f"api{uuid.uuid4().hex[:6]}-"
            # Rounds alternate which app goes first, so that a change in the machine's load
            # (it is shared) weighs on both alike.
            bare_runs, our_runs = [], []
            for n in range(ROUNDS):
                for who in ("bare", "ours") if n % 2 == 0 else ("ours", "bare"):
                    if who == "bare":
                        bare_runs.append(
                            await _wrk(ctx, bare_url, case, seconds, f"{prefix}bare{n}-")
                        )
                    else:
                        cpu = ctx.cpu()
                        run = await _wrk(ctx, ctx.stack.api_url, case, seconds, f"{prefix}{n}-")
                        run["cpu_pct"] = cpu.done()
                        our_runs.append(run)
                        await _drain_outbox(ctx)
            baseline, ours = _combined(bare_runs), _combined(our_runs)
            ratio = (
                round(ours["per_second"] / baseline["per_second"], 3)
                if ours["per_second"] and baseline["per_second"]
                else None
            )
            row: dict[str, Any] = {
                "case": case["name"],
                "method": case["method"],
                "path": case["path"],
                "bare": baseline,
                "ours": ours,
                "ratio": ratio,
            }
            if ctx.py_spy:
                api_pid = next(p.popen.pid for p in ctx.stack.processes if p.name == "api")
                row["profile"] = await _profile(
                    ctx, ctx.py_spy, api_pid, case, seconds, ctx.stack.root
                )
            not_ok = ours["requests"] - ours["ok"]
            if not_ok or ours["socket_errors"]:
                ctx.findings.append(
                    f"api {case['name']}: {not_ok} answers not 2xx ({ours['statuses']}), "
                    f"socket errors {ours['socket_errors']}"
                )
            cases.append(row)
            await _drain_outbox(ctx)
    finally:
        await bare.stop()
    return {
        "load_generator": f"wrk, {CONNECTIONS} connections, 1 thread; {ROUNDS} rounds of "
        f"{seconds:g} s per app and case, alternating which app goes first",
        "bare_app": "bench/bare_app.py: the same routes' own work on FastAPI, same uvicorn "
        "config, no auth, middleware or database",
        "cases": cases,
    }


async def _drain_outbox(ctx: Ctx, within: float = 120) -> None:
    """Let the relay hand the ingested events over before the next case (or benchmark)."""

    async def drained() -> bool:
        return not await ctx.pool.fetchval("SELECT count(*) FROM outbox WHERE delivered_at IS NULL")

    await wait_for(ctx, drained, within)
