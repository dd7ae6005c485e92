"""Stripe: `adapter` makes the calls (the official SDK's async `StripeClient`),
`transformers` maps Stripe's statuses, objects and errors to ours and shapes what we send,
`webhooks` verifies and reads what Stripe sends us."""

from recovery.psp.stripe.adapter import StripeAdapter
from recovery.psp.stripe.webhooks import verify_webhook

__all__ = ["StripeAdapter", "verify_webhook"]
