"""Reserving attempts on a card in Postgres: counted per card across ids, once per attempt
key, and never past a limit when recoveries of one card check at once (gathered here; the
lock per card is what serialises them, which this test cannot force)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from recovery.models import CardIdentity
from recovery.policy import RetryPolicy, card_window
from recovery.store import Store

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
ONE_PER_MONTH = RetryPolicy(card_attempts_per_30_days=1)


async def reserve(store: Store, merchant: str, card: CardIdentity, key: str, at: datetime):
    return await store.reserve_card_attempt(
        merchant, card, key, at, lambda seen: card_window(ONE_PER_MONTH, card.brand, seen, at)
    )


async def test_checks_of_one_card_reserve_one_attempt_per_window(
    store: Store, merchant: str
) -> None:
    card = CardIdentity(key=f"stripe:fingerprint:{uuid.uuid4().hex}", brand="visa")
    keys = [f"rec_{i}:attempt:1" for i in range(8)]
    windows = await asyncio.gather(*(reserve(store, merchant, card, k, NOW) for k in keys))
    allowed = [k for k, w in zip(keys, windows, strict=True) if w.not_before is None]
    assert len(allowed) == 1
    assert all(w.not_before == NOW + timedelta(days=30) for w in windows if w.not_before)
    # a retried check of the reserved attempt stands; the others still wait
    again = await reserve(store, merchant, card, allowed[0], NOW)
    assert again.not_before is None
    other = next(k for k in keys if k not in allowed)
    assert (await reserve(store, merchant, card, other, NOW)).not_before is not None
    # the same card under another payment-method id is the same card; another merchant not
    same = card.model_copy(update={"payment_method_id": "pm_other"})
    assert (await reserve(store, merchant, same, "rec_x:attempt:1", NOW)).not_before
    elsewhere = f"mer_{uuid.uuid4().hex[:10]}"
    await store.ensure_merchant(elsewhere, "Other")
    assert (await reserve(store, elsewhere, card, "rec_y:attempt:1", NOW)).not_before is None
    # 30 days on, the window allows the next one
    later = NOW + timedelta(days=30)
    assert (await reserve(store, merchant, card, other, later)).not_before is None
