"""The merchant webhook delivery activities: a pass over an endpoint's queue (signed POSTs,
each logged, a failed one queued again with backoff: `WebhookEndpointWorkflow`), and one try
of one delivery retried by Temporal (`WebhookDeliveryWorkflow`, for runs started before
deliveries went per endpoint)."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from temporalio import activity
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from recovery import webhook_urls
from recovery.activity_defs import WebhookActivityDefs
from recovery.constants import (
    WEBHOOK_PASS_CONCURRENCY,
    WEBHOOK_PASS_SECONDS,
    WEBHOOK_PASS_SIZE,
    WEBHOOK_RETRY_FOR,
    WEBHOOK_RETRY_POLICY,
)
from recovery.logs import bind
from recovery.merchant_events import EventType
from recovery.models import (
    WebhookDeliveryRequest,
    WebhookDeliveryResult,
    WebhookPass,
    WebhookPassRequest,
)
from recovery.retry_links import url_of
from recovery.settings import Settings
from recovery.store import DeliveryTarget, QueuedDelivery, Store, TryDone
from recovery.webhook_signing import SecretSealer, signature_header

log = logging.getLogger("recovery.webhooks")

USER_AGENT = "payment-recovery-webhooks/1"


def envelope(target: DeliveryTarget, data: dict[str, Any]) -> bytes:
    """The body of a delivery: the same bytes on every try of one event."""
    created = target.event_created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    event = {"id": target.event_id, "type": target.event_type, "created_at": created, "data": data}
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def retry_interval(policy: RetryPolicy, tries: int) -> timedelta:
    """The wait after the `tries`-th failed try under `policy` (Temporal's schedule: the
    initial interval, times the coefficient per try, at most the maximum)."""
    # in float seconds: the doubling outgrows any timedelta after ~45 tries
    seconds = policy.initial_interval.total_seconds() * policy.backoff_coefficient ** min(
        tries - 1, 64
    )
    if policy.maximum_interval is not None:
        seconds = min(seconds, policy.maximum_interval.total_seconds())
    return timedelta(seconds=seconds)


def next_retry_at(info: activity.Info, now: datetime, tried_for: timedelta) -> datetime | None:
    """When Temporal makes the next try after this one (which took `tried_for`) fails; None
    when this one is the last. Time since the first try is the server's (the schedule is
    its), the answer is on our clock."""
    policy = info.retry_policy or WEBHOOK_RETRY_POLICY  # older servers do not send it
    interval = retry_interval(policy, info.attempt)
    if info.schedule_to_close_timeout is not None:
        elapsed = info.started_time - info.scheduled_time + tried_for
        if elapsed + interval >= info.schedule_to_close_timeout:
            return None
    return now + interval


def next_try_at(delivery: QueuedDelivery, now: datetime) -> datetime | None:
    """When a queued delivery whose try (in a pass at `now`) failed is tried next: on the
    same schedule as Temporal's retries of a single delivery (WEBHOOK_RETRY_POLICY), as long
    as that is within WEBHOOK_RETRY_FOR of its first try; None when this was its last."""
    at = now + retry_interval(WEBHOOK_RETRY_POLICY, delivery.tries + 1)
    return None if at - (delivery.first_try_at or now) >= WEBHOOK_RETRY_FOR else at


class WebhookActivities(WebhookActivityDefs):
    """Built by the worker with the store and settings; each method is one activity."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._sealer = SecretSealer(settings.credentials_keys())
        self._development = settings.environment == "development"
        self._timeout = settings.webhook_timeout_seconds
        self._tls = ssl.create_default_context()

    @activity.defn(name="deliver_queued_webhooks")
    async def deliver_queued_webhooks(self, req: WebhookPassRequest) -> WebhookPass:
        """Rounds of up to WEBHOOK_PASS_SIZE deliveries, for as long as more are due and
        WEBHOOK_PASS_SECONDS allow: a backlog drains without a workflow task between every
        round. The pass's clock is the workflow's `now` plus the time the pass has taken."""
        bind(merchant_id=req.merchant_id)
        started = time.monotonic()
        passed = WebhookPass(more_due=True)
        while passed.more_due and time.monotonic() - started < WEBHOOK_PASS_SECONDS:
            now = req.now + timedelta(seconds=time.monotonic() - started)
            due = await self._store.webhook_deliveries_due(
                req.merchant_id, req.endpoint_id, WEBHOOK_PASS_SIZE, now
            )
            if due.deliveries is None:
                log.info("webhooks to %s: endpoint deleted, its queue dropped", req.endpoint_id)
                return WebhookPass(endpoint_deleted=True)
            signing = [
                self._sealer.open(req.merchant_id, req.endpoint_id, s)
                for s in (due.deliveries[0].target.secrets if due.deliveries else ())
            ]
            done = await self._send_all(list(due.deliveries), signing, now)
            more_due, next_at = await self._store.record_webhook_tries(req.endpoint_id, done, now)
            passed = WebhookPass(
                tried=passed.tried + len(done),
                delivered=passed.delivered + sum(d.delivered for d in done),
                gave_up=passed.gave_up
                + sum(not d.delivered and d.next_try_at is None for d in done),
                more_due=more_due,
                next_try_at=next_at,
            )
        return passed

    async def _send_all(
        self, deliveries: list[QueuedDelivery], signing: list[str], now: datetime
    ) -> list[TryDone]:
        """A pass's POSTs, WEBHOOK_PASS_CONCURRENCY at once, all to the one endpoint: its URL
        checked and resolved once, and one client whose connections are kept between them."""
        if not deliveries:
            return []
        url = deliveries[0].target.url
        try:
            dest = await webhook_urls.resolve(url, development=self._development)
        except webhook_urls.UrlNotAllowed as e:
            reason = f"not sent: the URL {e.message}"

            async def refuse(_target: DeliveryTarget, _body: bytes) -> tuple[int | None, str]:
                return None, reason

            return [await self._try(d, now, refuse) for d in deliveries]
        at_once = asyncio.Semaphore(WEBHOOK_PASS_CONCURRENCY)
        async with self._client() as client:

            async def post(target: DeliveryTarget, body: bytes) -> tuple[int | None, str | None]:
                return await self._post_to(client, dest, target, body, signing)

            async def one(delivery: QueuedDelivery) -> TryDone:
                async with at_once:
                    return await self._try(delivery, now, post)

            return list(await asyncio.gather(*(one(d) for d in deliveries)))

    async def _try(
        self,
        delivery: QueuedDelivery,
        now: datetime,
        post: Callable[[DeliveryTarget, bytes], Awaitable[tuple[int | None, str | None]]],
    ) -> TryDone:
        """One POST of a queued delivery, and what comes of it (logged by the caller); a
        failed one is due again counting from the pass's `now`."""
        target = delivery.target
        body = envelope(target, await self._data(target))
        attempted_at = datetime.now(UTC)
        started = time.monotonic()
        status_code, error = await post(target, body)
        delivered = status_code is not None and 200 <= status_code < 300
        log.info(
            "webhook %s (%s) to %s, try %d: %s",
            target.event_id,
            target.event_type,
            target.endpoint_id,
            delivery.tries + 1,
            status_code if delivered else error,
        )
        return TryDone(
            delivery=delivery,
            attempted_at=attempted_at,
            status_code=status_code,
            error=error,
            duration_ms=int((time.monotonic() - started) * 1000),
            delivered=delivered,
            next_try_at=None if delivered else next_try_at(delivery, now),
        )

    @activity.defn(name="deliver_webhook")
    async def deliver_webhook(self, req: WebhookDeliveryRequest) -> WebhookDeliveryResult:
        info = activity.info()
        bind(merchant_id=req.merchant_id)
        target = await self._store.webhook_delivery_target(
            req.merchant_id, req.endpoint_id, req.event_id
        )
        if target is None:
            log.info("webhook %s to %s: the event is gone", req.event_id, req.endpoint_id)
            return WebhookDeliveryResult(status="event_gone", attempts=info.attempt - 1)
        if target.deleted:
            log.info("webhook %s to %s: endpoint deleted", req.event_id, req.endpoint_id)
            return WebhookDeliveryResult(status="endpoint_deleted", attempts=info.attempt - 1)
        body = envelope(target, await self._data(target))
        signing = [self._sealer.open(req.merchant_id, req.endpoint_id, s) for s in target.secrets]
        attempted_at = datetime.now(UTC)
        started = time.monotonic()
        status_code, error = await self._post(target, body, signing)
        delivered = status_code is not None and 200 <= status_code < 300
        await self._store.record_webhook_delivery(
            req,
            attempt=info.attempt,
            attempted_at=attempted_at,
            status_code=status_code,
            error=error,
            duration_ms=int((time.monotonic() - started) * 1000),
            next_retry_at=None
            if delivered
            else next_retry_at(
                info, datetime.now(UTC), timedelta(seconds=time.monotonic() - started)
            ),
        )
        log.info(
            "webhook %s (%s) to %s, try %d: %s",
            req.event_id,
            target.event_type,
            req.endpoint_id,
            info.attempt,
            status_code if delivered else error,
        )
        if not delivered:
            # the endpoint's trouble, not ours: logged at debug by the SDK, kept in our log
            raise ApplicationError(
                error or "not delivered",
                type="WebhookNotDelivered",
                category=ApplicationErrorCategory.BENIGN,
            )
        return WebhookDeliveryResult(
            status="delivered", status_code=status_code, attempts=info.attempt
        )

    async def _data(self, target: DeliveryTarget) -> dict[str, Any]:
        """The event's `data`; a link's URL is built as it is sent (its token is never
        stored), the same on every try."""
        data = target.payload
        if target.event_type == EventType.LINK_ISSUED:
            view = await self._store.link_page(data["link"]["link_id"])
            if view is not None:
                data = data | {"link": data["link"] | {"url": url_of(view, self._settings)}}
        return data

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            verify=self._tls,
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: we connect where we checked
            timeout=self._timeout,
            limits=httpx.Limits(max_connections=WEBHOOK_PASS_CONCURRENCY),
        )

    async def _post(
        self, target: DeliveryTarget, body: bytes, signing: list[str]
    ) -> tuple[int | None, str | None]:
        """One POST to an address the URL's check allowed, on a client of its own."""
        try:
            dest = await webhook_urls.resolve(target.url, development=self._development)
        except webhook_urls.UrlNotAllowed as e:
            return None, f"not sent: the URL {e.message}"
        async with self._client() as client:
            return await self._post_to(client, dest, target, body, signing)

    async def _post_to(
        self,
        client: httpx.AsyncClient,
        dest: webhook_urls.Destination,
        target: DeliveryTarget,
        body: bytes,
        signing: list[str],
    ) -> tuple[int | None, str | None]:
        """One POST to `dest` (the URL checked, its addresses allowed): (status code, error)."""
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "host": dest.host_header,
            "webhook-id": target.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(signing, target.event_id, timestamp, body),
        }
        error = "no address to connect to"
        try:
            async with asyncio.timeout(self._timeout):
                for address in dest.addresses:
                    try:
                        async with client.stream(
                            "POST",
                            dest.url_for(address),
                            content=body,
                            headers=headers,
                            extensions={"sni_hostname": dest.host},
                        ) as answer:
                            code = answer.status_code
                            return code, None if 200 <= code < 300 else f"HTTP {code}"
                    except httpx.ConnectError as e:  # the next address, if there is one
                        error = f"could not connect to {address}: {e}"
        except (TimeoutError, httpx.TimeoutException):
            return None, f"timeout: no answer within {self._timeout:g} s"
        except httpx.HTTPError as e:
            return None, f"{type(e).__name__}: {e}"[:500]
        return None, error[:500]
