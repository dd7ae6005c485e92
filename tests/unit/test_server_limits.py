"""Limits of the API's HTTP server and body guard: an 8 MB header and a body that never
finishes each get a 4xx in the error envelope, and the server keeps serving. Both were
accepted before (httptools has no header limit; nothing timed a body out)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from api.guards import RejectNul
from api.server import uvicorn_config
from tests.helpers import eventually, free_port


async def _hello(scope: dict, receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def server() -> AsyncIterator[int]:
    import uvicorn

    port = free_port()
    config = uvicorn_config(_hello, "127.0.0.1", port)
    config.lifespan = "off"
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())

    async def started() -> bool:  # uvicorn offers no event for it
        return srv.started

    await eventually(started, what="uvicorn serving", interval=0.02)
    yield port
    srv.should_exit = True
    await task


async def _request(port: int, head: bytes) -> tuple[int, bytes]:
    """Send `head` in chunks while reading the answer (the server may answer and close
    before it has all of it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def write() -> None:
        with contextlib.suppress(ConnectionError):
            for i in range(0, len(head), 64 * 1024):
                writer.write(head[i : i + 64 * 1024])
                await writer.drain()

    writing = asyncio.create_task(write())
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            data += chunk
    writing.cancel()
    writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_an_8_mb_header_is_refused_in_the_envelope(server: int) -> None:
    huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 * 1024 * 1024) + b"\r\n\r\n"
    status, body = await _request(server, huge)
    assert status == 400
    assert set(json.loads(body)["error"]) >= {"code", "message"}
    # ... and it keeps serving
    assert (await _request(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))[
        0
    ] == 200


async def test_a_body_that_never_finishes_times_out_in_the_envelope() -> None:
    sent: list[dict] = []

    async def receive() -> dict:
        if not sent_first:
            sent_first.append(True)
            return {"type": "http.request", "body": b'{"a":', "more_body": True}
        await asyncio.sleep(3600)  # the rest never comes
        raise AssertionError

    async def send(message: dict) -> None:
        sent.append(message)

    sent_first: list[bool] = []
    guard = RejectNul(_hello, body_timeout_seconds=0.2)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [(b"transfer-encoding", b"chunked")],
    }
    await asyncio.wait_for(guard(scope, receive, send), 5)
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_timeout"


async def _through_guard(
    chunks: list[bytes], *, headers: list[tuple[bytes, bytes]], query: bytes = b""
) -> tuple[int, bytes, bytes]:
    """One request through the guard to an app that echoes the body it reads: (status, the
    answer's body, the body the app saw)."""
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    seen = bytearray()

    async def receive() -> dict:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def echo(scope: dict, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.extend(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": bytes(seen)})

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "raw_path": b"/",
        "query_string": query,
        "headers": headers,
    }
    await asyncio.wait_for(RejectNul(echo)(scope, receive, send), 5)
    return sent[0]["status"], sent[1]["body"], bytes(seen)


CHUNKED = [(b"transfer-encoding", b"chunked")]


async def test_the_guard_hands_a_clean_body_on_as_it_came() -> None:
    body = b'{"reason": "fine"}'
    assert await _through_guard([body[:5], body[5:]], headers=CHUNKED) == (200, body, body)
    length = [(b"content-length", str(len(body)).encode())]
    assert await _through_guard([body], headers=length) == (200, body, body)


async def test_the_guard_finds_a_nul_escape_across_chunks_and_in_the_url() -> None:
    status, answer, seen = await _through_guard([b'{"a": "x\\u00', b'00"}'], headers=CHUNKED)
    assert (status, json.loads(answer)["error"]["code"], seen) == (422, "validation_error", b"")
    status, _, _ = await _through_guard([b"{}"], headers=CHUNKED, query=b"q=%%00")
    assert status == 400
    status, _, _ = await _through_guard([b"{}"], headers=CHUNKED, query=b"q=%2500")  # "%00"
    assert status == 200


async def test_the_guard_counts_every_chunk_against_the_limit() -> None:
    chunk = b" " * (256 * 1024)
    status, answer, seen = await _through_guard([chunk] * 5, headers=CHUNKED)
    assert (status, json.loads(answer)["error"]["code"], seen) == (413, "payload_too_large", b"")


async def test_a_request_without_a_body_goes_straight_through() -> None:
    # nothing announced: the guard reads nothing (the app gets the server's own receive)
    status, _, seen = await _through_guard([], headers=[(b"content-length", b"0")])
    assert (status, seen) == (200, b"")
    status, _, seen = await _through_guard([], headers=[])
    assert (status, seen) == (200, b"")
