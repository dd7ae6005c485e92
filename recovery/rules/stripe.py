"""Stripe's codes: the decline codes (``decline_code``) and error codes (``code``).

`STRIPE_DECLINE_CODES`: Stripe "Stripe decline codes" (docs.stripe.com/declines/codes):
every code of the "Card decline codes" table (50, including the deprecated
``do_not_try_again`` and ``try_again_later``) and of the "Local payment method decline
codes" table.

`STRIPE_ERROR_CODES`, `STRIPE_GENERIC_CODES`: Stripe "Error codes"
(docs.stripe.com/error-codes): the error ``code`` values a failed card or payment-method
charge can carry (card data, authentication, bank debits, provider timeouts, and the
account/configuration codes that make a charge impossible until the merchant acts). The
generic ones (``card_declined``, ``payment_intent_payment_attempt_failed``, ...) only say
"declined"; the decline code or the message says why, so they decide last.
"""

from __future__ import annotations

from collections.abc import Mapping

from recovery.rules.outcomes import (
    AUTH_REQUIRED,
    BLOCKED,
    CARD_DETAILS,
    CARD_RATE_LIMIT,
    DUPLICATE,
    FRAUD_RISK,
    FUNDS,
    HARD_DECLINE,
    MERCHANT_SETUP,
    NETWORK,
    OUTAGE,
    REVOKED,
    SOFT_DECLINE,
    UNKNOWN,
    Outcome,
)

STRIPE_DECLINE_CODES: Mapping[str, Outcome] = {
    # "Card decline codes"
    "authentication_required": AUTH_REQUIRED,
    "authentication_not_handled": AUTH_REQUIRED,
    "approve_with_id": SOFT_DECLINE,
    "call_issuer": SOFT_DECLINE,
    "card_not_supported": HARD_DECLINE,
    "card_velocity_exceeded": FUNDS,
    "currency_not_supported": HARD_DECLINE,
    "do_not_honor": SOFT_DECLINE,
    "do_not_try_again": HARD_DECLINE,
    "duplicate_transaction": DUPLICATE,
    "expired_card": CARD_DETAILS,
    "fraudulent": FRAUD_RISK,
    "generic_decline": SOFT_DECLINE,
    "incorrect_address": CARD_DETAILS,
    "incorrect_cvc": CARD_DETAILS,
    "incorrect_number": CARD_DETAILS,
    "incorrect_pin": CARD_DETAILS,
    "incorrect_zip": CARD_DETAILS,
    "insufficient_funds": FUNDS,
    "invalid_account": HARD_DECLINE,
    "invalid_amount": HARD_DECLINE,
    "invalid_cvc": CARD_DETAILS,
    "invalid_expiry_month": CARD_DETAILS,
    "invalid_expiry_year": CARD_DETAILS,
    "invalid_number": CARD_DETAILS,
    "invalid_pin": CARD_DETAILS,
    "issuer_not_available": OUTAGE,
    "lost_card": FRAUD_RISK,
    "merchant_blacklist": BLOCKED,
    "new_account_information_available": CARD_DETAILS,
    "no_action_taken": SOFT_DECLINE,
    "not_permitted": HARD_DECLINE,
    "offline_pin_required": AUTH_REQUIRED,
    "online_or_offline_pin_required": AUTH_REQUIRED,
    "pickup_card": FRAUD_RISK,
    "pin_try_exceeded": HARD_DECLINE,
    "processing_error": NETWORK,
    "reenter_transaction": NETWORK,
    "restricted_card": FRAUD_RISK,
    "revocation_of_all_authorizations": REVOKED,
    "revocation_of_authorization": REVOKED,
    "security_violation": FRAUD_RISK,
    "service_not_allowed": HARD_DECLINE,
    "stolen_card": FRAUD_RISK,
    "stop_payment_order": REVOKED,
    "testmode_decline": HARD_DECLINE,
    "transaction_not_allowed": HARD_DECLINE,
    "try_again_later": SOFT_DECLINE,
    "withdrawal_count_limit_exceeded": FUNDS,
    "mobile_device_authentication_required": AUTH_REQUIRED,
    # "Local payment method decline codes" (those not already above)
    "partner_generic_decline": SOFT_DECLINE,
    "invalid_customer_account": HARD_DECLINE,
    "payment_limit_exceeded": FUNDS,
    "invalid_billing_agreement": HARD_DECLINE,
    "invalid_business_account": MERCHANT_SETUP,
    "partner_high_risk_customer": FRAUD_RISK,
    "compliance_violation": BLOCKED,
    "payment_disputed": BLOCKED,
    "invalid_authorization": REVOKED,
    "invalid_payment_information": CARD_DETAILS,
    "partner_payment_not_found": UNKNOWN,
    "expired_payment_information": CARD_DETAILS,
}

STRIPE_ERROR_CODES: Mapping[str, Outcome] = {
    # card data
    "expired_card": CARD_DETAILS,
    "incorrect_address": CARD_DETAILS,
    "incorrect_cvc": CARD_DETAILS,
    "incorrect_number": CARD_DETAILS,
    "incorrect_zip": CARD_DETAILS,
    "invalid_cvc": CARD_DETAILS,
    "invalid_expiry_month": CARD_DETAILS,
    "invalid_expiry_year": CARD_DETAILS,
    "invalid_number": CARD_DETAILS,
    "postal_code_invalid": CARD_DETAILS,
    # funds and issuer limits
    "insufficient_funds": FUNDS,
    "card_decline_rate_limit_exceeded": CARD_RATE_LIMIT,
    # authentication, mandates, customer approval
    "authentication_required": AUTH_REQUIRED,
    "payment_intent_authentication_failure": AUTH_REQUIRED,
    "setup_intent_authentication_failure": AUTH_REQUIRED,
    "payment_intent_action_required": AUTH_REQUIRED,
    "invoice_payment_intent_requires_action": AUTH_REQUIRED,
    "payment_intent_payment_attempt_expired": AUTH_REQUIRED,
    "payment_method_customer_decline": AUTH_REQUIRED,
    "billing_invalid_mandate": AUTH_REQUIRED,
    "payment_intent_mandate_invalid": AUTH_REQUIRED,
    # the customer stopped the payment / bank debits that cannot be charged
    "debit_not_authorized": REVOKED,
    "refer_to_customer": REVOKED,
    "account_closed": HARD_DECLINE,
    "bank_account_declined": HARD_DECLINE,
    "bank_account_restricted": HARD_DECLINE,
    "bank_account_unusable": HARD_DECLINE,
    "no_account": HARD_DECLINE,
    # processing
    "processing_error": NETWORK,
    "payment_method_provider_timeout": NETWORK,
    "payment_method_not_available": OUTAGE,
    "idempotency_key_in_use": NETWORK,
    # the merchant's account or integration
    "amount_too_large": MERCHANT_SETUP,
    "amount_too_small": MERCHANT_SETUP,
    "invalid_charge_amount": MERCHANT_SETUP,
    "charge_exceeds_transaction_limit": MERCHANT_SETUP,
    "payment_method_currency_mismatch": MERCHANT_SETUP,
    "payment_method_unactivated": MERCHANT_SETUP,
    "api_key_expired": MERCHANT_SETUP,
    "platform_api_key_expired": MERCHANT_SETUP,
    "secret_key_required": MERCHANT_SETUP,
    "livemode_mismatch": MERCHANT_SETUP,
}

STRIPE_GENERIC_CODES: Mapping[str, Outcome] = {
    "card_declined": SOFT_DECLINE,
    "payment_intent_payment_attempt_failed": SOFT_DECLINE,
    "payment_method_provider_decline": SOFT_DECLINE,
    "setup_attempt_failed": SOFT_DECLINE,
}
