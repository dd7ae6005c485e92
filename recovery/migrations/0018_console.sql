-- Analytics and the console.

-- Analytics (recovery/store/analytics.py): each figure reads one range of one merchant's
-- rows, bucketed by the date it is about (started_at, ended_at, received_at), from an index
-- that holds what it groups by, so a summary stays fast at 100k recoveries.
CREATE INDEX recoveries_started_analytics ON recoveries (merchant_id, started_at)
    INCLUDE (category);
CREATE INDEX recoveries_ended_analytics ON recoveries (merchant_id, ended_at)
    INCLUDE (status, category, started_at) WHERE ended_at IS NOT NULL;
CREATE INDEX received_payments_after_end ON received_payments (merchant_id, received_at)
    WHERE disposition <> 'recovered';

-- The console's search (payment ref prefix, customer id, customer e-mail), its feed of
-- recent events and the attempts coming up.
CREATE INDEX transactions_ref_prefix ON transactions (merchant_id, payment_ref text_pattern_ops);
CREATE INDEX transactions_customer ON transactions (merchant_id, customer_id)
    WHERE customer_id IS NOT NULL;
CREATE INDEX transactions_customer_email ON transactions (merchant_id, lower(customer_email))
    WHERE customer_email IS NOT NULL;
CREATE INDEX attempts_recent ON attempts (merchant_id, created_at DESC);
CREATE INDEX recoveries_next_attempt ON recoveries (merchant_id, next_attempt_at)
    WHERE ended_at IS NULL AND next_attempt_at IS NOT NULL;
CREATE INDEX audit_log_recent ON audit_log (merchant_id, created_at DESC);

-- Why each attempt happened when it did: the time the workflow had planned and its reason
-- (the recovery's next_attempt_at / next_attempt_reason when the attempt began). Attempts
-- made before this migration have none.
ALTER TABLE attempts ADD COLUMN planned_at timestamptz, ADD COLUMN planned_reason text;

-- Console sessions: an API key exchanged at sign-in for a random session id, kept only as
-- its SHA-256 hash. `merchant_id` is whose data the session shows (an admin key may switch).
-- The CSRF token is per session; `flash_*` is the one message shown on the next page.
CREATE TABLE console_sessions (
    id_hash        bytea PRIMARY KEY,
    key_id         text NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    merchant_id    text NOT NULL REFERENCES merchants (id),
    csrf_token     text NOT NULL,
    flash_kind     text,
    flash_message  text,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_seen_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at     timestamptz NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
CREATE INDEX console_sessions_key ON console_sessions (key_id);
