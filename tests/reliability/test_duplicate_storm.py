"""A duplicate storm: thousands of ingest posts where most repeat an Idempotency-Key or an
event id, many of them at the same moment on the same key.

Exactly one event row and outbox row per distinct event, each delivered to its payment's
workflow, and one workflow per payment; per key, one first answer and only replays of it
(`Idempotent-Replayed: true`), or 409 `idempotency_key_reused` for a different body; per
event id, one 202 and otherwise `"duplicate": true`.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import pytest

from recovery import constants as names
from recovery.store import Store
from tests.helpers import INGEST, eventually, failure_body, is_envelope, running_stack
from tests.integration.servers import TemporalDevServer
from tests.reliability.support import delivered_events, fetch_histories, record

POSTS = 2000
CONCURRENCY = 50
EVENTS = 400
HOT_KEYS = 8  # keys posted BURST times at once, a share of them with another body
BURST = 40


@dataclass
class Post:
    event_id: str
    key: str | None
    variant: str  # "a" the event's body, "b" the same event id with another amount
    body: dict[str, Any]
    status: int = 0
    replayed: bool = False
    answer: Any = None


@pytest.mark.heavy
async def test_duplicate_storm(
    store: Store, pg_dsn: str, temporal_server: TemporalDevServer
) -> None:
    seed = int(os.environ.get("RELIABILITY_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    async with running_stack(store, pg_dsn, temporal_server.address, worker=False) as api:
        # The distinct events: a quarter of them later failures of a payment seen before.
        bodies: dict[str, dict[str, Any]] = {}
        keys: dict[str, str | None] = {}
        refs: list[str] = []
        for _ in range(EVENTS):
            body = failure_body(rng.choice(refs) if refs and rng.random() < 0.25 else None)
            refs.append(body["payment_ref"])
            bodies[body["event_id"]] = body
            keys[body["event_id"]] = f"k-{uuid.uuid4()}" if rng.random() < 0.75 else None
        keyed = [e for e, k in keys.items() if k]

        def post(event_id: str, key: str | None, variant: str = "a") -> Post:
            body = dict(bodies[event_id])
            if variant == "b":
                body["amount"] += 1
            return Post(event_id, key, variant, body)

        hot: list[Post] = []
        for event_id in rng.sample(keyed, HOT_KEYS):  # bursts on one key, sent first
            for _ in range(BURST):
                hot.append(post(event_id, keys[event_id], "b" if rng.random() < 0.1 else "a"))
        rest = [post(e, keys[e]) for e in bodies]  # every distinct event at least once
        weights = [rng.paretovariate(1.2) for _ in bodies]  # a few events get most repeats
        while len(hot) + len(rest) < POSTS:
            (event_id,) = rng.choices(list(bodies), weights)
            key, roll = keys[event_id], rng.random()
            if key and roll < 0.7:
                rest.append(post(event_id, key))  # a replay (or the first)
            elif key and roll < 0.8:
                rest.append(post(event_id, key, "b"))  # same key, another body
            elif roll < 0.9:
                rest.append(post(event_id, None))  # same event id, no key
            else:
                rest.append(post(event_id, f"k-{uuid.uuid4()}"))  # same event id, new key
        rng.shuffle(rest)
        posts = hot + rest

        gate = asyncio.Semaphore(CONCURRENCY)

        async def send(p: Post) -> None:
            headers = api.auth() if p.key is None else {"Idempotency-Key": p.key, **api.auth()}
            async with gate:
                r = await api.http.post(INGEST, json=p.body, headers=headers)
            p.status, p.answer = r.status_code, r.json()
            p.replayed = r.headers.get("Idempotent-Replayed") == "true"

        started = time.monotonic()
        await asyncio.gather(*(send(p) for p in posts))
        took = time.monotonic() - started

        statuses = Counter(p.status for p in posts)
        assert set(statuses) <= {200, 202, 409}, statuses

        # Per key: one first answer, replays of it, 409 for any other body.
        by_key: dict[str, list[Post]] = defaultdict(list)
        for p in posts:
            if p.key:
                by_key[p.key].append(p)
        for key, ps in by_key.items():
            answered = [p for p in ps if p.status != 409]
            assert answered, f"{key}: every post refused"
            winner = answered[0].variant
            assert all(p.variant == winner for p in answered), key
            assert sum(not p.replayed for p in answered) == 1, [(p.status, p.replayed) for p in ps]
            first = answered[0]
            assert all((p.status, p.answer) == (first.status, first.answer) for p in answered), [
                (p.status, p.answer) for p in answered
            ]
            for p in ps:
                if p.variant != winner:
                    assert p.status == 409 and not p.replayed, (key, p.status)
                    assert is_envelope(p.answer), p.answer
                    assert p.answer["error"]["code"] == "idempotency_key_reused"

        # Per event id: exactly one 202 that is not a replay; everything else a duplicate.
        by_event: dict[str, list[Post]] = defaultdict(list)
        for p in posts:
            by_event[p.event_id].append(p)
        assert set(by_event) == set(bodies)
        for event_id, ps in by_event.items():
            answered = [p for p in ps if p.status != 409]
            firsts = [p for p in answered if p.status == 202 and not p.replayed]
            assert len(firsts) == 1, (event_id, [(p.status, p.replayed) for p in ps])
            for p in answered:
                if not p.replayed and p is not firsts[0]:
                    assert p.status == 200 and p.answer["duplicate"] is True, p.answer
            assert len({p.answer["recovery_id"] for p in answered}) == 1, event_id

        pool = api.store.pool
        rows = await pool.fetch(
            "SELECT event_id FROM payment_events WHERE merchant_id = $1", api.merchant_id
        )
        assert sorted(r["event_id"] for r in rows) == sorted(bodies)
        outbox = await pool.fetch(
            "SELECT payload->>'event_id' AS e FROM outbox WHERE payload->>'merchant_id' = $1",
            api.merchant_id,
        )
        assert sorted(r["e"] for r in outbox) == sorted(bodies)
        txs = await pool.fetchval(
            "SELECT count(*) FROM transactions WHERE merchant_id = $1", api.merchant_id
        )
        assert txs == len(set(refs))

        # Temporal: one workflow per payment; every event in its payment's workflow, once.
        want = {
            e: names.workflow_id_for(api.merchant_id, b["payment_ref"]) for e, b in bodies.items()
        }

        async def all_delivered() -> dict[str, list[str]]:
            where = await delivered_events(api.temporal, api.merchant_id)
            return where if set(where) >= set(want) else {}

        where = await eventually(all_delivered, within=90, what="events delivered", interval=1)
        assert set(where) == set(want)
        # Each event in its own payment's workflow. The relay delivers at least once (a
        # signal-with-start Temporal took but answered after the relay's RPC timeout is sent
        # again); the workflow ignores an event id it has seen.
        misplaced = {e: wfs for e, wfs in where.items() if set(wfs) != {want[e]}}
        assert not misplaced, misplaced
        redelivered = sum(len(wfs) - 1 for wfs in where.values())
        workflows = await fetch_histories(api.temporal, f'MerchantId="{api.merchant_id}"')
        assert sorted(h.workflow_id for h in workflows) == sorted(set(want.values()))

        record(
            "duplicate_storm",
            seed=seed,
            posts=len(posts),
            concurrency=CONCURRENCY,
            distinct_events=len(bodies),
            payments=len(set(refs)),
            workflows=len(workflows),
            accepted_202=statuses[202] - sum(p.replayed for p in posts if p.status == 202),
            replayed=sum(p.replayed for p in posts),
            duplicate_200=sum(p.status == 200 and not p.replayed for p in posts),
            conflicts_409=statuses[409],
            max_concurrent_same_key=BURST,
            posts_per_s=round(len(posts) / took),
            redelivered_signals=redelivered,
            events_lost=len(set(want) - set(where)),
        )
