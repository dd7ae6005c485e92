-- Merchant-specific PSP credentials (the environment's are the defaults), PSP webhook events,
-- and outbox rows for any workflow signal, not only failures.
CREATE TABLE merchant_psp_credentials (
    merchant_id  text NOT NULL REFERENCES merchants (id),
    psp          text NOT NULL,
    credentials  jsonb NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, psp)
);

CREATE TABLE webhook_events (
    id            bigserial PRIMARY KEY,
    psp           text NOT NULL,
    event_id      text NOT NULL,
    kind          text NOT NULL,
    psp_type      text NOT NULL,
    merchant_id   text,
    payment_ref   text,
    recovery_id   text,
    psp_payment_id text,
    outcome       text NOT NULL,
    payload       jsonb NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (psp, event_id)
);
CREATE INDEX webhook_events_payment ON webhook_events (merchant_id, payment_ref);

ALTER TABLE outbox ADD COLUMN signal text NOT NULL DEFAULT 'payment_failed';
CREATE INDEX attempts_psp_payment ON attempts (psp_payment_id) WHERE psp_payment_id IS NOT NULL;
