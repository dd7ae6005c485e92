"""`wrk` (Debian's `wrk` package) as the API benchmark's load generator: a C event loop that
is not the bottleneck, where an httpx client in Python would be.

`run_wrk` drives one URL with a generated Lua script (a fixed request, or bodies made per
request so that each ingest is a new payment with its own Idempotency-Key), counts the
answers by status and returns wrk's own figures as a dict.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import psutil

_LUA = r"""
local threads = {}
local counter = 0
local tid = 0
statuses = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local method = %(method)s
local path = %(path)s
local headers = %(headers)s
local bodies = %(bodies)s
local unique = %(unique)s

function request()
  counter = counter + 1
  local body = nil
  local h = headers
  if #bodies > 0 then
    body = bodies[(counter %% #bodies) + 1]
    if unique then
      local id = string.format("%(prefix)s%%d-%%d", tid, counter)
      body = string.gsub(body, "@ID@", id)
      h = {}
      for k, v in pairs(headers) do h[k] = v end
      h["Idempotency-Key"] = "idem-" .. id
    end
  end
  return wrk.format(method, path, h, body)
end

function response(status, hdrs, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do
      counts[tostring(status)] = (counts[tostring(status)] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%%s": %%d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d,'
    .. ' "p99_us": %%d, "max_us": %%d, "mean_us": %%.1f, "statuses": {%%s},'
    .. ' "socket_errors": {"connect": %%d, "read": %%d, "write": %%d, "timeout": %%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout))
end
"""


def _lua_string(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid Lua string literal for ASCII


def _lua_table(items: dict[str, str] | list[str]) -> str:
    if isinstance(items, dict):
        return (
            "{"
            + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in items.items())
            + "}"
        )
    return "{" + ", ".join(_lua_string(v) for v in items) + "}"


def available() -> str | None:
    return shutil.which("wrk")


async def run_wrk(
    url: str,
    *,
    script_dir: Path,
    name: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    bodies: list[str] | None = None,
    unique_prefix: str | None = None,
    connections: int = 16,
    threads: int = 1,
    seconds: float = 10,
) -> dict[str, Any]:
    """Run wrk against `url` (scheme, host and port; `path` from it too) for `seconds`.

    With `unique_prefix`, each request's body has `@ID@` replaced by a fresh id
    (`<prefix><thread>-<n>`), also sent as `Idempotency-Key: idem-<id>`.
    """
    binary = available()
    if binary is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    base, _, path = url.partition("://")[2].partition("/")
    lua = _LUA % {
        "method": _lua_string(method),
        "path": _lua_string("/" + path),
        "headers": _lua_table(headers or {}),
        "bodies": _lua_table(bodies or []),
        "unique": "true" if unique_prefix else "false",
        "prefix": unique_prefix or "",
    }
    script = script_dir / f"wrk-{name}.lua"
    script.write_text(lua)
    argv = [
        binary,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url.partition("://")[0] + "://" + base,
    ]
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    ps = psutil.Process(proc.pid)
    cpu = 0.0
    out, err = b"", b""
    communicate = asyncio.ensure_future(proc.communicate())
    while not communicate.done():
        try:
            t = ps.cpu_times()
            cpu = t.user + t.system
        except psutil.Error:
            pass
        await asyncio.wait([communicate], timeout=0.5)
    out, err = communicate.result()
    wall = time.perf_counter() - t0
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("WRK_RESULT "):
            r: dict[str, Any] = json.loads(line.removeprefix("WRK_RESULT "))
            break
    else:
        raise RuntimeError(f"wrk said nothing we can read: {out[-500:]!r} {err[-500:]!r}")
    seconds_run = r["duration_us"] / 1e6
    ok = sum(n for s, n in r["statuses"].items() if s.startswith("2"))
    return {
        "connections": connections,
        "threads": threads,
        "seconds": round(seconds_run, 2),
        "requests": r["requests"],
        "ok": ok,
        "per_second": round(ok / seconds_run, 1) if seconds_run else None,
        "latency_ms": {
            "p50": r["p50_us"] / 1000,
            "p90": r["p90_us"] / 1000,
            "p99": r["p99_us"] / 1000,
            "max": r["max_us"] / 1000,
            "mean": round(r["mean_us"] / 1000, 2),
            "n": r["requests"],
        },
        "statuses": r["statuses"],
        "socket_errors": {k: v for k, v in r["socket_errors"].items() if v},
        "wrk_cpu_pct": round(100 * cpu / wall) if wall else None,
    }
