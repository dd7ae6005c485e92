"""Failed-authentication rate limit: an in-process token bucket per client address.

Each failed authentication takes a token; an address with no token left gets 429 for every
failed authentication until one refills. A valid key is never refused (`api.deps`): many
clients share an address (NAT, an office), and one of them guessing must not lock the others
out. Keys are 256-bit random values, so the limit bounds the noise rather than guards them.
In-process means each API replica keeps its own buckets: behind N replicas an address gets up
to N times the rate.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict


class FailedAuthLimiter:
    def __init__(self, burst: int, refill_per_second: float, max_clients: int = 100_000) -> None:
        self._burst = float(burst)
        self._rate = refill_per_second
        self._max = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, client: str, now: float) -> float:
        tokens, at = self._buckets.get(client, (self._burst, now))
        return min(self._burst, tokens + (now - at) * self._rate)

    def retry_after(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None when it may now."""
        now = time.monotonic()
        tokens = self._tokens(client, now)
        if tokens >= 1:
            return None
        return max(1, math.ceil((1 - tokens) / self._rate))

    def failed(self, client: str) -> None:
        now = time.monotonic()
        self._buckets[client] = (self._tokens(client, now) - 1, now)
        self._buckets.move_to_end(client)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
