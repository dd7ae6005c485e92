"""How long customers and merchants wait to be told (issue 15's figures).

Hard declines (only the customer can fix them) are posted at a paced rate; each recovery
decides to wait for the customer, e-mails a retry link and sends its merchant webhooks. The
e-mails go to the bench stack's SMTP sink (`bench.stack`), the webhooks to a receiver in this
process (an endpoint of the merchant's on 127.0.0.1). Measured:

- e-mail: `customer_notifications.created_at` (written by the workflow's decision to tell
  the customer, as its wait begins) to the SMTP sink holding the message;
- webhook: `merchant_events.created_at` (written with the state change that causes it) to
  the receiver getting the POST (first try; retries are counted apart).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from bench import load
from bench.common import Ctx, failure_body, wait_for
from bench.stats import summary
from recovery.constants import OUTBOX_WAKE_WEBHOOKS
from scripts.stack import HOST, free_port


class Receiver:
    """A merchant's webhook receiver: answers 200 to every POST, noting when each
    `webhook-id` first arrived (and how many arrived more than once)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.first_seen: dict[str, float] = {}
        self.repeats = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hooks"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.time()
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                await reader.readexactly(int(headers.get("content-length", "0")))
                event_id = headers.get("webhook-id", "")
                if event_id in self.first_seen:
                    self.repeats += 1
                else:
                    self.first_seen[event_id] = now
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Receiver]:
        self._server = await asyncio.start_server(self._serve, HOST, self.port)
        try:
            yield self
        finally:
            self._server.close()
            await self._server.wait_closed()


async def bench_notify(ctx: Ctx) -> dict[str, Any]:
    """E-mail and merchant-webhook latency at a paced rate of hard declines."""
    rate, count = ctx.sizes.notify_rate, ctx.sizes.notify_recoveries
    sink = ctx.stack.mail_sink
    if sink is None:
        raise RuntimeError("the bench stack runs no SMTP sink")
    merchant_id, key = await ctx.merchant("notify")
    async with Receiver().running() as receiver:
        async with ctx.http(key, 8) as http:
            r = await http.post(
                "/v1/webhook_endpoints",
                json={"url": receiver.url, "description": "bench"},
            )
            if r.status_code != 201:
                raise RuntimeError(f"POST /v1/webhook_endpoints answered {r.status_code}")
        cpu = ctx.cpu()
        started = time.time()
        async with ctx.http(key, 32) as http:

            async def post(i: int) -> Any:
                body = failure_body(
                    f"ntf-{i}", pm=f"pm_sim_decline_lost_card@{i}", decline_code="lost_card"
                )
                return await http.post("/v1/events/payment_failed", json=body)

            res = await load.run_load(
                load.http_request(post, (202,)),
                count=count,
                concurrency=32,
                seconds=count / rate * 3,
                rate=rate,
            )

        async def all_told() -> bool:
            sent = await ctx.pool.fetchval(
                "SELECT count(*) FROM customer_notifications WHERE merchant_id = $1"
                " AND status <> 'queued'",
                merchant_id,
            )
            events = await ctx.pool.fetchval(
                "SELECT count(*) FROM merchant_events WHERE merchant_id = $1", merchant_id
            )
            return sent >= res.ok and len(receiver.first_seen) >= events > 0

        settled = await wait_for(ctx, all_told, within=max(120.0, count / rate * 10))
        cpu_used = cpu.done()
        kept = dict(sink.received_at)
        notes = await ctx.pool.fetch(
            "SELECT message_id, status, created_at FROM customer_notifications"
            " WHERE merchant_id = $1",
            merchant_id,
        )
        events = await ctx.pool.fetch(
            "SELECT id, type, created_at FROM merchant_events WHERE merchant_id = $1",
            merchant_id,
        )
        # where a webhook's time goes: the outbox (commit to its endpoint's workflow woken)
        # and the worker (woken to the first try's record)
        outbox_lag = await ctx.pool.fetch(
            "SELECT extract(epoch FROM delivered_at - created_at) AS s FROM outbox"
            " WHERE signal = $1 AND payload->>'merchant_id' = $2 AND delivered_at IS NOT NULL",
            OUTBOX_WAKE_WEBHOOKS,
            merchant_id,
        )
        first_try = await ctx.pool.fetch(
            "SELECT extract(epoch FROM min(d.attempted_at) - e.created_at) AS s"
            " FROM webhook_deliveries d JOIN merchant_events e ON e.id = d.event_id"
            " WHERE d.merchant_id = $1 GROUP BY e.id, e.created_at",
            merchant_id,
        )
    email_lag = [
        kept[n["message_id"]] - n["created_at"].timestamp()
        for n in notes
        if n["message_id"] in kept
    ]
    by_type: dict[str, list[float]] = {}
    for e in events:
        if (at := receiver.first_seen.get(e["id"])) is not None:
            by_type.setdefault(e["type"], []).append(at - e["created_at"].timestamp())
    all_hooks = [lag for lags in by_type.values() for lag in lags]
    return {
        "offered_per_second": rate,
        "posted": res.as_dict(),
        "settled": settled,
        "seconds": round(time.time() - started, 1),
        "emails": {
            "notifications": len(notes),
            "sent": sum(1 for n in notes if n["status"] == "sent"),
            "lag_ms": summary(email_lag, scale=1000),
        },
        "webhooks": {
            "events": len(events),
            "delivered": len(receiver.first_seen),
            "repeated_deliveries": receiver.repeats,
            "lag_ms": summary(all_hooks, scale=1000),
            "lag_ms_by_type": {t: summary(lags, scale=1000) for t, lags in sorted(by_type.items())},
            "outbox_lag_ms": summary([float(r["s"]) for r in outbox_lag], scale=1000),
            "event_to_first_try_ms": summary([float(r["s"]) for r in first_try], scale=1000),
        },
        "cpu_pct": cpu_used,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
