-- Merchant webhooks (Standard Webhooks): a merchant's endpoints, the events we tell merchants
-- of, and one row per delivery try.

-- An endpoint's signing secret is sealed at rest like PSP credentials (AES-256-GCM under
-- CREDENTIALS_KEY, recovery/psp/sealing.py, `key_id` names the key): never stored in clear.
-- After a rotation the previous secret keeps signing until `previous_expires_at`.
CREATE TABLE webhook_endpoints (
    id                   text PRIMARY KEY,                 -- we_...
    merchant_id          text NOT NULL REFERENCES merchants (id),
    url                  text NOT NULL,
    description          text,
    events               text[],                           -- NULL: every event type
    secret_key_id        text NOT NULL,
    secret_sealed        bytea NOT NULL,
    previous_key_id      text,
    previous_sealed      bytea,
    previous_expires_at  timestamptz,
    rotated_at           timestamptz,
    created_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    deleted_at           timestamptz,
    CHECK ((previous_sealed IS NULL) = (previous_key_id IS NULL)),
    CHECK ((previous_sealed IS NULL) = (previous_expires_at IS NULL))
);
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id, created_at)
    WHERE deleted_at IS NULL;

-- What happened, as merchants are told: written by the store in the transaction of the state
-- change that caused it, once (`dedupe_key` is derived from what happened, so a retried
-- activity writes nothing new; `id` is derived from it too).
CREATE TABLE merchant_events (
    id           text PRIMARY KEY,                         -- evt_...
    merchant_id  text NOT NULL REFERENCES merchants (id),
    type         text NOT NULL,
    dedupe_key   text NOT NULL,
    payment_ref  text,
    recovery_id  text REFERENCES recoveries (id),
    payload      jsonb NOT NULL,                           -- the envelope's `data`
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (merchant_id, dedupe_key)
);
CREATE INDEX merchant_events_recovery ON merchant_events (recovery_id);
CREATE INDEX merchant_events_age ON merchant_events (created_at);

-- One row per delivery try (a redelivery asked for by people is `manual`).
CREATE TABLE webhook_deliveries (
    id             text PRIMARY KEY,                       -- whd_...
    merchant_id    text NOT NULL,
    endpoint_id    text NOT NULL REFERENCES webhook_endpoints (id),
    event_id       text NOT NULL REFERENCES merchant_events (id) ON DELETE CASCADE,
    attempt        integer NOT NULL,
    manual         boolean NOT NULL DEFAULT false,
    status_code    integer,
    error          text,
    duration_ms    integer,
    attempted_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    next_retry_at  timestamptz
);
CREATE INDEX webhook_deliveries_merchant ON webhook_deliveries
    (merchant_id, attempted_at DESC, id DESC);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries
    (endpoint_id, attempted_at DESC, id DESC);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id, attempted_at DESC, id DESC);
