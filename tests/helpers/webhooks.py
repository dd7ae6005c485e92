"""A merchant's webhook endpoint on 127.0.0.1 for the tests: it records every request and
answers as told (a status code, or an answer that comes late), in a thread of its own; and an
endpoint with an event to deliver to it, made through the store."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from recovery.models import RecoveryState
from recovery.settings import Settings
from recovery.store import Store
from recovery.webhook_signing import SecretSealer, new_secret
from tests.helpers.bodies import failure_body
from tests.helpers.workflows import ingest


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic()


@dataclass(frozen=True)
class Late:
    """Answer `status` after `seconds` (longer than the sender waits: a timeout)."""

    seconds: float
    status: int = 200


class WebhookReceiver:
    def __init__(self, answers: list[int | Late] | None = None, default: int = 200) -> None:
        self.answers = list(answers or [])  # one per request, in order; then `default`
        self.default = default
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks"

    def of_type(self, event_type: str) -> list[Received]:

        return [r for r in self.received if json.loads(r.body)["type"] == event_type]

    def _answer(self, request: Received) -> int | Late:
        with self._lock:
            self.received.append(request)
            return self.answers.pop(0) if self.answers else self.default

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                answer = receiver._answer(
                    Received(
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.monotonic(),
                    )
                )
                if isinstance(answer, Late):
                    time.sleep(answer.seconds)
                    answer = answer.status
                try:
                    self.send_response(answer)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@contextmanager
def webhook_receiver(
    answers: list[int | Late] | None = None, default: int = 200
) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(answers, default)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


async def endpoint_with_event(
    store: Store, merchant_id: str, url: str, settings: Settings
) -> tuple[str, str, str]:
    """An endpoint of the merchant at `url` and one event of theirs (a recovery's
    `recovery.started`, written by the store as a worker writes it): (endpoint id, event
    id, secret). Its delivery is queued (`webhook_queue`, with the outbox row that wakes the
    endpoint's workflow); start that workflow, or relay the row, to send it."""
    endpoint_id, secret = f"we_{uuid.uuid4().hex}", new_secret()
    await store.create_webhook_endpoint(
        endpoint_id=endpoint_id,
        merchant_id=merchant_id,
        url=url,
        description=None,
        events=None,
        secret=SecretSealer(settings.credentials_keys()).seal(merchant_id, endpoint_id, secret),
    )
    return endpoint_id, await recovery_started(store, merchant_id), secret


async def recovery_started(store: Store, merchant_id: str) -> str:
    """A new recovery's `recovery.started` event, as a worker writes it (queued for each of
    the merchant's endpoints): its id."""
    body = failure_body(f"hooks-{uuid.uuid4().hex[:12]}")
    res = await ingest(store, merchant_id, body)
    recovery_id = res.body["recovery_id"]
    await store.save_state(
        RecoveryState(
            merchant_id=merchant_id, payment_ref=body["payment_ref"], recovery_id=recovery_id
        )
    )
    event_id = await store.pool.fetchval(
        "SELECT id FROM merchant_events WHERE recovery_id = $1", recovery_id
    )
    return str(event_id)
