"""What a new recovery costs the worker and Temporal: `python -m bench.worker_cost [N]`.

Starts the bench stack, posts N hard-to-recover failures (funds: a cooldown of about a day),
and measures, from the end of posting until every recovery is scheduled (its workflow past
its first step, asleep on its timer): the rate, the CPU seconds each process used (per
recovery), their memory, and the Temporal actions per recovery (the server's `action`
counter). With `--py-spy PATH` it also samples the worker meanwhile (every thread: workflow
activations run in the SDK's thread pool) and prints the frames that took the most samples.
The result is printed as JSON (and written to `--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.api_cost import top_frames
from bench.common import (
    Ctx,
    Sizes,
    failure_body,
    ingest,
    per_recovery,
    temporal_actions,
    wait_scheduled,
)
from bench.stack import Stack


async def measure(
    n: int, py_spy: str | None, temporal_args: list[str], env: dict[str, str]
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="worker-cost-"))
    stack = Stack(root=root, child_env=env, temporal_args=temporal_args)
    await stack.start()
    try:
        ctx = Ctx(stack=stack, sizes=Sizes.quick())
        merchant_id, key = await ctx.merchant("cost")
        worker_pid = next(p.popen.pid for p in stack.processes if p.name == "worker")
        actions_before = await temporal_actions(ctx)
        posted = await ingest(
            ctx, key, n, lambda i: failure_body(f"cost-{i}", pm=f"pm_cost_{i}"), concurrency=16
        )
        cpu_before, t0 = stack.cpu_seconds(), time.monotonic()
        spy = None
        if py_spy:
            spy = await asyncio.create_subprocess_exec(
                py_spy,
                *("record", "--pid", str(worker_pid), "--rate", "100", "--duration", "3600"),
                *("--format", "raw", "--nolineno", "--threads", "--nonblocking"),
                *("--output", str(root / "worker.txt")),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        waited = await wait_scheduled(ctx, merchant_id, posted.ok, 1800)
        seconds = time.monotonic() - t0
        cpu = {k: v - cpu_before.get(k, 0.0) for k, v in stack.cpu_seconds().items()}
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes what it has and exits
            await spy.wait()
        out: dict[str, Any] = {
            "env": env,
            "posted": posted.ok,
            "posting_seconds": round(posted.elapsed, 1),
            "all_scheduled": waited is not None,
            "seconds_after_posting": round(seconds, 1),
            "scheduled_per_second_overall": round(posted.ok / (posted.elapsed + seconds), 1),
            "cpu_seconds_after_posting": {k: round(v, 1) for k, v in cpu.items()},
            "cpu_ms_per_recovery_after_posting": {
                k: round(1000 * v / posted.ok, 2) for k, v in cpu.items()
            },
            "rss_mb": stack.rss_mb(),
            "temporal_actions_per_recovery": per_recovery(
                actions_before, await temporal_actions(ctx), posted.ok
            ),
        }
        profile = root / "worker.txt"
        if profile.exists():
            out["worker_profile"] = top_frames(profile.read_text(), 25, main_thread_only=False)
        return out
    finally:
        await stack.stop()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.worker_cost", description=__doc__)
    p.add_argument("n", nargs="?", type=int, default=1500, help="recoveries to post")
    p.add_argument("--py-spy", metavar="PATH", help="a py-spy binary: profile the worker")
    p.add_argument("--temporal-arg", action="append", default=[], metavar="ARG")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="for the API and worker, e.g. WORKER_MAX_CACHED_WORKFLOWS=100",
    )
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    result = asyncio.run(measure(args.n, args.py_spy, args.temporal_arg, env))
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    sys.exit(0 if result["all_scheduled"] else 1)


if __name__ == "__main__":
    main()
