"""A guard in front of every route: no NUL character (U+0000) gets in, no body larger than
`MAX_BODY_BYTES`, and no body that takes longer than its timeout to arrive (408).

PostgreSQL cannot store NUL in `text` or `jsonb`, so a NUL anywhere in a path, query string
or JSON body is refused here with a clear 4xx, before it can reach a query, a workflow
signal (where it would poison the workflow's later writes) or the audit log.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from api.errors import envelope

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY_BYTES = 1024 * 1024


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(envelope(code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _has_body(scope: Scope) -> bool:
    """Whether the request announces a body (HTTP/1.1: a Transfer-Encoding, or a
    Content-Length other than 0); without one, uvicorn hands the app an empty body."""
    return any(
        name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0")
        for name, value in scope.get("headers", ())
    )


class RejectNul:
    """Pure ASGI (no task per request, no copy of the request): a request without a body
    goes straight through; a body is read once, checked, and handed on as it came."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        body_timeout_seconds: float = 10.0,
    ) -> None:
        self.app = app
        self.body_timeout = body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # unquote_to_bytes() makes a NUL only of a raw one or of "%00"
        raw_path = scope.get("raw_path") or scope.get("path", "").encode()
        query = scope.get("query_string", b"")
        if b"\x00" in raw_path or b"%00" in raw_path or b"\x00" in query or b"%00" in query:
            return await _refuse(send, 400, "bad_request", "the URL contains a NUL character")
        if not _has_body(scope):
            return await self.app(scope, receive, send)
        messages: list[Message] = []
        size = 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                return await _refuse(
                    send,
                    408,
                    "request_timeout",
                    f"the body must arrive within {self.body_timeout:g} seconds",
                )
            messages.append(message)
            size += len(message.get("body", b""))
            if size > MAX_BODY_BYTES:
                return await _refuse(
                    send, 413, "payload_too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes"
                )
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        if len(messages) == 1:
            body = messages[0].get("body", b"")
        else:  # chunks: a NUL escape may straddle two of them
            body = b"".join(m.get("body", b"") for m in messages)
        if b"\x00" in body or b"\\u0000" in body:
            return await _refuse(
                send, 422, "validation_error", "strings must not contain NUL characters (U+0000)"
            )
        pending = iter(messages)

        async def replay() -> Message:
            return next(pending, None) or await receive()

        await self.app(scope, replay, send)
