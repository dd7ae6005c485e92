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
from urllib.parse import unquote_to_bytes

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


class RejectNul:
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
        raw_path = scope.get("raw_path") or scope.get("path", "").encode()
        if b"\x00" in unquote_to_bytes(raw_path) + unquote_to_bytes(scope.get("query_string", b"")):
            return await _refuse(send, 400, "bad_request", "the URL contains a NUL character")
        messages: list[Message] = []
        body = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
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
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                return await _refuse(
                    send, 413, "payload_too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes"
                )
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        if b"\x00" in body or b"\\u0000" in body:
            return await _refuse(
                send, 422, "validation_error", "strings must not contain NUL characters (U+0000)"
            )

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
