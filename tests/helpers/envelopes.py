"""The API's error envelope: `{"error": {"code": str, "message": str, "field"?: str}}`."""

from __future__ import annotations

from typing import Any

import httpx


def is_envelope(body: Any) -> bool:
    """`body` is an error envelope and nothing else."""
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return False
    err = body["error"]
    return (
        {"code", "message"} <= set(err) <= {"code", "message", "field"}
        and isinstance(err["code"], str)
        and bool(err["code"])
        and isinstance(err["message"], str)
        and bool(err["message"])
        and isinstance(err.get("field", ""), str)
    )


def assert_envelope(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """`r` is a `status` answer in the error envelope (with `code`, if given); its error."""
    assert r.status_code == status, r.text
    assert is_envelope(r.json()), r.text
    err: dict[str, Any] = r.json()["error"]
    if code:
        assert err["code"] == code, err
    return err
