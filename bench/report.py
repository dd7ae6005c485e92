"""Render a run's results (the JSON the runner writes) as a markdown section."""

from __future__ import annotations

from typing import Any

from bench.stats import fmt, pcts

PIECES = ("api", "worker", "temporal", "postgres", "bench", "other")


def _cpu(c: dict[str, float] | None) -> str:
    if not c:
        return "-"
    return " / ".join(str(c.get(k, "-")) for k in PIECES)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    s = results["settings"]
    lines = [
        f"## {results['started_at'][:16].replace('T', ' ')} UTC: `{results['mode']}` run",
        "",
        f"- Command: `{results['command']}`",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gb']} GiB RAM, "
        f"Linux {m['kernel']}, Python {m['python']}; load average at start "
        f"{m['loadavg_at_start']} (machine CPU busy {m['cpu_busy_pct_at_start']} % over 1 s "
        "before the run; other jobs may share this machine)",
        f"- Stack: {results['versions']}; everything on this one machine (load generator "
        "included), PostgreSQL over its Unix socket, the rest on 127.0.0.1; the Temporal dev "
        "server on its SQLite file with "
        + " ".join(results.get("temporal_sqlite", ["its defaults"]))
        + (f" and {' '.join(results['temporal_args'])}" if results.get("temporal_args") else ""),
        f"- Settings: {s}",
        f"- Stack start {results['startup_seconds']} s; whole run {results['total_seconds']} s",
        "- CPU columns: % of one core used by api / worker / temporal / postgres / bench "
        "(the load generator) / other (everything else on the machine) during the measurement",
        "",
    ]
    b = results["benchmarks"]
    if "api" in b:
        lines += _api(b["api"])
    if "ingest" in b:
        lines += _ingest(b["ingest"])
    if "timers" in b:
        lines += _timers(b["timers"])
    if "scale" in b:
        lines += _scale(b["scale"])
    if "throughput" in b:
        raw = [
            lv["per_second"]
            for lv in b.get("ingest", {}).get("baseline", [])
            if lv.get("per_second")
        ]
        lines += _throughput(b["throughput"], max(raw) if raw else None)
    if "support" in b:
        lines += _support(b["support"])
    if "classifier" in b:
        lines += _classifier(b["classifier"])
    if "analytics" in b:
        lines += _analytics(b["analytics"])
    if "notify" in b:
        lines += _notify(b["notify"])
    meta = results.get("benchmark_runs", {})
    if meta:
        lines += ["### Wall time and machine load per benchmark", ""]
        lines += _table(
            [
                "benchmark",
                "waited before it for earlier work, s",
                "seconds",
                "load average (1 min) at start / end",
            ],
            [
                [
                    k,
                    _settled(v.get("settle_seconds", 0.0)),
                    v["seconds"],
                    f"{v['loadavg_start']} / {v['loadavg_end']}",
                ]
                for k, v in meta.items()
            ],
        )
    lines += ["### Peak resident memory over the run (MiB)", ""]
    peak = results.get("peak_rss_mb", {})
    lines += _table(list(peak), [[peak[k] for k in peak]])
    lines += ["### Findings", ""]
    findings = results.get("findings") or ["none"]
    lines += [f"- {f}" for f in findings]
    problems = results.get("log_problems", {})
    for name, p in problems.items():
        lines.append(f"- {name} log: {p['error_lines']} ERROR/traceback lines")
        lines += [f"  - `{sample[:300]}`" for sample in p["samples"][:3]]
    for name, err in results.get("errors", {}).items():
        lines.append(f"- **{name} did not complete**: {err}")
    return "\n".join(lines) + "\n"


def _settled(seconds: float | None) -> str:
    return "still busy after 900 s" if seconds is None else f"{seconds:g}"


def _ingest(r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return ["### 1. Ingest", "", f"failed: {r['error']}", ""]
    lines = [
        "### 1. Ingest: `POST /v1/events/payment_failed` through uvicorn",
        "",
        f"Body: {r['body']}. Each level runs until its request count or time limit. "
        "Outbox lag = `outbox.delivered_at - outbox.created_at` (commit to Temporal accepted "
        "the signal-with-start).",
        "",
    ]
    rows = []
    for lv in r["levels"]:
        lag = lv["outbox_lag"]["ms"]
        rows.append(
            [
                f"{lv['concurrency']}"
                + (f" ({lv['paced_per_second']:g}/s)" if lv.get("paced_per_second") else ""),
                f"{lv['ok']}/{lv['sent']}",
                fmt(lv["per_second"]),
                pcts(lv["latency_ms"]),
                pcts(lag),
                fmt(lv["worker_caught_up_after_s"], "s"),
                _cpu(lv["cpu_pct"]),
                ", ".join(f"{k}: {v}" for k, v in lv["statuses"].items()),
            ]
        )
    lines += _table(
        [
            "concurrency (paced)",
            "ok/sent",
            "events/s",
            "latency p50 / p99 / max",
            "outbox lag p50 / p99 / max",
            "worker done after",
            "CPU %",
            "statuses",
        ],
        rows,
    )
    lines += [
        f"Baseline, same run and server: `recovery.temporal.deliver_failure` alone "
        f"({r['baseline_task_queue']}).",
        "",
    ]
    rows = [
        [
            lv["concurrency"],
            f"{lv['ok']}/{lv['sent']}",
            fmt(lv["per_second"]),
            pcts(lv["latency_ms"]),
            _cpu(lv["cpu_pct"]),
        ]
        for lv in r["baseline"]
    ]
    lines += _table(
        ["concurrency", "ok/sent", "signal-with-starts/s", "latency p50 / p99 / max", "CPU %"],
        rows,
    )
    return lines


def _timers(r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return ["### 2. Timers", "", f"failed: {r['error']}", ""]
    lines = ["### 2. Timers: how late attempts fire", ""]
    rows = []
    for run in r["runs"]:
        rows.append(
            [
                f"{run['attempts_measured']}/{run['recoveries']}",
                f"{run['cooldown_multiplier']} ({run['nominal_delay_s']} s {run['jitter']})",
                f"{run['peak_sleeping_at_once']}"
                + (" (all)" if run["all_sleeping_at_once"] else " (not all)"),
                pcts(run["attempt_late_ms"]),
                f"{pcts(run['timer_fired_late_ms'])} (n={run['timer_fired_late_ms'].get('n', 0)})",
                ", ".join(f"{k}: {v}" for k, v in run["attempt_statuses"].items()),
                fmt(run.get("history_events_per_recovery", {}).get("p50")),
                _cpu(run["cpu_pct"]),
            ]
        )
    lines += _table(
        [
            "attempts/recoveries",
            "multiplier (delay)",
            "peak sleeping at once",
            "attempt late p50 / p99 / max",
            "timer fired late p50 / p99 / max",
            "attempt outcomes",
            "history events p50",
            "CPU %",
        ],
        rows,
    )
    for run in r["runs"]:
        lines.append(
            f"- {run['recoveries']}: posted in {run['ingest_seconds']} s, all scheduled after "
            f"{run['all_scheduled_after_s']} s (multiplier chosen for ~"
            f"{run['schedule_rate_estimate']} starts/s)"
        )
    lines.append("")
    if r["runs"]:
        lines += [f"Measures: {r['runs'][0]['measures']}.", ""]
    lines += [f"Comparison: {r['comparison']}", ""]
    return lines


def _scale(r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return ["### 3. Scale", "", f"failed: {r['error']}", ""]
    lines = [f"### 3. Scale: open recoveries waiting on cooldowns ({r['body']})", ""]
    rows = []
    for lv in r["levels"]:
        rss = lv["rss_mb"]
        reads = lv["reads"]
        rows.append(
            [
                f"{lv['open_in_postgres']} (target {lv['target']})",
                lv["running_in_temporal"],
                rss.get("worker"),
                rss.get("api"),
                rss.get("temporal"),
                lv["pg_database_mb"],
                lv["temporal_db_mb"],
                pcts(reads["by_ref c=1"]["latency_ms"]),
                pcts(reads["by_ref c=8"]["latency_ms"]),
                pcts(reads["list limit=20 c=1"]["latency_ms"]),
                pcts(reads["list limit=20 c=8"]["latency_ms"]),
                pcts(reads["list status=active&category=funds limit=100 c=1"]["latency_ms"]),
                fmt(lv["ingest"]["per_second"]),
            ]
        )
    lines += _table(
        [
            "open (PG)",
            "running (Temporal)",
            "worker RSS MiB",
            "API RSS MiB",
            "Temporal RSS MiB",
            "PG db MiB",
            "Temporal db MiB",
            "by_ref c=1 p50/p99/max",
            "by_ref c=8",
            "list 20 c=1",
            "list 20 c=8",
            "list filtered 100 c=1",
            "fill events/s (c=32)",
        ],
        rows,
    )
    for lv in r["levels"]:
        lines.append(
            f"- {lv['target']}: created {lv['created']} (posting took {lv['ingest']['seconds']} s)"
            f", all scheduled by the worker after {lv['fill_seconds']} s; "
            f"fill CPU % {_cpu(lv['fill_cpu_pct'])}; reads/s by_ref c=8 "
            f"{fmt(lv['reads']['by_ref c=8']['per_second'])}, list c=8 "
            f"{fmt(lv['reads']['list limit=20 c=8']['per_second'])}"
        )
        lines += _actions(  # its line only, in this list
            f"  Temporal actions per new recovery ({lv['target']})",
            lv.get("temporal_actions_per_new_recovery"),
        )[:1]
    return [*lines, ""]


def _throughput(r: dict[str, Any], raw_rate: float | None) -> list[str]:
    if "error" in r:
        return ["### 4. Worker throughput", "", f"failed: {r['error']}", ""]
    rate = r["recoveries_per_second"]
    against_raw = (
        [
            f"- Against the raw signal-with-start rate of the same run (the ingest baseline's "
            f"best, {raw_rate:g}/s): {rate / raw_rate:.1%}",
            "",
        ]
        if rate and raw_rate
        else []
    )
    return [
        "### 4. Worker throughput: complete recoveries end to end",
        "",
        f"Path: {r['path']}.",
        "",
        *_table(
            [
                "recoveries",
                "ended",
                "statuses",
                "first POST to last end",
                "recoveries/s",
                "POST to end p50 / p99 / max",
                "expedite retries",
                "CPU %",
            ],
            [
                [
                    r["recoveries"],
                    r["ended"],
                    ", ".join(f"{k}: {v}" for k, v in r["statuses"].items()),
                    fmt(r["seconds_first_post_to_last_end"], "s"),
                    fmt(r["recoveries_per_second"]),
                    pcts(r["post_to_end_ms"]),
                    ", ".join(f"{k}: {v}" for k, v in r["expedite_retries"].items()) or "0",
                    _cpu(r["cpu_pct"]),
                ]
            ],
        ),
        *against_raw,
        *_actions(
            "Temporal actions per recovery (the server's `action` counter, what Temporal Cloud "
            "bills)",
            r.get("temporal_actions_per_recovery"),
        ),
    ]


def _actions(title: str, a: dict[str, Any] | None) -> list[str]:
    if not a:
        return []
    by_type = ", ".join(f"{k} {v:g}" for k, v in a["by_type"].items())
    return [f"- {title}: {a['total']:g} ({by_type})", ""]


def _support(r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return ["### 5. Support actions", "", f"failed: {r['error']}", ""]
    rows = [
        [
            lv["concurrency"],
            f"{lv['requests']['ok']}/{lv['requests']['sent']}",
            pcts(lv["requests"]["latency_ms"]),
            pcts(lv["post_to_workflow_closed_ms"]),
            ", ".join(f"{k}: {v}" for k, v in lv["answered_status"].items()),
            ", ".join(f"{k}: {v}" for k, v in lv["workflow_status"].items()),
        ]
        for lv in r["levels"]
    ]
    return [
        "### 5. Support actions: `POST .../cancel` to the workflow closed",
        "",
        f"{r['sleeping_recoveries_before']} recoveries sleeping on a ~1-day cooldown; "
        "workflow close time from `describe()` minus the moment the request was sent.",
        "",
        *_table(
            [
                "concurrency",
                "ok/sent",
                "HTTP p50 / p99 / max",
                "POST to workflow closed p50 / p99 / max",
                "answered",
                "workflows",
            ],
            rows,
        ),
    ]


def _classifier(r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return ["### 6. Classifier", "", f"failed: {r['error']}", ""]
    ip = r["in_process"]
    rows = [["in-process `classify()`", "-", fmt(ip["per_second"]), f"{ip['us_per_call']} us"]]
    rows += [
        [
            "`POST /v1/classify`",
            lv["concurrency"],
            fmt(lv["per_second"]),
            pcts(lv["latency_ms"]),
        ]
        for lv in r["api"]
    ]
    return [
        f"### 6. Classifier ({r['corpus']} varied failures, round robin)",
        "",
        *_table(["where", "concurrency", "classifications/s", "latency p50 / p99 / max"], rows),
    ]


def _by_round(run: dict[str, Any]) -> str:
    rounds = run.get("per_second_by_round") or []
    each = " / ".join(fmt(x) for x in rounds)
    return f"{fmt(run['per_second'])} ({each})" if len(rounds) > 1 else fmt(run["per_second"])


def _api_cpu_per_request(run: dict[str, Any]) -> str:
    """The API process's CPU time per answered request (its relay's share included)."""
    api = (run.get("cpu_pct") or {}).get("api")
    if not api or not run.get("per_second"):
        return "-"
    return f"{10 * api / run['per_second']:.2f} ms"


def _api(r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return ["### 7. Cost per request", "", f"failed: {r['error']}", ""]
    rows = []
    for c in r["cases"]:
        bare, ours = c["bare"], c["ours"]
        rows.append(
            [
                f"`{c['method']} {c['path']}`",
                _by_round(bare),
                pcts(bare["latency_ms"]),
                _by_round(ours),
                pcts(ours["latency_ms"]),
                fmt(c["ratio"]),
                ", ".join(f"{s}: {n}" for s, n in sorted(ours["statuses"].items())),
                _cpu(ours.get("cpu_pct")),
                _api_cpu_per_request(ours),
                f"{bare['wrk_cpu_pct']} / {ours['wrk_cpu_pct']}",
            ]
        )
    out = [
        "### 7. Cost per request: our API against a bare FastAPI app on the same uvicorn",
        "",
        f"Load: {r['load_generator']}. Baseline: {r['bare_app']}.",
        "",
        *_table(
            [
                "route",
                "bare req/s (rounds)",
                "bare p50 / p99 / max",
                "ours req/s (rounds)",
                "ours p50 / p99 / max",
                "ours / bare",
                "our statuses",
                "CPU % (ours)",
                "API CPU per request",
                "wrk CPU % bare / ours",
            ],
            rows,
        ),
    ]
    for c in r["cases"]:
        prof = c.get("profile")
        if not prof or "error" in prof:
            continue
        out += [
            f"py-spy, `{c['method']} {c['path']}`: {prof['samples']} samples of the API's "
            f"event loop thread, in % of them (other threads: {prof['other_threads_pct']} % "
            "of all samples):",
            "",
            *_table(
                ["own %", "frame (running)", "total %", "frame (on the stack)"],
                [
                    [o[1], f"`{o[0]}`", t[1], f"`{t[0]}`"]
                    for o, t in zip(prof["own"], prof["total"], strict=False)
                ],
            ),
        ]
    return out


def _analytics(r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return ["### 7. Analytics summary", "", f"failed: {r['error']}", ""]
    base = r["baseline_healthz"]
    rows = [
        ["`GET /healthz` (baseline: the HTTP round trip)", base["ok"], pcts(base["latency_ms"]),
         _cpu(base.get("cpu_pct"))],
        *[
            [f"`{name}`", c["ok"], pcts(c["latency_ms"]), _cpu(c.get("cpu_pct"))]
            for name, c in r["cases"].items()
        ],
        ["store call in-process (SQL only), last 30 days", r["store_call_30_days_ms"]["n"],
         pcts(r["store_call_30_days_ms"]), "-"],
    ]  # fmt: skip
    return [
        f"### 7. Analytics summary over {r['recoveries']:,} recoveries",
        "",
        f"One merchant's {r['recoveries']:,} recoveries over 90 days (and another merchant's "
        f"{r['other_merchant_recoveries']:,}), written by SQL in {r['seed_seconds']} s; "
        f"requests one at a time. All 90 days: {r.get('figures_all_90_days')}.",
        "",
        *_table(["request", "ok", "latency p50 / p99 / max", "CPU %"], rows),
    ]


def _notify(r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return ["### 8. Customers and merchants told", "", f"failed: {r['error']}", ""]
    e, w, p = r["emails"], r["webhooks"], r["posted"]
    rows = [
        ["e-mail: decision to the SMTP sink", f"{e['sent']}/{e['notifications']}",
         pcts(e["lag_ms"])],
        ["webhook: event to the receiver (every type)", f"{w['delivered']}/{w['events']}",
         pcts(w["lag_ms"])],
        *[[f"webhook `{t}`", lag["n"], pcts(lag)] for t, lag in w["lag_ms_by_type"].items()],
        ["of which: event committed to its endpoint's workflow woken (outbox)",
         w["outbox_lag_ms"]["n"], pcts(w["outbox_lag_ms"])],
        ["of which: event committed to the first try (worker)", w["event_to_first_try_ms"]["n"],
         pcts(w["event_to_first_try_ms"])],
    ]  # fmt: skip
    return [
        f"### 8. Customers and merchants told, at {fmt(r['offered_per_second'])} hard declines/s",
        "",
        f"{p['ok']}/{p['sent']} posted at {fmt(p['per_second'])}/s (offered "
        f"{fmt(r['offered_per_second'])}/s), POST p50 / p99 {pcts(p['latency_ms'])}; all told: "
        f"{r['settled']} after {r['seconds']} s; repeated webhook deliveries "
        f"{w['repeated_deliveries']}; CPU % {_cpu(r.get('cpu_pct'))}.",
        "",
        *_table(["what", "n", "lag p50 / p99 / max"], rows),
    ]


def main() -> None:
    """`python -m bench.report RESULTS.json`: print the markdown of an earlier run."""
    import json
    import sys

    for path in sys.argv[1:]:
        with open(path) as f:
            print(render(json.load(f)))


if __name__ == "__main__":
    main()
