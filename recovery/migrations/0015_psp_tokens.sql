-- What webhooks told us of each saved PSP token (a Razorpay card or mandate token): the
-- customer it belongs to (from the payment that registered it or charged it) and when the
-- PSP confirmed it (Razorpay's `token.confirmed`, whose entity names no customer). Once both
-- are known the customer's open recoveries switch to the token, once (`switched_at`).
-- `account` is as in webhook_events: '' for the environment's accounts, else the merchant's.
CREATE TABLE psp_tokens (
    psp          text NOT NULL,
    account      text NOT NULL,
    token_id     text NOT NULL,
    method       text NOT NULL DEFAULT 'card',
    customer_id  text,
    confirmed_at timestamptz,
    switched_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (psp, account, token_id)
);
