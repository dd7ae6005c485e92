-- The backbone schema: merchants and keys, payments, recoveries, events, the ingest outbox,
-- attempts, idempotency keys and the simulator PSP's ledger.

CREATE TABLE merchants (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    merchant_id text NOT NULL REFERENCES merchants (id),
    role        text NOT NULL CHECK (role IN ('merchant', 'support', 'admin')),
    key_hash    bytea NOT NULL UNIQUE,
    prefix      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE transactions (
    merchant_id          text NOT NULL REFERENCES merchants (id),
    payment_ref          text NOT NULL,
    psp                  text NOT NULL,
    amount               bigint NOT NULL CHECK (amount > 0),
    currency             text NOT NULL,
    customer_id          text,
    customer_email       text,
    payment_method_type  text,
    payment_method_id    text,
    metadata             jsonb NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, payment_ref)
);

CREATE TABLE recoveries (
    id                   text PRIMARY KEY,
    merchant_id          text NOT NULL,
    payment_ref          text NOT NULL,
    workflow_id          text NOT NULL,
    status               text NOT NULL DEFAULT 'active',
    category             text,
    rule                 text,
    attempt_count        integer NOT NULL DEFAULT 0,
    next_attempt_at      timestamptz,
    next_attempt_reason  text,
    ended_reason         text,
    started_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at             timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (merchant_id, payment_ref) REFERENCES transactions (merchant_id, payment_ref)
);
-- At most one open recovery per payment: later failures join it.
CREATE UNIQUE INDEX recoveries_one_open ON recoveries (merchant_id, payment_ref)
    WHERE ended_at IS NULL;
CREATE INDEX recoveries_by_ref ON recoveries (merchant_id, payment_ref, started_at DESC);
CREATE INDEX recoveries_newest ON recoveries (merchant_id, started_at DESC, id DESC);
CREATE INDEX recoveries_by_status ON recoveries (merchant_id, status, started_at DESC, id DESC);

CREATE TABLE payment_events (
    id           bigserial PRIMARY KEY,
    merchant_id  text NOT NULL,
    event_id     text NOT NULL,
    payment_ref  text NOT NULL,
    recovery_id  text NOT NULL REFERENCES recoveries (id),
    payload      jsonb NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, event_id)
);
CREATE INDEX payment_events_recovery ON payment_events (recovery_id);

CREATE TABLE idempotency_keys (
    merchant_id      text NOT NULL,
    key              text NOT NULL,
    request_hash     text NOT NULL,
    response_status  integer NOT NULL,
    response_body    jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);

CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    workflow_id   text NOT NULL,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    available_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    tries         integer NOT NULL DEFAULT 0,
    last_error    text,
    delivered_at  timestamptz
);
CREATE INDEX outbox_pending ON outbox (available_at, id) WHERE delivered_at IS NULL;

CREATE TABLE attempts (
    id               bigserial PRIMARY KEY,
    recovery_id      text NOT NULL REFERENCES recoveries (id),
    number           integer NOT NULL,
    idempotency_key  text NOT NULL UNIQUE,
    psp              text NOT NULL,
    amount           bigint NOT NULL,
    currency         text NOT NULL,
    status           text NOT NULL,
    psp_payment_id   text,
    failure_code     text,
    failure          jsonb,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at     timestamptz,
    UNIQUE (recovery_id, number)
);

-- The built-in simulator PSP keeps its own ledger, like a real PSP would.
CREATE TABLE simulator_charges (
    idempotency_key    text PRIMARY KEY,
    psp_payment_id     text NOT NULL UNIQUE,
    merchant_id        text NOT NULL,
    payment_ref        text NOT NULL,
    amount             bigint NOT NULL,
    currency           text NOT NULL,
    payment_method_id  text,
    status             text NOT NULL,
    decline_code       text,
    created_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX simulator_charges_payment ON simulator_charges (merchant_id, payment_ref);
