"""What the tests send: the ingest path and a valid failure body, and PSP webhook bodies
signed as Stripe and Razorpay sign them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

INGEST = "/v1/events/payment_failed"

# The environment's webhook secrets of the stacks with PSPs (`psp_api` in the integration
# tests); the signers below sign with them unless told otherwise.
STRIPE_WHSEC = "whsec_test_end_to_end_0123456789"
RAZORPAY_WHSEC = "razorpay-webhook-secret-e2e"


def failure_body(
    ref: str | None = None,
    *,
    pm: str = "pm_sim_succeed_on_3",
    decline_code: str | None = "insufficient_funds",
    code: str | None = "card_declined",
    message: str | None = "declined",
    event_id: str | None = None,
    amount: int = 4999,
    psp: str = "simulator",
    network_advice_code: str | None = None,
    psp_payment_id: str | None = None,
) -> dict[str, Any]:
    """A valid ingest body (JSON-ready dict)."""
    extra = {"psp_payment_id": psp_payment_id} if psp_payment_id else {}
    return extra | {
        "event_id": event_id or f"evt_{uuid.uuid4().hex[:12]}",
        "payment_ref": ref or f"order_{uuid.uuid4().hex[:10]}",
        "psp": psp,
        "amount": amount,
        "currency": "usd",
        "customer": {"id": "cus_1", "email": "a@example.com"},
        "payment_method": {"type": "card", "id": pm},
        "failure": {
            "code": code,
            "decline_code": decline_code,
            "message": message,
            "network_advice_code": network_advice_code,
        },
        "occurred_at": datetime.now(UTC).isoformat(),
        "metadata": {"plan": "pro"},
    }


# ---- Stripe -----------------------------------------------------------------------------------


def stripe_event(kind: str, obj: dict) -> dict:
    return {
        "id": f"evt_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": kind,
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }


def payment_intent(merchant_id: str, ref: str, status: str = "succeeded") -> dict:
    """A Stripe PaymentIntent of ours (its metadata names the merchant and the payment)."""
    return {
        "id": f"pi_{uuid.uuid4().hex[:16]}",
        "object": "payment_intent",
        "amount": 4999,
        "currency": "usd",
        "status": status,
        "metadata": {"merchant_id": merchant_id, "payment_ref": ref},
    }


def stripe_signed(
    event: dict, secret: str = STRIPE_WHSEC, at: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The raw body and headers of `event` as Stripe delivers it, signed with `secret`."""
    body = json.dumps(event).encode()
    t = at or int(time.time())
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={t},v1={sig}", "Content-Type": "application/json"}


# ---- Razorpay ---------------------------------------------------------------------------------


def razorpay_event(event: str, merchant_id: str, ref: str, payment_id: str) -> dict:
    status = "failed" if event == "payment.failed" else "captured"
    return {
        "entity": "event",
        "account_id": "acc_1",
        "event": event,
        "contains": ["payment"],
        "created_at": int(time.time()),
        "payload": {
            "payment": {
                "entity": {
                    "id": payment_id,
                    "entity": "payment",
                    "amount": 4999,
                    "currency": "INR",
                    "status": status,
                    "order_id": f"order_{payment_id}",
                    "method": "card",
                    "error_code": "BAD_REQUEST_ERROR" if status == "failed" else None,
                    "error_reason": "insufficient_funds" if status == "failed" else None,
                    "notes": {"merchant_id": merchant_id, "payment_ref": ref},
                    "created_at": int(time.time()),
                }
            }
        },
    }


def razorpay_signed(event: dict, secret: str, event_id: str) -> tuple[bytes, dict[str, str]]:
    """The raw body and headers of `event` as Razorpay delivers it, signed with `secret`."""
    raw = json.dumps(event).encode()
    return raw, {
        "X-Razorpay-Signature": hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest(),
        "X-Razorpay-Event-Id": event_id,
        "Content-Type": "application/json",
    }
