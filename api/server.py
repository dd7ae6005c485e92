"""The API's HTTP server: uvicorn, configured for the public internet.

h11 (not httptools, which has no limit) parses requests, so a request line plus headers
larger than `MAX_HEADER_BYTES` is refused before it reaches the app; the refusal is in our
error envelope too. Idle keep-alive connections close after `KEEP_ALIVE_SECONDS`; a body
that does not arrive in time is the body guard's (`api.guards`) to refuse.
"""

from __future__ import annotations

import json
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.errors import envelope

MAX_HEADER_BYTES = 32 * 1024
KEEP_ALIVE_SECONDS = 5


class EnvelopeH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering a request it cannot parse in the error envelope."""

    def send_400_response(self, msg: str) -> None:
        message = (
            "invalid HTTP request (the request line and headers are "
            f"limited to {MAX_HEADER_BYTES} bytes)"
        )
        body = json.dumps(envelope("bad_request", message)).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()


def uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        http=EnvelopeH11Protocol,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
