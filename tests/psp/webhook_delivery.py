"""Webhook delivery as Stripe and Razorpay do it, for end-to-end tests (never the internet).

Both PSPs deliver at least once and say so: an event that does not get a 2xx answer is
retried with an exponential backoff (Razorpay "for 24 hours after event creation", Stripe
"for up to three days"), the same event may arrive more than once, events are not delivered
in the order they happened ("Do not rely on the order of events", Razorpay's webhook best
practices; "Stripe doesn't guarantee delivery of events in the order in which they're
generated", docs.stripe.com/webhooks), and an endpoint that keeps failing is disabled
(Razorpay after 24 hours of failures; Stripe after days), after which nothing more comes.

`WebhookDelivery` plays that against one endpoint of ours, with its pauses scaled down to
milliseconds: queue events as they happen (`queue`), then `deliver` sends them shuffled,
some twice, each retried until it gets a 2xx (or its tries run out), and stops for good once
`disable_after` tries in a row have failed. `unreachable` makes the next tries fail as a
network error would, before they reach our endpoint. Every try is in `log`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Post = Callable[[bytes, dict[str, str]], Awaitable[int]]
"""Send one body with its headers to our endpoint; the HTTP status it answered."""


@dataclass
class Try:
    label: str
    status: int | None  # None: it never reached the endpoint


@dataclass
class WebhookDelivery:
    post: Post
    rng: random.Random
    duplicate_rate: float = 0.5
    """How often a delivered event is delivered once more, later."""
    max_tries: int = 8
    disable_after: int = 20
    """Failed tries in a row after which the PSP disables the endpoint."""
    backoff: float = 0.01
    """Seconds before the first retry; doubling (a minute, scaled down)."""
    unreachable: int = 0
    """The next this many tries fail before reaching the endpoint (a network failure)."""
    log: list[Try] = field(default_factory=list)
    disabled: bool = False
    queued: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    """(label, body, headers) of the events not delivered yet."""
    _failures_in_a_row: int = 0

    def queue(self, label: str, body: bytes, headers: dict[str, str]) -> None:
        """An event happened at the PSP; it will be delivered by `deliver`."""
        self.queued.append((label, body, headers))

    async def deliver(self) -> None:
        """Deliver what is queued: shuffled, some twice, retried with backoff."""
        batch = list(self.queued)
        self.queued.clear()
        batch += [event for event in batch if self.rng.random() < self.duplicate_rate]
        self.rng.shuffle(batch)
        for label, body, headers in batch:
            await self._deliver_one(label, body, headers)

    async def _deliver_one(self, label: str, body: bytes, headers: dict[str, str]) -> None:
        pause = self.backoff
        for _ in range(self.max_tries):
            if self.disabled:
                return
            status: int | None = None
            if self.unreachable > 0:
                self.unreachable -= 1
            else:
                status = await self.post(body, headers)
            self.log.append(Try(label, status))
            if status is not None and 200 <= status < 300:
                self._failures_in_a_row = 0
                return
            self._failures_in_a_row += 1
            if self._failures_in_a_row >= self.disable_after:
                self.disabled = True
                return
            await asyncio.sleep(pause)
            pause *= 2

    def answered(self, label: str) -> list[int]:
        """The statuses our endpoint answered for `label`, try by try."""
        return [t.status for t in self.log if t.label == label and t.status is not None]
