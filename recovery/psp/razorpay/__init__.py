"""Razorpay: `adapter` makes the calls (the official, synchronous SDK, each operation in a
thread of its own), `transformers` maps Razorpay's statuses, entities and errors to ours and
shapes what we send, `webhooks` verifies and reads what Razorpay sends us."""

from recovery.psp.razorpay.adapter import RazorpayAdapter
from recovery.psp.razorpay.webhooks import verify_webhook

__all__ = ["RazorpayAdapter", "verify_webhook"]
