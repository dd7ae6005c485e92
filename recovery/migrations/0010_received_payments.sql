-- Every payment a customer made for a payment of ours, whatever way it reached us (a charge
-- of ours, a checkout paid through a link, a PSP webhook), once per payment. What became of
-- it is its disposition: it recovered its recovery, it paid an ended (cancelled or
-- exhausted) recovery, or it paid twice and is refunded.
CREATE TABLE received_payments (
    id              text PRIMARY KEY,
    merchant_id     text NOT NULL,
    payment_ref     text NOT NULL,
    recovery_id     text REFERENCES recoveries (id),
    identity        text NOT NULL,          -- what makes it one payment (PSP payment id, ...)
    source          text NOT NULL,          -- attempt, simulator_checkout, stripe_webhook, ...
    psp             text NOT NULL,
    psp_payment_id  text,
    amount          bigint,
    currency        text,
    disposition     text NOT NULL CHECK (disposition IN ('recovered', 'paid_after_end', 'duplicate')),
    refund_status   text CHECK (refund_status IN ('pending', 'succeeded', 'failed')),
    refund_id       text,
    refund_error    text,
    received_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    refunded_at     timestamptz,
    UNIQUE (merchant_id, identity)
);
CREATE INDEX received_payments_payment ON received_payments (merchant_id, payment_ref);

-- The payment that settled a recovery (at most one; any other is a duplicate).
ALTER TABLE recoveries ADD COLUMN paid_by text REFERENCES received_payments (id);

-- A hosted checkout lives no longer than its link: closed at the PSP when the link is
-- revoked or its recovery ends.
ALTER TABLE recovery_links ADD COLUMN checkout_closed_at timestamptz;
ALTER TABLE simulator_checkouts ADD COLUMN closed_at timestamptz;

-- The simulator's refunds, once per idempotency key (as a PSP keeps them).
CREATE TABLE simulator_refunds (
    idempotency_key text PRIMARY KEY,
    id              text NOT NULL UNIQUE,
    psp_payment_id  text NOT NULL,
    amount          bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
